"""The hand-built curve network in the library: built orientations recovered by the tuning functions, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError
from cnnscope.stimuli import find_family, tuning_map
from cnnscope.stimuli.curvenet import LAYER, CurveNet, curve_network

from . import curvenet as fixture

WHITE_ON_BLACK = dict(width=2.0, color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0))


def test_each_unit_prefers_its_build_orientation():
    """Orientations off the 30-degree lattice too: the tuning's preferred orientation is the built one."""
    built = [10.0, 55.0, 100.0, 145.0, 190.0, 235.0, 280.0, 325.0]
    net = curve_network(built)
    tm = tuning_map(net, LAYER, size=31, orientations=np.arange(0.0, 360.0, 5.0), levels=[6.0, 8.0, 12.0],
                    **WHITE_ON_BLACK)
    np.testing.assert_array_equal(tm.preferred()["orientation"].numpy(), built)
    fam = find_family(tm, k=None, min_selectivity=0.1)
    assert fam.channels == list(range(8))
    assert net.module.orientations == tuple(built) and net.module.radius == 8.0


def test_the_test_fixture_is_the_library_network():
    assert fixture.CurveNet is CurveNet
    a, b = CurveNet(blob=True), fixture.CurveNet(blob=True)
    torch.testing.assert_close(a.conv.weight, b.conv.weight)
    with pytest.raises(CnnscopeError, match="odd kernel"):
        CurveNet(kernel=14)


def test_curvenet_command_compares_with_learned_units(tmp_path, capsys):
    """MODEL ``curvenet`` is the hand-built network itself: the comparison panel recovers the same orientations."""
    rc = main(["curvenet", "curvenet", "conv", "--out", str(tmp_path / "c")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "c" / "curvenet.json").read_text())
    built = data["hand_built"]["build_orientations"]
    assert built == [float(o) for o in range(0, 360, 30)]
    assert data["hand_built"]["family"]["preferred"] == built
    assert sorted(data["learned"]["preferred"]) == built
    assert (tmp_path / "c" / "curvenet.png").stat().st_size > 5000
    assert "manifest.json" in {p.name for p in (tmp_path / "c").iterdir()}
    rc = main(["curvenet", "curvenet", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 1 and "MODEL and LAYER" in err and len(err.strip().splitlines()) == 1
