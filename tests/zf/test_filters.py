"""Filters, kernels, feature maps and the frequency diagnosis: closed forms and direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from cnnscope.errors import LayerError
from cnnscope.models import wrap
from cnnscope.zf import conv_layers, conv_weights, feature_maps, filter_images, filter_spectrum
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet


def _bank() -> torch.Tensor:
    """4x4 filters whose 4-point spectra are known exactly: DC, the corner frequency, half Nyquist, nothing."""
    k = 4
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    const = torch.ones(k, k)
    checker = (-1.0) ** (i + j)  # (0.5, 0.5) cycles/px: radius sqrt(2) x Nyquist
    cosine = torch.cos(np.pi * 0.5 * j)  # 0.25 cycles/px along columns: radius 0.5 x Nyquist
    return torch.stack([const, checker, cosine, torch.zeros(k, k)]).unsqueeze(1).repeat(1, 3, 1, 1)


def test_spectrum_of_known_filters():
    spec = filter_spectrum(_bank(), size=4)
    expected = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float64)  # low / high / mid
    torch.testing.assert_close(spec.bands[:3], expected, atol=1e-12, rtol=0)
    assert spec.dead == [3]
    torch.testing.assert_close(spec.profile[:3].sum(1), torch.ones(3, dtype=torch.float64))
    power = spec.power[2]  # the cosine: two peaks at +-0.25 cycles/px on the centre row (fftshifted, centre 2)
    assert {tuple(p) for p in torch.nonzero(power > 1e-9).tolist()} == {(2, 1), (2, 3)}


def test_zero_padded_power_obeys_parseval_and_a_box_stays_low_frequency():
    w = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = filter_spectrum(w, size=32)
    # Parseval: the N x N DFT's power sums to N^2 times the filter's energy (summed over input channels)
    torch.testing.assert_close(spec.power.flatten(1).sum(1), 32 * 32 * w.flatten(1).square().sum(1))
    box = filter_spectrum(_bank()[:1], size=32).bands[0]
    assert int(box.argmax()) == 0  # a box filter's sinc spectrum holds most energy at low frequencies


def test_weights_pictures_and_maps_come_from_the_model():
    net = InplaceReLUNet().train()
    assert conv_layers(net) == ["features.0", "features.4"]
    w = assert_unchanged(net, lambda: conv_weights(net))
    assert w is None
    assert torch.equal(conv_weights(net), net.features[0].weight.detach())
    assert torch.equal(conv_weights(net, "features.4"), net.features[4].weight.detach())
    tiles = filter_images(conv_weights(net))
    assert tiles.shape == (8, 3, 3, 3) and tiles.dtype == np.uint8
    assert (tiles.reshape(8, -1).min(1) == 0).all() and (tiles.reshape(8, -1).max(1) == 255).all()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    maps = feature_maps(net, x, "features.3", batch_size=2)
    assert net.training
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(maps, net.features[:4](x))
        torch.testing.assert_close(feature_maps(wrap(net, 12), x, "features.2", pre_activation=True),
                                   net.features[:2](x))  # the ReLU's input: the batch-norm output
    net.train()
    assert assert_unchanged(net, lambda: feature_maps(net, x, "features.3")) is None
    with pytest.raises(TypeError):
        filter_spectrum(conv_weights(net), 16)  # options are keyword-only


def test_alexnet_first_layer_filters_are_rgb_11x11():
    torch.manual_seed(0)
    net = torchvision.models.alexnet()
    tiles = filter_images(conv_weights(net), per_filter=False)
    assert tiles.shape == (64, 11, 11, 3)
    spec = filter_spectrum(conv_weights(wrap(net, 224)))
    torch.testing.assert_close(spec.bands.sum(1), torch.ones(64, dtype=torch.float64))


def test_bad_layers():
    net = InplaceReLUNet()
    with pytest.raises(LayerError, match="convolution layer"):
        conv_weights(net, "features.1")
    with pytest.raises(LayerError, match="did you mean"):
        conv_weights(net, "features.44")
    with pytest.raises(LayerError, match="kernel heatmaps"):
        filter_images(conv_weights(net, "features.4"))
    err = assert_unchanged(net, lambda: feature_maps(net, torch.zeros(1, 3, 8, 8), "fc"))
    assert isinstance(err, LayerError) and "no spatial output" in str(err)
