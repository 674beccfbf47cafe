"""Display helpers: heatmap normalisation, upsampling, colour overlays (numpy and torch)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from cnnscope.attribution import Attribution, colorize, overlay, to_heatmap, upsample
from cnnscope.errors import CnnscopeError


def test_heatmap_absolute_max_is_simonyans_channel_max():
    v = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    hm = to_heatmap(v, sign="absolute", reduce="max", outlier_perc=0.0)
    want = v.abs().amax(1)
    torch.testing.assert_close(hm, want / want.flatten(1).amax(1).view(2, 1, 1))
    assert float(hm.max()) == pytest.approx(1.0)


def test_heatmap_signs_ranges_and_outlier_clipping():
    v = torch.zeros(1, 1, 10, 10)
    v[0, 0, 0, 0] = 100.0  # one outlier
    v[0, 0, 5] = torch.linspace(-1, 1, 10)
    pos = to_heatmap(v, sign="positive", outlier_perc=1.0)  # the top 1% (one pixel) is clipped to 1
    assert float(pos[0, 0, 0]) == 1.0 and 0 < float(pos[0, 5, 9]) <= 1 and float(pos[0, 5, 0]) == 0
    signed = to_heatmap(v, sign="all", outlier_perc=0.0)
    assert float(signed.min()) == pytest.approx(-0.01) and float(signed.max()) == 1.0
    neg = to_heatmap(-v, sign="negative", outlier_perc=0.0)
    torch.testing.assert_close(neg, to_heatmap(v, sign="positive", outlier_perc=0.0))
    assert to_heatmap(torch.zeros(1, 3, 4, 4)).abs().sum() == 0  # an all-zero map stays zero


def test_heatmap_numpy_in_numpy_out_with_upsampling():
    v = np.random.default_rng(0).normal(size=(2, 1, 7, 7)).astype(np.float32)
    hm = to_heatmap(v, sign="positive", reduce="sum", size=(224, 224))
    assert isinstance(hm, np.ndarray) and hm.shape == (2, 224, 224)
    assert hm.min() >= 0 and hm.max() <= 1
    with pytest.raises(CnnscopeError, match="sign"):
        to_heatmap(v, sign="up")


def test_upsample_keeps_rank_and_type():
    assert upsample(np.ones((7, 7), np.float32), (14, 21)).shape == (14, 21)
    assert upsample(torch.ones(2, 7, 7), (14, 14)).shape == (2, 14, 14)
    m = upsample(torch.arange(4.0).view(1, 1, 2, 2), (4, 4))
    assert m.shape == (1, 1, 4, 4) and float(m[0, 0, 0, 0]) == 0.0 and float(m[0, 0, 3, 3]) == 3.0


def test_overlay_blends_the_colormap():
    img = np.full((20, 30, 3), 200, np.uint8)
    hm = np.linspace(0, 1, 5 * 6).reshape(5, 6)
    assert np.array_equal(overlay(img, hm, alpha=0.0), img)
    full = overlay(img, np.ones((20, 30)), cmap="viridis", alpha=1.0)
    want = np.round(np.array(matplotlib.colormaps["viridis"](1.0)[:3]) * 255)
    assert np.array_equal(full[0, 0], want.astype(np.uint8))
    half = overlay(img, hm, alpha=0.5)
    assert half.shape == (20, 30, 3) and half.dtype == np.uint8
    assert colorize(np.zeros((2, 2)), "jet")[0, 0].tolist() == [0, 0, 128]
    with pytest.raises(CnnscopeError, match="uint8"):
        overlay(np.zeros((4, 4)), hm)


def test_attribution_heatmap_uses_method_display_defaults():
    cam = Attribution(values=torch.rand(1, 1, 7, 7) - 0.5, method="gradcam", layer="bn2", target=[0],
                      spec={"kind": "layer", "input_shape": [1, 3, 224, 224], "display": {"sign": "positive",
                                                                                        "reduce": "sum"}})
    hm = cam.heatmap()
    assert hm.shape == (1, 224, 224) and float(hm.min()) >= 0
    assert cam.kind == "layer" and cam.input_size == (224, 224)
    assert cam.select(0).values.shape == (1, 1, 7, 7)
