"""Family flow: on a two-layer net the edges equal the kernel sums and the activation x weight sums (closed form)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.errors import CnnscopeError, ImageError
from cnnscope.models import wrap
from cnnscope.stimuli import find_family, tuning_map
from cnnscope.stimuli.flow import family_flow
from tests.conformance import assert_unchanged


def _model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU())
    return net, wrap(net, input_size=8, mean=[0.0] * 3, std=[1.0] * 3)


def test_weight_edges_are_kernel_sums():
    net, m = _model()
    flow = family_flow(m, ("1", [0, 2, 3]), ("3", [1, 2]))  # the target read before its ReLU
    w = net[2].weight.detach().double()
    want = torch.stack([w[t, [0, 2, 3]].sum(dim=(1, 2)) for t in (1, 2)], dim=1)
    torch.testing.assert_close(flow.edges, want)
    assert flow.mode == "weights" and flow.images == 0 and flow.position == (4, 4)
    s, t, e = flow.strongest(1)[0]
    assert abs(e) == pytest.approx(float(want.abs().max()))
    assert flow.to_dict()["edges"] == want.tolist()


def test_attribution_edges_sum_activation_times_weight_over_images():
    net, m = _model()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    found = []
    assert assert_unchanged(net, lambda: found.append(family_flow(m, ("1", "0-3"), ("2", [0]), images=x,
                                                                  batch_size=2))) is None
    flow = found[0]
    with torch.no_grad():
        h = F.pad(torch.relu(net[0](x)), (1, 1, 1, 1))[:, :, 4:7, 4:7].double()  # the window of (4, 4)
    want = (h * net[2].weight.detach().double()[0][None]).sum(dim=(0, 2, 3))[:, None]
    torch.testing.assert_close(flow.edges, want)
    assert flow.mode == "attribution" and flow.images == 5 and flow.source_channels == [0, 1, 2, 3]
    with pytest.raises(ImageError, match="input_size"):
        family_flow(m, ("1", [0]), ("2", [0]), images=torch.randn(1, 3, 12, 12))


def test_families_bring_their_order_and_orientations():
    _, m = _model()
    small = dict(size=8, orientations=[0.0, 90.0, 180.0, 270.0], levels=[2.0, 3.0])
    src = find_family(tuning_map(m, "1", **small), None, min_selectivity=0.0, min_peak=-1.0)
    dst = find_family(tuning_map(m, "3", **small), None, min_selectivity=0.0, min_peak=-1.0)
    flow = family_flow(m, src, dst)
    assert flow.source_channels == src.channels and flow.target_orientations == dst.stats.preferred.tolist()
    assert flow.edges.shape == (len(src), len(dst))
    with pytest.raises(CnnscopeError, match="layer, channels"):
        family_flow(m, "1", dst)


@pytest.mark.slow
def test_flow_command_matches_the_api(tmp_path):
    import json

    from cnnscope import load_model
    from cnnscope.cli import main
    from cnnscope.images import sample_images

    args = ["flow", "efficientnet_lite0", "blocks.1.1.bn2.act", "blocks.2.0.bn1.act", "--source-channels", "0-5",
            "--target-channels", "3,1"]
    assert main([*args, "--images", "sample:chelsea,coffee", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "flow_blocks.1.1.bn2.act_to_blocks.2.0.bn1.act.json").read_text())
    assert data["mode"] == "attribution" and data["images"] == 2
    assert data["target_channels"] == [1, 3]  # sorted, as every channel list
    pics = sample_images(["chelsea", "coffee"])
    want = family_flow(load_model("efficientnet_lite0"), ("blocks.1.1.bn2.act", [0, 1, 2, 3, 4, 5]),
                       ("blocks.2.0.bn1.act", [1, 3]), images=[pics["chelsea"], pics["coffee"]])
    torch.testing.assert_close(torch.tensor(data["edges"], dtype=torch.float64), want.edges, rtol=1e-4, atol=1e-6)
    assert (tmp_path / "flow_blocks.1.1.bn2.act_to_blocks.2.0.bn1.act.png").stat().st_size > 1000
