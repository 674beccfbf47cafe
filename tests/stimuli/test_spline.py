"""Spline curve stimuli (closed forms) and the curve a hand-built curve unit prefers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cnnscope import unit
from cnnscope.cli import main
from cnnscope.errors import CnnscopeError
from cnnscope.stimuli import tuning_map
from cnnscope.stimuli.curvenet import curve_network
from cnnscope.stimuli.spline import bezier, curve_geometry, draw_splines, prefer_curve

#: a cubic Bezier's classic approximation of a quarter circle (error below 0.03% of the radius)
KAPPA = 4 * (math.sqrt(2) - 1) / 3


def quarter_circle(radius: float, centre=(0.0, 0.0)) -> torch.Tensor:
    """Control points of the quarter circle from angle -45 to 45 degrees (its convex side faces 0 degrees)."""
    a0, a1 = -math.pi / 4, math.pi / 4
    p0 = np.array([math.cos(a0), math.sin(a0)]) * radius
    p3 = np.array([math.cos(a1), math.sin(a1)]) * radius
    t0 = np.array([-math.sin(a0), math.cos(a0)]) * radius * KAPPA
    t3 = np.array([-math.sin(a1), math.cos(a1)]) * radius * KAPPA
    c = np.stack([p0, p0 + t0, p3 - t3, p3]) + np.asarray(centre)
    return torch.tensor(c, dtype=torch.float64)


def test_bezier_and_geometry_closed_forms():
    line = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]], dtype=torch.float64)
    np.testing.assert_allclose(bezier(line, 4).numpy(), [[0, 0], [1, 2], [2, 4], [3, 6]], atol=1e-12)
    c = quarter_circle(10.0, centre=(-10.0, 0.0))  # passes through the origin facing 0 degrees
    g = curve_geometry(c, (0.0, 0.0))
    assert g["distance"] < 1e-2 and g["radius"] == pytest.approx(10.0, rel=0.01)
    assert min(g["orientation"], 360 - g["orientation"]) < 0.1 and g["tangent"] == pytest.approx(90.0, abs=0.1)
    # traversed backwards the convex side is the same; mirrored it faces 180 degrees
    assert min(curve_geometry(c.flip(0), (0.0, 0.0))["orientation"] % 360, 360 - curve_geometry(
        c.flip(0), (0.0, 0.0))["orientation"]) < 0.1
    assert curve_geometry(-c, (0.0, 0.0))["orientation"] == pytest.approx(180.0, abs=0.1)
    assert math.isinf(curve_geometry(line, (1.0, 2.0))["radius"])


def test_soft_rendering_is_the_sigmoid_of_the_distance():
    """A horizontal line through the image: each row's grey value is the sigmoid of its distance to the line."""
    ctrl = torch.tensor([[[-20.0, 0.0], [-5.0, 0.0], [5.0, 0.0], [20.0, 0.0]]])
    img = draw_splines(ctrl, torch.tensor([3.0]), torch.tensor([1.0]), (16, 12), background=0.25, softness=0.5)
    d = np.abs(8 - (np.arange(16) + 0.5))  # pixel centres' distance to y = 0
    want = 0.25 + 0.75 / (1 + np.exp(-(1.5 - d) / 0.5))
    # up to the nearest-sample error: samples 0.31 px apart along the line move d by at most 0.16 px across it
    np.testing.assert_allclose(img[0, :, 6].numpy(), want, atol=1e-3)
    assert img.shape == (1, 16, 12)
    ctrl.requires_grad_(True)
    g = torch.autograd.grad(draw_splines(ctrl, torch.tensor([3.0]), torch.tensor([1.0]), (16, 12))[0, :4].sum(),
                            ctrl)[0]
    assert g[0, :, 1].abs().sum() > 0  # moving the curve up changes the top rows


@pytest.mark.slow
@pytest.mark.parametrize("channel", [0, 4, 7])
def test_a_hand_built_unit_prefers_the_curve_it_was_built_for(channel):
    net = curve_network()
    built = net.module.orientations[channel]
    pc = prefer_curve(net, unit("conv", channel, "center"), background=0.0, width=(2.0, 2.0), starts=6, steps=80)
    err = abs((pc.orientation - built + 180) % 360 - 180)
    assert err < 5.0, (pc.orientation, built)
    assert pc.geometry["distance"] < 2.0  # the curve passes through the unit's centre
    assert pc.contrast > 0.9  # a white curve on black
    # at least as strong as the best circular arc of a fine tuning grid (same width)
    tm = tuning_map(net, "conv", channels=[channel], size=31, orientations=np.arange(0.0, 360.0, 5.0),
                    levels=[5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0], width=2.0, color=(1.0, 1.0, 1.0),
                    background=(0.0, 0.0, 0.0))
    assert pc.value >= 0.95 * float(tm.raw.max())


def test_prefer_curve_command_and_its_numbers(tmp_path, capsys):
    out = tmp_path / "p"
    rc = main(["prefer-curve", "curvenet", "conv", "3", "--steps", "3", "--starts", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "prefer_curve.json").read_text())
    assert data["unit"]["channel"] == 3 and len(data["values"]) == 2 and data["background"] == 0.0
    # independent: re-draw the saved parameters and run the convolution
    ctrl = torch.tensor([data["control"]], dtype=torch.float32)
    img = draw_splines(ctrl, torch.tensor([data["width"]]), torch.tensor([data["contrast"]]), (31, 31), background=0.0)
    net = curve_network().module
    with torch.no_grad():
        got = net.conv(img[:, None].expand(-1, 3, -1, -1))[0, 3, 15, 15]
    assert float(got) == pytest.approx(data["value"], abs=1e-4)
    assert (out / "prefer_curve.png").stat().st_size > 5000 and (out / "prefer_curve_picture.png").exists()


def test_errors():
    with pytest.raises(CnnscopeError, match="cnnscope.Unit"):
        prefer_curve(curve_network(), ("conv", 0))
    with pytest.raises(CnnscopeError, match="width"):
        prefer_curve(curve_network(), unit("conv", 0, "center"), width=(3.0, 1.0))


@pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")  # a plain module: ImageNet defaults assumed
@pytest.mark.parametrize("pre_activation", [False, True])
def test_model_unchanged(pre_activation):
    """docs/ARCHITECTURE.md rule 2: gradients go to the curve's parameters only; no .grad, hook or flag is left."""
    from tests.conformance import assert_unchanged
    from tests.models import InplaceReLUNet

    net = InplaceReLUNet().train()
    layer = "features.5" if pre_activation else "features.4"
    error = assert_unchanged(net, lambda: prefer_curve(net, unit(layer, 2, (3, 4)), size=16, starts=2, steps=2,
                                                       pre_activation=pre_activation))
    assert error is None, error
