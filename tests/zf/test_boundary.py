"""Decision planes: equal to the analytic answer for a linear classifier, and to direct predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.errors import CnnscopeError
from cnnscope.models import wrap
from cnnscope.zf import decision_plane
from tests.conformance import assert_unchanged
from tests.models import GapLinearNet


def _images(n: int, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_linear_classifier_matches_the_closed_form():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    model = wrap(lin, 8, labels=list("abcd"))
    imgs = _images(3)
    p = decision_plane(model, imgs, resolution=9, batch_size=10)
    x = torch.stack([model.preprocess(i)[0] for i in imgs])
    with torch.no_grad():
        z0, z1, z2 = lin(x)  # logits are affine in the plane coordinates
    a, b = torch.meshgrid(p.betas, p.alphas, indexing="ij")[::-1]
    logits = z0 + a[..., None] * (z1 - z0) + b[..., None] * (z2 - z0)
    assert torch.equal(p.classes, logits.argmax(-1)) and p.classes.device.type == "cpu"
    torch.testing.assert_close(p.confidence, logits.softmax(-1).amax(-1), rtol=1e-4, atol=1e-6)
    assert p.marks == [("0", 0.0, 0.0), ("1", 1.0, 0.0), ("2", 0.0, 1.0)]


def test_images_sit_at_their_marks_and_are_classified_as_the_model_does():
    model = wrap(GapLinearNet().train(), 8, labels=["a", "b", "c"])
    imgs = _images(3)
    p = assert_unchanged(model.module, lambda: decision_plane(model, imgs, resolution=5, span=(0.0, 1.0)))
    assert p is None
    p = decision_plane(model, imgs, resolution=5, span=(0.0, 1.0))
    preds = [model.predict(i, k=1)[0][0][0] for i in imgs]
    assert int(p.classes[0, 0]) == preds[0] and int(p.classes[0, -1]) == preds[1] and int(p.classes[-1, 0]) == preds[2]


def test_one_image_with_random_or_given_directions():
    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    img = _images(1)
    p1 = decision_plane(model, img, resolution=5, seed=3)
    p2 = decision_plane(model, img, resolution=5, seed=3)
    assert torch.equal(p1.classes, p2.classes) and p1.mode == "directions"
    mid = 2  # alpha = beta = 0 is the image itself
    assert int(p1.classes[mid, mid]) == model.predict(img[0], k=1)[0][0][0]
    d = [torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)]
    flat = decision_plane(model, img, directions=d, resolution=3)
    assert len(set(flat.classes.flatten().tolist())) == 1  # zero directions: the whole plane is the image


def test_bad_inputs():
    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    with pytest.raises(CnnscopeError, match="three images"):
        decision_plane(model, _images(2))
    with pytest.raises(CnnscopeError, match="two directions"):
        decision_plane(model, _images(1), directions=[torch.zeros(3, 4, 4)] * 2)
    with pytest.raises(CnnscopeError, match="empty"):
        decision_plane(model, [])
    with pytest.raises(TypeError):
        decision_plane(model, _images(3), None)  # options are keyword-only


def test_a_plain_module_and_its_wrapper_give_the_same_plane():
    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    x = model.batch(_images(3))
    a = decision_plane(model, x, resolution=5, batch_size=7)
    b = decision_plane(model.module, x, resolution=5)
    assert torch.equal(a.classes, b.classes)
    torch.testing.assert_close(a.confidence, b.confidence)
