"""Correspondence analysis (paper Sec. 5): the sign-change Hamming consistency and its random baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, ImageError
from cnnscope.models import AssumptionWarning, wrap
from cnnscope.zf import correspondence, sign_consistency
from cnnscope.zf.correspondence import mask, pair_distances
from tests.conformance import assert_unchanged
from tests.models import GapLinearNet


def test_hamming_consistency_closed_form():
    eps = torch.tensor([[1.0, -2.0, 3.0, 0.0], [1.0, 2.0, 3.0, 0.0], [-1.0, 2.0, -3.0, 5.0]])
    # sign rows: (+,-,+,0) (+,+,+,0) (-,+,-,+): pairs differ in 1/4, 4/4, 3/4 of the entries
    torch.testing.assert_close(pair_distances(eps), torch.tensor([0.25, 1.0, 0.75]))
    d = sign_consistency(eps)
    assert d.mean == pytest.approx(2 / 3) and d.pairs == 3
    assert d.std == pytest.approx(float(np.std([0.25, 1.0, 0.75])))
    assert d.total == pytest.approx(2 * 2.0)  # the paper's sum over ordered pairs i != j
    assert sign_consistency(eps, eps).total == pytest.approx(4.0)  # pooled sets: the sum is per set


def test_same_mask_on_same_image_is_perfectly_consistent_and_random_masks_are_not(lite0, samples, one_thread):
    img = samples["chelsea"]
    box = (60, 120, 140, 230)  # chelsea's left eye, in the photo's own pixels
    r = correspondence(lite0, [img, img, img], [box] * 3, n_random=2, seed=0)
    assert r.layers == ["bn2.act", "global_pool.flatten"]  # the paper's "layer 5" and "layer 7"
    for n in r.layers:
        assert r.part[n].mean == 0.0 and r.part[n].total == 0.0
        assert r.random[n].mean > 0.05  # masks in different places change the features differently
    assert len(r.random_boxes) == 2 and all(len(rep) == 3 for rep in r.random_boxes)
    for rep in r.random_boxes:
        for t, left, b, rr in rep:
            assert (b - t, rr - left) == (80, 110) and 0 <= t and b <= img.shape[0] and rr <= img.shape[1]
    again = correspondence(lite0, [img, img, img], [box] * 3, n_random=2, seed=0)
    assert again.random_boxes == r.random_boxes  # seeded


def test_mask_paints_only_the_box():
    img = np.zeros((5, 6, 3), np.uint8)
    out = mask(img, (1, 2, 3, 5))
    assert (out[1:3, 2:5] == 128).all() and out.sum() == 128 * 2 * 3 * 3 and img.sum() == 0


def test_bad_boxes_and_image_sets():
    model = wrap(GapLinearNet().train(), 16, labels=["a", "b", "c"])
    img = np.zeros((20, 30, 3), np.uint8)
    err = assert_unchanged(model.module, lambda: correspondence(model, [img, img], [(0, 0, 5, 5), (15, 25, 25, 31)],
                                                                layers=["features.1"]))
    assert isinstance(err, CnnscopeError) and "outside the 20x30 image" in str(err)
    with pytest.raises(CnnscopeError, match="empty"):
        correspondence(model, [img, img], [(0, 0, 5, 5), (5, 5, 5, 9)], layers=["features.1"])
    with pytest.raises(CnnscopeError, match="one box per image"):
        correspondence(model, [img, img], [(0, 0, 5, 5)], layers=["features.1"])
    with pytest.raises(ImageError, match="at least two"):
        correspondence(model, [img], [(0, 0, 5, 5)], layers=["features.1"])
    with pytest.raises(ImageError, match="empty"):
        correspondence(model, [], [], layers=["features.1"])
    ok = assert_unchanged(model.module, lambda: correspondence(model, [img, img], [(0, 0, 5, 5)] * 2,
                                                               layers=["features.1", "features.3"], n_random=1))
    assert ok is None
    with pytest.raises(TypeError):
        correspondence(model, [img, img], [(0, 0, 5, 5)] * 2, ["features.1"])  # options are keyword-only


def test_tensors_are_masked_with_the_same_grey_in_model_space():
    model = wrap(GapLinearNet(), 16, labels=["a", "b", "c"])
    imgs = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(3)]
    boxes = [(0, 0, 6, 6), (4, 4, 10, 12), (8, 2, 16, 9)]
    # fill 0.6 is exactly 153 in uint8 pictures, so both paths paint the same grey
    a = correspondence(model, imgs, boxes, layers=["features.1"], n_random=2, seed=1, fill=0.6)
    with pytest.warns(AssumptionWarning):  # the grey in model space needs the (assumed) normalisation
        b = correspondence(model.module, model.batch(imgs), boxes, layers=["features.1"], n_random=2, seed=1,
                           fill=0.6)
    assert a.random_boxes == b.random_boxes
    assert a.part["features.1"].mean == pytest.approx(b.part["features.1"].mean, abs=1e-6)
    assert a.random["features.1"].total == pytest.approx(b.random["features.1"].total, abs=1e-6)
