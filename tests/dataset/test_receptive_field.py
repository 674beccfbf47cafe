"""Receptive-field boxes: the perturbation test, a closed form for conv chains, fast == exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.capture import Capture, evaluating
from cnnscope.capture.receptive_field import ReceptiveField, receptive_fields
from cnnscope.errors import LayerError, MethodError
from tests.conformance import assert_unchanged
from tests.models import ALL_TINY, NON_SQUARE

SIZE = NON_SQUARE[2:]
LAYERS = {"inplace_relu": ["features.0", "features.3", "features.4"], "residual": ["stem", "layer1.conv2", "layer2"],
          "relu6": ["conv1", "act2", "pw"], "gap_linear": ["features.0", "features.2"]}


def _values(module: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    with torch.no_grad(), evaluating(module), Capture(module, layer) as cap:
        cap.run(x)
    return cap[layer]


@pytest.mark.parametrize("name", sorted(ALL_TINY))
def test_perturbations_outside_the_box_do_nothing_inside_they_matter(name):
    """All probes of a layer run as one batch: item 0 is the image, then one image per position with noise everywhere
    outside that position's box, then one per position, box corner and sign with that corner pixel poked."""
    module = ALL_TINY[name]()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((1, 3) + SIZE, generator=gen)
    rfs = receptive_fields(module, LAYERS[name], SIZE, method="exact", cache=False)
    for layer, rf in rfs.items():
        h, w = rf.output_size
        positions = [(0, 0), (h // 2, w // 2), (h - 1, w - 1), (1, w - 2)]
        batch, pokes = [x[0]], []
        for y, xx in positions:
            top, left, bottom, right = rf.box(y, xx)
            outside = torch.ones(SIZE, dtype=torch.bool)
            outside[top:bottom, left:right] = False
            batch.append(torch.where(outside, x[0] + 5 * torch.randn(x.shape[1:], generator=gen), x[0]))
        for y, xx in positions:
            top, left, bottom, right = rf.box(y, xx)
            for cy, cx in [(top, left), (top, right - 1), (bottom - 1, left), (bottom - 1, right - 1)]:
                for delta in (50.0, -50.0):
                    poked = x[0].clone()
                    poked[:, cy, cx] += delta
                    batch.append(poked)
                pokes.append((y, xx, cy, cx))
        out = _values(module, torch.stack(batch), layer)
        base = out[0]
        for i, (y, xx) in enumerate(positions):
            torch.testing.assert_close(out[1 + i, :, y, xx], base[:, y, xx], atol=1e-5, rtol=1e-5)
        for j, (y, xx, cy, cx) in enumerate(pokes):
            k = 1 + len(positions) + 2 * j
            change = max((out[k + s, :, y, xx] - base[:, y, xx]).abs().max().item() for s in (0, 1))
            assert change > 1e-3, f"{layer} ({y},{xx}): corner ({cy},{cx}) of its box does not matter"


def _chain(specs: list[tuple[int, int, int]]) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for k, s, p in specs:
        layers += [nn.Conv2d(c, 4, k, stride=s, padding=p), nn.ReLU()]
        c = 4
    return nn.Sequential(*layers)


@pytest.mark.parametrize("specs", [[(3, 1, 1), (3, 2, 1), (3, 1, 1)], [(5, 2, 2), (3, 2, 0), (1, 1, 0)],
                                   [(7, 2, 3), (3, 2, 1)]])
def test_conv_chain_matches_the_closed_form(specs):
    """Box of output i: start = i * J - P, size r (J = product of strides, r = 1 + sum (k-1) * jump), clipped."""
    torch.manual_seed(0)
    module = _chain(specs)
    h, w = 40, 33
    rf = receptive_fields(module, [str(2 * len(specs) - 1)], (h, w), method="exact", cache=False)
    rf = next(iter(rf.values()))
    jump, size, pad = 1, 1, 0
    for k, s, p in specs:
        size += (k - 1) * jump
        pad += p * jump
        jump *= s
    oh, ow = rf.output_size
    for i in range(oh):
        for j in range(ow):
            t, left = i * jump - pad, j * jump - pad
            want = (max(t, 0), max(left, 0), min(t + size, h), min(left + size, w))
            assert rf.box(i, j) == want
    assert rf.size == (min(size, h), min(size, w))


@pytest.mark.parametrize("name", sorted(ALL_TINY))
def test_fast_method_equals_exact(name):
    module = ALL_TINY[name]()
    exact = receptive_fields(module, LAYERS[name], SIZE, method="exact", cache=False)
    fast = receptive_fields(module, LAYERS[name], SIZE, method="fast", slab=8, cache=False)
    for layer in LAYERS[name]:
        assert fast[layer].method == "fast"
        np.testing.assert_array_equal(fast[layer].boxes, exact[layer].boxes)


def test_fast_method_falls_back_when_width_matters():
    class WidthRoll(nn.Module):
        """Shifts rows by an amount that depends on the image width: slab probes see another shift."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.roll(x, shifts=x.shape[3] // 5, dims=2)

    module = nn.Sequential(nn.Conv2d(3, 2, 1), WidthRoll())
    exact = receptive_fields(module, ["1"], (12, 40), method="exact", cache=False)["1"]
    fast = receptive_fields(module, ["1"], (12, 40), method="fast", slab=8, cache=False)["1"]
    assert fast.method == "exact"
    np.testing.assert_array_equal(fast.boxes, exact.boxes)
    assert exact.box(8, 3) == (0, 3, 1, 4)


def test_pretrained_model_fast_equals_exact(lite0):
    layers = ["blocks.1.0.bn1.act", "blocks.2.0.conv_dw"]
    exact = receptive_fields(lite0.module, layers, 48, method="exact", cache=False)
    fast = receptive_fields(lite0.module, layers, 48, method="fast", cache=False)
    for layer in layers:
        assert fast[layer].method == "fast"
        np.testing.assert_array_equal(fast[layer].boxes, exact[layer].boxes)
    assert exact["blocks.1.0.bn1.act"].output_size == (24, 24)


def test_errors_and_model_unchanged():
    module = ALL_TINY["inplace_relu"]()
    assert assert_unchanged(module, lambda: receptive_fields(module, ["features.2"], SIZE, cache=False)) is None
    err = assert_unchanged(module, lambda: receptive_fields(module, ["fc"], SIZE, cache=False))
    assert isinstance(err, LayerError) and "[B, C, H, W]" in str(err)
    err = assert_unchanged(module, lambda: receptive_fields(module, ["feature.2"], SIZE))
    assert isinstance(err, LayerError) and "features.2" in str(err)
    with pytest.raises(MethodError, match="exact"):
        receptive_fields(module, ["features.2"], SIZE, method="exactly")


def test_round_trip_and_cache():
    module = ALL_TINY["relu6"]()
    a = receptive_fields(module, ["act2"], SIZE)["act2"]
    assert receptive_fields(module, ["act2"], SIZE)["act2"] is a
    back = ReceptiveField.from_dict(a.to_dict())
    np.testing.assert_array_equal(back.boxes, a.boxes)
    assert back.output_size == a.output_size and back.method == a.method
    with pytest.raises(LayerError, match="outside"):
        a.box(100, 0)
