"""Circuit editing: ablation and weight edits change the tuning by the closed-form amount; the model is restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnscope.errors import CnnscopeError, LayerError
from cnnscope.models import wrap
from cnnscope.stimuli import tuning_map
from cnnscope.stimuli.editing import WeightEdit, edit_effect, edited, parse_ablation, parse_weight_edit
from tests.conformance import assert_unchanged

SMALL = dict(size=16, orientations=[0.0, 90.0, 180.0, 270.0], levels=[3.0, 6.0])


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 5, padding=2), nn.ReLU(), nn.Conv2d(2, 3, 1))
    with torch.no_grad():
        net[0].bias.fill_(1.0)  # both hidden units respond to every stimulus
    return net


def test_ablation_and_weight_edit_change_tuning_by_the_closed_form():
    net = _net()
    m = wrap(net, input_size=16)
    w2 = net[2].weight.detach()[:, :, 0, 0].double()  # [3 out, 2 in]
    hidden = tuning_map(m, "1", **SMALL).raw  # [2, P, O]: the ReLU units at the centre, what conv2 reads
    assert hidden[0].abs().max() > 0 and hidden[1].abs().max() > 0
    found = []
    assert assert_unchanged(net, lambda: found.append(edit_effect(m, "2", ablate={"1": [0]}, **SMALL))) is None
    e = found[0]
    # zeroing ReLU unit 0 removes w2[u, 0] * h0 from every output unit u
    torch.testing.assert_close(e.delta, -w2[:, 0, None, None] * hidden[0][None], rtol=1e-5, atol=1e-6)
    assert e.ablate == {"1": [0]} and e.change().shape == (3,)
    # halving the weight 1 -> 2 changes unit 2 only, by -0.5 * w2[2, 1] * h1
    e2 = edit_effect(m, "2", weights=["2:2:1*0.5"], **SMALL)
    want = torch.zeros_like(e2.delta)
    want[2] = -0.5 * w2[2, 1] * hidden[1]
    torch.testing.assert_close(e2.delta, want, rtol=1e-5, atol=1e-6)
    # setting it to 0 removes it: the same as ablating that input for that unit alone
    e3 = edit_effect(m, "2", channels=[2], weights=[WeightEdit("2", 2, 1, value=0.0)], **SMALL)
    torch.testing.assert_close(e3.delta[0], -w2[2, 1] * hidden[1], rtol=1e-5, atol=1e-6)
    assert e3.to_dict()["weights"] == [{"conv": "2", "out_channel": 2, "in_channel": 1, "value": 0.0,
                                        "scale": None}]


def test_edits_are_undone_even_when_the_block_raises():
    net = _net()
    before = net[0].weight.detach().clone()

    def boom():
        with edited(net, ablate={"1": "0"}, weights=["0:1:all=0"]):
            assert float(net[0].weight[1].detach().abs().sum()) == 0.0
            raise RuntimeError("inside")

    assert isinstance(assert_unchanged(net, boom), RuntimeError)
    assert torch.equal(net[0].weight, before)


def test_bad_edits_are_one_line_errors():
    net = _net()
    with pytest.raises(CnnscopeError, match="CONV:OUT:IN"):
        parse_weight_edit("2:1=0")
    with pytest.raises(CnnscopeError, match="LAYER:CHANNELS"):
        parse_ablation("features")
    assert parse_ablation("blocks.2.1.bn1.act:3,7-9") == ("blocks.2.1.bn1.act", "3,7-9")
    assert str(parse_weight_edit("conv2:0:all*2")) == "conv2:0:all*2"
    with pytest.raises(LayerError, match="Conv2d"):
        with edited(net, weights=["1:0:0=1"]):
            pass
    with pytest.raises(LayerError, match="out of range"):
        with edited(net, weights=["2:7:0=1"]):
            pass
    with pytest.raises(CnnscopeError, match="nothing to edit"):
        edit_effect(net, "2", **SMALL)


@pytest.mark.slow
def test_edit_command_writes_before_and_after(tmp_path):
    import json

    from cnnscope.cli import main

    rc = main(["edit", "efficientnet_lite0", "blocks.1.1.bn2.act", "--channels", "0,1", "--pre-activation",
               "--edit-weight", "blocks.1.1.conv_dw:1:1*0", "--ablate", "blocks.1.1.bn1.act:0", "--step", "90",
               "--levels", "6,12", "--size", "64", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "edit_blocks.1.1.bn2.act.json").read_text())
    before = torch.tensor(data["before"]["raw"])
    after = torch.tensor(data["after"]["raw"])
    # depthwise: unit 0 reads only input channel 0, which is ablated; unit 1's kernel is zeroed: both become
    # their folded bias, the same for every stimulus, while they varied before
    assert before[0].std() > 0 and before[1].std() > 0
    assert after[0].std() < 1e-6 and after[1].std() < 1e-6
    assert data["weights"][0]["scale"] == 0.0 and data["ablate"] == {"blocks.1.1.bn1.act": [0]}
    assert (tmp_path / "edit_blocks.1.1.bn2.act.png").stat().st_size > 1000
    assert main(["edit", "efficientnet_lite0", "blocks.1.1.bn2.act", "--out", str(tmp_path / "e")]) == 1
