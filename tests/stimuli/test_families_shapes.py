"""Double, echo and concentric units: matched-filter units built from drawn stimuli get the right labels, and the
family keeps double-curve units instead of dropping them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.models import wrap
from cnnscope.stimuli import Curve, draw, find_family, tuning_map
from cnnscope.stimuli.combing import Concentric
from cnnscope.stimuli.families import classify_units, concentric_ratios
from tests.conformance import assert_unchanged

KERNEL, SIZE, RADIUS = 25, 33, 8.0
WHITE_ON_BLACK = dict(color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0), width=2.0)


def _template(*stimuli, offset=(0.0, 0.0)) -> np.ndarray:
    """A zero-mean matched filter: the weighted sum of the stimuli's luma drawn at the kernel size."""
    k = sum(w * draw(s, KERNEL, offset=offset)[..., 0] for w, s in stimuli)
    return k - k.mean()


def _curve(o: float, **kw) -> Curve:
    return Curve(orientation=o, radius=RADIUS, **WHITE_ON_BLACK, **kw)


def _oriented(o: float) -> np.ndarray:
    """A curve minus the opposite curvature through the same point (straight strokes cancel)."""
    return _template((1.0, _curve(o)), (-1.0, _curve(o + 180)))


def _net() -> nn.Module:
    """``conv(25x25) -> ReLU -> conv(1x1)``: the second layer's units are positive mixtures of pure detectors."""
    concentric = Concentric(orientation=270, radius=RADIUS, rings=3, gap=4.0, **WHITE_ON_BLACK)
    ring = _template((1.0, _curve(0, span=360)), offset=(RADIUS, 0.0))  # a circle around the centre
    kernels = [_oriented(0), _oriented(90), _oriented(210), _oriented(180), _template((1.0, concentric)), ring]
    first = nn.Conv2d(1, len(kernels), KERNEL, padding=KERNEL // 2)
    second = nn.Conv2d(len(kernels), 5, 1, bias=False)
    mix = [[1, 0, 0, 0, 0, 0],      # 0: one curve (0 degrees)
           [0, 1, 1, 0, 0, 0],      # 1: double (90 and 210)
           [0.3, 0, 0, 1, 0, 0],    # 2: echo (180, weakly 0)
           [0, 0, 0, 0, 1, 0],      # 3: concentric arcs facing 270
           [0, 0, 0, 0, 0, 1]]      # 4: a circle: no orientation
    with torch.no_grad():
        first.weight.copy_(torch.tensor(np.stack(kernels), dtype=torch.float32)[:, None])
        first.bias.copy_(torch.tensor([-5.0, -5.0, -5.0, -5.0, -11.0, 5.0]))  # keep only the main lobes
        second.weight.copy_(torch.tensor(mix, dtype=torch.float32)[:, :, None, None])
    return wrap(nn.Sequential(first, nn.ReLU(), second), input_size=SIZE, mean=[0.0], std=[1.0])


def _map(m):
    return tuning_map(m, "2", orientations=np.arange(0, 360, 30.0), levels=[RADIUS], size=SIZE, **WHITE_ON_BLACK)


def test_hand_built_units_get_their_class():
    m = _net()
    tmap = _map(m)
    found = []
    assert assert_unchanged(m.module, lambda: found.append(concentric_ratios(m, tmap, gap=4.0, size=SIZE))) is None
    ratios = found[0]
    classes = classify_units(tmap, concentric_ratio=ratios)
    assert classes.labels == ["curve", "double", "echo", "concentric", "unselective"], classes.to_dict()
    assert classes.preferred[0] == 0 and classes.preferred[2] == 180 and classes.preferred[3] == 270
    assert {float(classes.preferred[1]), float(classes.second[1])} == {90.0, 210.0}
    assert float(classes.second[2]) == 0.0 and 0.1 < float(classes.second_ratio[2]) < 0.5
    assert float(ratios[3]) > 1.5 > float(ratios[0])  # three rings beat one for the concentric unit only
    assert math.isnan(float(classes.second[0])) and classes.of(4) == "unselective"
    assert classes.counts() == {"double": 1, "concentric": 1, "echo": 1, "curve": 1, "unselective": 1}
    # without the concentric measurement the concentric unit is a plain curve detector
    assert classify_units(tmap).labels[3] == "curve"


def test_family_keeps_double_curves_when_asked():
    tmap = _map(_net())
    plain = find_family(tmap, None, min_selectivity=0.6)
    assert 1 not in plain.channels  # two lobes: low vector strength, dropped by the filter
    both = find_family(tmap, None, min_selectivity=0.6, double=True)
    assert 1 in both.channels and both.classes[both.channels.index(1)] == "double"
    assert set(plain.channels) < set(both.channels) and both.to_dict()["classes"] == both.classes


@pytest.mark.slow
def test_unit_classes_command(tmp_path):
    import json

    from cnnscope.cli import main
    from cnnscope.stimuli.families import UNIT_CLASSES

    rc = main(["unit-classes", "efficientnet_lite0", "blocks.1.1.bn1.act", "--channels", "0-11", "--pre-activation",
               "--step", "30", "--levels", "4,8", "--size", "64", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "classes_blocks.1.1.bn1.act.json").read_text())
    assert len(data["labels"]) == 12 and set(data["labels"]) <= set(UNIT_CLASSES)
    assert sum(data["counts"].values()) == 12 and len(data["concentric_ratio"]) == 12
    assert all(r >= 0.5 for lab, r in zip(data["labels"], data["second_ratio"]) if lab == "double")
    assert (tmp_path / "classes_blocks.1.1.bn1.act.png").stat().st_size > 1000


def test_tuning_report_keeps_double_curves_when_asked():
    from cnnscope.stimuli import tuning_report

    kw = dict(family=8, min_selectivity=0.6, step=30.0, levels=[RADIUS], size=SIZE, source=None, examples=0,
              joint_step=0.0, **WHITE_ON_BLACK)
    assert 1 not in tuning_report(_net(), "2", **kw).family.channels
    both = tuning_report(_net(), "2", double=True, **kw).family
    assert 1 in both.channels and both.classes[both.channels.index(1)] == "double"
