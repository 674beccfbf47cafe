"""Top-9 projections on a trained digits CNN: the right activations, each projected alone, cropped to its field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.capture import capture
from cnnscope.errors import CnnscopeError, ImageError
from cnnscope.models import AssumptionWarning
from cnnscope.zf import DeconvError, project, top_projections
from tests.conformance import assert_unchanged
from tests.models import ResidualNet


def test_top_entries_are_the_strongest_activations_over_the_set(digits_run, digits_test_images):
    model = digits_run.model
    layer, chans = "features.3", [0, 2, 5]
    tp = top_projections(model, digits_test_images, layer, channels=chans, k=9, batch_size=32)
    assert tp.channels == chans and len(tp.names) == len(digits_test_images)
    assert tp.images.shape == (len(digits_test_images), 32, 32, 3) and tp.images.dtype == np.uint8
    # independent reference: every image's activation map from a plain capture of the model
    x = model.batch(list(digits_test_images.values()))
    with torch.no_grad():
        acts = capture(model.module, x, layer)[layer]
    for c in chans:
        per_image = acts[:, c].flatten(1).amax(1)
        expected = per_image.topk(9).values
        got = torch.tensor([e.activation for e in tp.entries[c]])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert len({e.image_index for e in tp.entries[c]}) == 9  # one activation per image
        for e in tp.entries[c]:
            r, col = e.position
            assert float(acts[e.image_index, c, r, col]) == pytest.approx(e.activation, rel=1e-5, abs=1e-6)


def test_each_entry_is_the_single_activation_projection_cropped_to_its_field(digits_run, digits_test_images):
    model = digits_run.model
    tp = top_projections(model, digits_test_images, "features.6", channels="1,4", k=3)
    images = list(digits_test_images.values())
    for c in (1, 4):
        for e in tp.entries[c]:
            p = project(model.module, model.batch(images[e.image_index]), "features.6", channel=c, position=e.position)
            assert p.boxes == [e.box]
            t, left, b, r = e.box
            torch.testing.assert_close(e.values, p.values[0, :, t:b, left:r])
            assert float(p.values.abs().sum()) == pytest.approx(float(e.values.abs().sum()), rel=1e-5)
            assert tp.crop(e).shape == (b - t, r - left, 3)
            assert tp.projection_image(e).dtype == np.uint8


def test_batch_size_does_not_change_the_result(digits_run, digits_test_images):
    model = digits_run.model
    a = top_projections(model, digits_test_images, "features.3", channels=[3], k=4, batch_size=7)
    b = top_projections(model, digits_test_images, "features.3", channels=3, k=4, batch_size=200)
    assert [e.image_index for e in a.entries[3]] == [e.image_index for e in b.entries[3]]
    for ea, eb in zip(a.entries[3], b.entries[3]):
        torch.testing.assert_close(ea.values, eb.values, rtol=1e-4, atol=1e-6)


def test_a_stacked_array_is_an_image_set(digits_run, digits_test_images):
    model = digits_run.model
    stacked = np.stack(list(digits_test_images.values())[:20])
    a = top_projections(model, stacked, "features.3", channels=[2], k=3)
    b = top_projections(model, dict(list(digits_test_images.items())[:20]), "features.3", channels=[2], k=3)
    assert a.names[:2] == ["0", "1"] and len(a.names) == 20
    assert [e.image_index for e in a.entries[2]] == [e.image_index for e in b.entries[2]]
    x = model.batch(stacked)  # model-space tensors are an image set too, and give the same search
    with pytest.warns(AssumptionWarning):  # only the pictures of a plain module depend on assumptions
        c = top_projections(model.module, x, "features.3", channels=[2], k=3)
    assert [e.image_index for e in c.entries[2]] == [e.image_index for e in a.entries[2]]
    for ea, ec in zip(a.entries[2], c.entries[2]):
        torch.testing.assert_close(ea.values, ec.values)


def test_bad_inputs(digits_run, digits_test_images):
    model = digits_run.model
    err = assert_unchanged(model.module, lambda: top_projections(model, {}, "features.3"))
    assert isinstance(err, ImageError) and "empty" in str(err)
    with pytest.raises(CnnscopeError, match="outside 0-15"):
        top_projections(model, digits_test_images, "features.3", channels=[99])
    with pytest.raises(TypeError):
        top_projections(model, digits_test_images, "features.3", [0])  # options are keyword-only
    from cnnscope.models import wrap

    res = wrap(ResidualNet(), 16, labels=None)
    with pytest.raises(DeconvError, match="BasicBlock"):  # the default, "auto", falls back to guided backprop
        top_projections(res, [np.zeros((16, 16, 3), np.uint8)], "layer2.conv1", method="deconvnet")
    assert assert_unchanged(model.module, lambda: top_projections(model, digits_test_images, "features.3",
                                                                  channels=[0], k=2)) is None
