"""A picture is fitted to the input once: on a center-crop model, ``explain`` and the NMF factorisation see exactly
what ``LoadedModel.batch`` makes of the original picture (fitting the fitted picture again would crop the crop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope import wrap
from cnnscope.attribution import explain
from cnnscope.capture import Capture
from cnnscope.dataset.factorize import factorize_image
from tests.models import InplaceReLUNet


def _model():
    return wrap(InplaceReLUNet(), input_size=32, resize_mode="center_crop")


def _picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_fitted_batch_is_batch_of_the_original():
    m = _model()
    pic = _picture()
    assert torch.equal(m.fitted_batch([m.fit_image(pic)]), m.batch(pic))
    assert not torch.equal(m.batch(m.fit_image(pic)), m.batch(pic))  # the defect this guards against


def test_explain_sees_the_picture_fitted_once():
    m = _model()
    pic = _picture()
    (res,) = explain(m, pic, methods=["saliency"], target=0)
    assert np.array_equal(res.image, m.fit_image(pic))
    x = m.batch(pic).requires_grad_(True)
    with torch.no_grad():
        p0 = float(m.module.eval()(x).softmax(1)[0, 0])
    assert res.target_probability == pytest.approx(p0, rel=1e-5)
    m.module(x)[0, 0].backward()
    np.testing.assert_allclose(res.results["saliency"].values[0].numpy(), x.grad[0].numpy(), rtol=1e-4, atol=1e-7)


def test_factorize_reads_the_picture_fitted_once():
    m = _model()
    pic = _picture()
    f = factorize_image(m, pic, "features.5", k=2)
    assert np.array_equal(f.image, m.fit_image(pic))
    with torch.no_grad(), Capture(m.module, "features.5") as cap:
        cap.run(m.batch(pic))
    v = cap["features.5"][0].flatten(1).T.double()  # [h*w, C], non-negative (a ReLU)
    wh = f.spatial.reshape(2, -1).T.double() @ f.loadings.double()
    assert float((v - wh).norm() / v.norm()) == pytest.approx(f.relative_error, abs=1e-4)
