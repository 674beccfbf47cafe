"""Comb and concentric stimuli: strokes where the geometry puts them (pixel checks), usable by the tuning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError
from cnnscope.models import wrap
from cnnscope.stimuli import draw, grid, make_stimulus, tuning_map
from cnnscope.stimuli.combing import Comb, Concentric, tooth_angles

SIZE = 96


def _pixel(x: float, y: float) -> tuple[int, int]:
    """(row, col) of the pixel holding the point (x right, y up) around the image centre."""
    return int(math.floor(SIZE / 2 - y)), int(math.floor(x + SIZE / 2))


def _ink(img: np.ndarray, x: float, y: float) -> float:
    r, c = _pixel(x, y)
    return 1.0 - float(img[r, c, 0])


@pytest.mark.parametrize("orientation", [0.0, 90.0, 135.0, 200.0])
def test_comb_teeth_are_perpendicular_strokes_on_the_arc(orientation):
    comb = Comb(orientation=orientation, radius=24.0, span=120.0, teeth=5, tooth=10.0, width=2.0)
    img = draw(comb, SIZE, supersample=4)
    t = math.radians(orientation)
    cx, cy = -24.0 * math.cos(t), -24.0 * math.sin(t)
    angles = np.radians(tooth_angles(orientation, 120.0, 5))
    assert np.allclose(np.degrees(angles) - orientation, [-60, -30, 0, 30, 60])
    for phi in angles:
        u, v = np.array([math.cos(phi), math.sin(phi)]), np.array([-math.sin(phi), math.cos(phi)])
        for along in (-4.0, 0.0, 4.0):  # along the tooth (the arc's normal): ink
            p = np.array([cx, cy]) + (24.0 + along) * u
            assert _ink(img, *p) > 0.6, (orientation, math.degrees(phi), along)
        for side in (-4.0, 4.0):  # beside the tooth, along the arc: blank (no spine)
            p = np.array([cx, cy]) + 24.0 * u + side * v
            assert _ink(img, *p) < 0.05, (orientation, math.degrees(phi), side)
        p = np.array([cx, cy]) + 33.0 * u  # past the tooth's outer end: blank
        assert _ink(img, *p) < 0.05
    # with a spine, the arc between two teeth is drawn
    mid = (angles[0] + angles[1]) / 2
    between = np.array([cx, cy]) + 24.0 * np.array([math.cos(mid), math.sin(mid)])
    assert _ink(img, *between) < 0.05
    assert _ink(draw(comb.with_(spine=True), SIZE, supersample=4), *between) > 0.6


def test_concentric_rings_share_the_centre():
    img = draw(Concentric(orientation=90.0, radius=10.0, rings=3, gap=6.0, width=2.0, span=60.0), SIZE,
               supersample=4)
    # convex side up, the reference point on the innermost arc: the rings cross the vertical 0, 6 and 12 px up
    for y in (0.0, 6.0, 12.0):
        assert _ink(img, 0.5, y + 0.5) > 0.5 and _ink(img, 0.5, y - 0.5) > 0.5, y
    for y in (-3.5, 3.5, 9.5, 15.5):
        assert _ink(img, 0.5, y) < 0.05, y


def test_grid_sweeps_and_bad_parameters():
    stims = grid("comb", [0.0, 90.0], [10.0, 20.0], teeth=3.0)  # --set teeth=3 arrives as a float
    assert [s.teeth for s in stims] == [3] * 4 and [s.radius for s in stims] == [10.0, 10.0, 20.0, 20.0]
    assert make_stimulus("concentric", rings=2.0).rings == 2
    with pytest.raises(CnnscopeError, match="whole number"):
        Comb(teeth=2.5)
    with pytest.raises(CnnscopeError, match="tooth length"):
        Comb(radius=4.0, tooth=9.0)
    with pytest.raises(CnnscopeError, match="gap"):
        Concentric(gap=0.0)


def test_comb_is_a_kind_of_the_stimuli_and_tuning_commands(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["stimuli", "--kind", "comb", "--orientations", "4", "--levels", "12", "--size", "48",
               "--set", "teeth=5", "--set", "tooth=6", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "stimuli.json").read_text())
    assert [s["teeth"] for s in meta["stimuli"]] == [5] * 4 and meta["param"] == "radius"
    images = np.load(out / "stimuli.npz")["images"]
    params = {k: v for k, v in meta["stimuli"][1].items() if k != "kind"}
    np.testing.assert_array_equal(images[1], (np.round(draw(Comb(**params), 48) * 255)).astype(np.uint8))
    assert main(["stimuli", "--kind", "comb", "--set", "teeth=2.5", "--size", "32", "--out", str(tmp_path / "e")]) == 1
    assert "whole number" in capsys.readouterr().err


def test_tuning_map_takes_combs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 7, padding=3))
    m = wrap(net, input_size=32, mean=[0.0] * 3, std=[1.0] * 3)
    tmap = tuning_map(m, "0", kind="comb", orientations=[0.0, 90.0], levels=[8.0, 12.0], size=32, teeth=3)
    assert tmap.param == "radius" and tmap.fixed["teeth"] == 3
    x = torch.from_numpy(draw(Comb(orientation=90.0, radius=12.0, teeth=3), 32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = net(x)[0, :, 16, 16].double()
    torch.testing.assert_close(tmap.raw[:, 1, 1], want, rtol=1e-5, atol=1e-5)
