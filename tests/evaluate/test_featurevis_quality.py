"""Feature-visualization quality: closed forms on a model whose unit is an input channel, and a real render."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.errors import CnnscopeError
from cnnscope.evaluate import featurevis_quality
from cnnscope.featurevis import channel, neuron, render
from cnnscope.models import wrap


class RedNet(nn.Module):
    """``features`` is a 1x1 convolution copying the input's channels: channel 0 is the red channel."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def red():
    return wrap(RedNet(), input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _flat(value: float, n: int = 1, size: int = 32) -> torch.Tensor:
    x = torch.full((n, 3, size, size), 0.5)
    x[:, 0] = value
    return x


def test_ratio_z_and_kept_closed_form(red):
    dataset = torch.cat([_flat(v) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    res = featurevis_quality(red, _flat(0.5), dataset=dataset, objective=channel("features", 0))
    std = np.std([0.1, 0.2, 0.3, 0.4, 0.5], ddof=1)
    np.testing.assert_allclose(res.activation, [0.5], atol=1e-6)
    np.testing.assert_allclose(res.ratio, [1.0], atol=1e-6)
    np.testing.assert_allclose(res.z, [(0.5 - 0.3) / std], atol=1e-5)
    np.testing.assert_allclose(res.kept, [1.0], atol=1e-6)  # the fill colour (grey 0.5) is the image itself
    np.testing.assert_allclose(res.high_freq, [0.0], atol=1e-12)
    assert res.rows()[0]["objective"].startswith("channel")


def test_high_frequency_and_fragile_render(red):
    i = torch.arange(32)
    board = 1.0 - ((i.view(-1, 1) + i.view(1, -1)) % 2).float()  # Nyquist checkerboard, white at (16, 16)
    x = torch.full((1, 3, 32, 32), 0.5)
    x[0, 0] = board
    ds = np.linspace(0.0, 1.0, 10)
    res = featurevis_quality(red, x, objective=neuron("features", 0, (16, 16)), dataset_activations=ds,
                             n_transforms=16)
    assert float(res.activation[0]) == pytest.approx(1.0)
    assert float(res.high_freq[0]) > 0.9
    assert float(res.kept[0]) < 0.8  # shifts by one pixel turn the neuron's pixel black
    assert float(res.ratio[0]) == pytest.approx(1.0) and float(res.dataset_max[0]) == pytest.approx(1.0)


def test_render_result_objectives_are_read_from_its_spec(red):
    objs = [channel("features", 0), channel("features", 1)]
    rr = render(red, objs, recipe="plain", steps=3, size=32, seed=0)
    dataset = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = featurevis_quality(red, rr, dataset=dataset)
    # render() measures the float image, we measure the saved uint8 image: half a grey level apart at most
    np.testing.assert_allclose(res.activation, rr.activations, atol=0.5 / 255)
    means = dataset.mean(dim=(2, 3))
    np.testing.assert_allclose(res.dataset_mean, means[:, :2].mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(res.dataset_max, means[:, :2].max(0).values.numpy(), atol=1e-6)


def test_featurevis_quality_errors(red):
    with pytest.raises(CnnscopeError, match="objective"):
        featurevis_quality(red, _flat(0.5), dataset=_flat(0.2, 3))
    with pytest.raises(CnnscopeError, match="dataset"):
        featurevis_quality(red, _flat(0.5), objective=channel("features", 0))
    with pytest.raises(CnnscopeError, match="2 images"):
        featurevis_quality(red, _flat(0.5), dataset=_flat(0.2, 1), objective=channel("features", 0))
