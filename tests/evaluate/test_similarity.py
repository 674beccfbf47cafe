"""Similarity measures of the sanity checks against scipy / scikit-image references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from cnnscope.errors import MethodError
from cnnscope.evaluate import SIMILARITIES, average_ranks, spearman, spearman_abs
from cnnscope.evaluate.similarity import get_similarities


def _maps(seed: int, n: int = 3, size: int = 24, ties: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, size, size, generator=g)
    if ties:
        m = torch.where(m.abs() < 0.5, torch.zeros_like(m), m.round(decimals=1))  # many exact ties
    return m


def test_average_ranks_match_scipy():
    m = _maps(0).flatten(1)
    ours = average_ranks(m).numpy()
    ref = np.stack([rankdata(r, method="average") - 1 for r in m.numpy()])
    np.testing.assert_allclose(ours, ref)


def test_spearman_matches_scipy_with_ties():
    a, b = _maps(1), _maps(2)
    b = 0.6 * a + 0.4 * b
    ours = spearman(a, b).numpy()
    ref = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    ours_abs = spearman_abs(a, b).numpy()
    ref_abs = [spearmanr(np.abs(x).ravel(), np.abs(y).ravel()).statistic for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours_abs, ref_abs, atol=1e-12)


def test_sign_flip_separates_the_two_spearmans():
    a = _maps(3, ties=False)
    assert torch.allclose(spearman(a, -a), torch.full((3,), -1.0, dtype=torch.float64))
    assert torch.allclose(spearman_abs(a, -a), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_identical_maps_are_fully_similar_and_independent_ones_are_not(name):
    fn = SIMILARITIES[name]
    a, b = _maps(4, ties=False), _maps(5, ties=False)
    same = fn(a, a.clone())
    other = fn(a, b)
    assert same.shape == (3,) and torch.allclose(same, torch.ones(3, dtype=torch.float64), atol=1e-9)
    assert (other.abs() < 0.5).all(), other


def test_constant_map_gives_nan_spearman():
    a = _maps(6)
    out = spearman(a, torch.zeros_like(a))
    assert all(math.isnan(v) for v in out.tolist())


def test_unknown_similarity():
    with pytest.raises(MethodError, match="did you mean: ssim"):
        get_similarities(["ssimm"])
