"""Weight-level equivariance: rotated copies score near 1, random kernels near 0, an exact rotation exactly 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError, LayerError
from cnnscope.stimuli.curvenet import arc_template, curve_network
from cnnscope.stimuli.equivariance import kernel_equivariance, rotate_kernels, weight_equivariance

BUILT = list(range(0, 360, 30))


def test_hand_built_rotated_copies_are_equivariant():
    eq = weight_equivariance(curve_network(), "conv", channels=list(range(12)), orientations=BUILT)
    assert eq.wrap and len(eq.correlation) == 12 and eq.steps.tolist() == [30.0] * 12
    assert eq.correlation.min() > 0.9
    assert eq.unrotated.max() < 0.5  # neighbours are not alike unless rotated
    assert eq.pairs()[-1] == (11, 0)
    # channels given in any order are sorted by orientation
    shuffled = weight_equivariance(curve_network(), "conv", channels=[5, 0, 3], orientations=[150, 0, 90])
    assert shuffled.channels == [0, 3, 5] and shuffled.steps.tolist() == [90.0, 60.0] and not shuffled.wrap


def test_random_kernels_are_not_equivariant():
    k = torch.randn(36, 3, 15, 15, generator=torch.Generator().manual_seed(0))
    steps, corr, base = kernel_equivariance(k, np.arange(0.0, 360.0, 10.0))
    assert len(corr) == 36 and abs(float(corr.mean())) < 0.1 and abs(float(base.mean())) < 0.1


def test_quarter_turns_are_exact_rotations():
    """A 90-degree rotation of a square grid is a permutation: counter-clockwise as displayed is ``rot90``."""
    a0 = torch.tensor(arc_template(0, 5.0, 11))
    a = torch.stack([torch.rot90(a0, q) for q in range(4)])[:, None]
    torch.testing.assert_close(rotate_kernels(a[:1], 90.0)[0, 0], a[1, 0], atol=1e-9, rtol=0)
    # the arc built facing 90 degrees is the quarter turn of the one facing 0 (up to one pixel on its window's edge)
    assert np.corrcoef(a[1, 0].numpy().ravel(), arc_template(90, 5.0, 11).ravel())[0, 1] > 0.99
    _, corr, _ = kernel_equivariance(a, [0, 90, 180, 270], upsample=1, blur=0.0)
    np.testing.assert_allclose(corr.numpy(), 1.0, atol=1e-9)


def test_errors():
    with pytest.raises(LayerError, match="convolution"):
        weight_equivariance(curve_network(), "act", channels=[0, 1], orientations=[0, 30])
    with pytest.raises(CnnscopeError, match="1x1"):
        kernel_equivariance(torch.ones(2, 3, 1, 1), [0, 30])
    with pytest.raises(CnnscopeError, match="one orientation per channel"):
        weight_equivariance(curve_network(), "conv", channels=[0, 1], orientations=[0])


def test_equivariance_command(tmp_path, capsys):
    rc = main(["equivariance", "curvenet", "conv", "--out", str(tmp_path / "e")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "e" / "equivariance.json").read_text())
    assert data["channels"] == list(range(12)) and data["mean"] > 0.9
    assert (tmp_path / "e" / "equivariance.png").stat().st_size > 5000
