"""Spatial attribution: the per-position maps are weight x activation in the kernel window (an independent
computation), sum to the pre-activation minus the bias, and the mosaic blends the renders by |attribution|."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.dataset.spatial_attribution import spatial_attribution
from cnnscope.errors import LayerError
from cnnscope.models import wrap
from tests.conformance import assert_unchanged


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 3, padding=1))


@pytest.mark.parametrize("position", [(3, 4), (0, 0), (7, 5)])
def test_maps_are_weight_times_activation_and_sum_to_the_pre_activation(position):
    net = _net()
    m = wrap(net, input_size=8, mean=[0.0] * 3, std=[1.0] * 3)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    sa = spatial_attribution(m, x, "2", channel=1, position=position, k=3, visualize=False)
    with torch.no_grad():
        h = F.pad(torch.relu(net[0](x))[0], (1, 1, 1, 1))  # zero padding: outside the grid contributes nothing
        pre = net[2](torch.relu(net[0](x)))[0, 1]
    r, c = position
    window = h[:, r:r + 3, c:c + 3]  # padded coordinates: rows r-1..r+1 of the grid
    full = net[2].weight[1].detach() * window  # [5, 3, 3]
    order = torch.argsort(-full.sum(dim=(1, 2)).abs())[:3].tolist()
    assert sa.channels == order
    torch.testing.assert_close(sa.maps, full[order])
    torch.testing.assert_close(sa.total, full.sum(0))
    assert float(sa.total.sum()) == pytest.approx(float(pre[r, c]) - float(net[2].bias[1].detach()), rel=1e-5,
                                                  abs=1e-5)
    assert sa.attribution.position == position and sa.renders is None
    d = sa.to_dict()
    assert [i["input_channel"] for i in d["inputs"]] == order and len(d["inputs"][0]["map"]) == 3


def test_mosaic_blends_each_channels_render_by_its_normalised_attribution():
    net = _net()
    m = wrap(net, input_size=16, mean=[0.0] * 3, std=[1.0] * 3)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    found = []
    assert assert_unchanged(net, lambda: found.append(spatial_attribution(m, x, "2", channel=0, position="center",
                                                                          k=2, steps=2, size=16))) is None
    sa = found[0]
    assert sa.from_layer == "1" and sa.renders.shape == (2, 16, 16, 3)
    tile = 16
    pic = sa.mosaic(tile=tile, gap=4)
    assert pic.shape == (3 * tile, 2 * 3 * tile + 4, 3) and pic.dtype == np.uint8
    alpha = sa.alpha().numpy()
    assert alpha.max() == pytest.approx(1.0)
    for i in range(2):
        for r in range(3):
            for c in range(3):
                got = pic[r * tile:(r + 1) * tile, i * (3 * tile + 4) + c * tile:i * (3 * tile + 4) + (c + 1) * tile]
                want = alpha[i, r, c] * sa.renders[i].astype(float) + (1 - alpha[i, r, c]) * 255
                assert np.abs(got.astype(float) - want).max() <= 1.0  # the render is already tile-sized
    with pytest.raises(LayerError, match="does not output the input"):
        spatial_attribution(m, x, "2", channel=0, from_layer="0", steps=1, size=16)


@pytest.mark.slow
def test_circuit_spatial_writes_figure_and_numbers(tmp_path):
    import json

    from cnnscope.cli import main

    layer = "blocks.2.1.bn2.act"  # the depthwise 5x5 convolution: a spatial window
    rc = main(["circuit", "efficientnet_lite0", layer, "-c", "5", "--image", "sample:chelsea", "--spatial",
               "--spatial-k", "2", "--steps", "2", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / f"{layer}_c0005.json").read_text())
    sp = data["spatial"]
    assert sp["conv"] == "blocks.2.1.conv_dw" and sp["from_layer"] is not None
    assert [i["input_channel"] for i in sp["inputs"]] == [5]  # depthwise: the unit's own channel only
    assert len(sp["total"]) == 5 and len(sp["total"][0]) == 5
    assert sum(map(sum, sp["total"])) == pytest.approx(sp["value"] - sp["bias"], rel=1e-3, abs=1e-3)
    assert sp["position"] == data["attribution"]["position"]
    assert (tmp_path / f"{layer}_c0005_spatial.png").stat().st_size > 1000
    assert main(["circuit", "efficientnet_lite0", layer, "-c", "5", "--spatial", "--out", str(tmp_path / "e")]) == 1
