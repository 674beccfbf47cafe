"""ROAD: the imputation as one sparse system (ramp reproduced, equal to an independent Jacobi solver), the
noise, MoRF/LeRF on a synthetic model, batching and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError
from cnnscope.evaluate import PERCENTAGES, noisy_linear_impute, road
from cnnscope.evaluate.road import NEIGHBOURS

from .helpers import RegionSumNet, checker, square_region


def _ramp(h: int = 20, w: int = 30) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([0.3 * xx - 0.2 * yy + 1.0, 0.1 * yy, -0.05 * xx + 0.02 * yy])


def _interior_mask(h: int = 20, w: int = 30, p: float = 0.7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(h, w, dtype=torch.bool)
    m[1:h - 1, 1:w - 1] = torch.rand(h - 2, w - 2, generator=g) < p
    return m


def test_linear_ramp_is_reproduced_without_noise():
    ramp = _ramp()
    m = _interior_mask()
    m[5:15, 8:20] = True  # a large hole too
    out = noisy_linear_impute(ramp, m, noise=0.0)
    torch.testing.assert_close(out, ramp, atol=1e-9, rtol=0)


def _jacobi(img: np.ndarray, mask: np.ndarray, iters: int = 20000) -> np.ndarray:
    """Independent solver: iterate u_i <- weighted mean of in-image neighbours until it stops changing."""
    c, h, w = img.shape
    u = img.copy()
    u[:, mask] = 0.0
    for _ in range(iters):
        acc = np.zeros_like(u)
        wsum = np.zeros((h, w))
        for dy, dx, wt in NEIGHBOURS:
            shifted = np.zeros_like(u)
            valid = np.zeros((h, w))
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            shifted[:, yd, xd] = u[:, ys, xs]
            valid[yd, xd] = 1.0
            acc += wt * shifted
            wsum += wt * valid
        new = np.where(mask, acc / wsum, img)
        if np.abs(new - u).max() < 1e-13:
            return new
        u = new
    return u


def test_sparse_solve_equals_iterative_solver_with_borders():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 9, 11, dtype=torch.float64, generator=g)
    mask = torch.rand(9, 11, generator=g) < 0.6  # touches the borders, where weights are renormalised
    ours = noisy_linear_impute(img, mask, noise=0.0).numpy()
    ref = _jacobi(img.numpy(), mask.numpy())
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    np.testing.assert_array_equal(ours[:, ~mask.numpy()], img.numpy()[:, ~mask.numpy()])


def test_noise_is_seeded_only_on_imputed_pixels():
    ramp = _ramp().float()
    m = _interior_mask(p=0.9)
    clean = noisy_linear_impute(ramp, m, noise=0.0)
    a = noisy_linear_impute(ramp, m, noise=0.01, generator=torch.Generator().manual_seed(7))
    b = noisy_linear_impute(ramp, m, noise=0.01, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.equal(a[:, ~m], ramp[:, ~m])
    resid = (a - clean)[:, m]
    assert 0.008 < float(resid.std()) < 0.012 and abs(float(resid.mean())) < 0.002
    with pytest.raises(CnnscopeError, match="Generator"):
        noisy_linear_impute(ramp, m, noise=0.01, generator=None)


def test_road_on_matched_filter_model():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 96, offset=3.0, pattern=checker())
    g = torch.Generator().manual_seed(2)
    x = (0.5 + 0.5 * checker() + 0.1 * torch.randn(2, 3, 16, 16, generator=g)).clamp(0, 1)
    perfect = region + 0.01 * torch.rand(16, 16, generator=g)
    good = road(model, x, perfect, target=0, percentages=(10, 30, 60, 90))
    bad = road(model, x, 1 - perfect, target=0, percentages=(10, 30, 60, 90))
    assert good.morf.shape == (2, 4) and good.percentages.tolist() == [10, 30, 60, 90]
    # the region is 25 % of the image: removing >= 30 % most relevant removes all of it
    assert (good.morf[:, 1:] < 0.1).all() and (good.lerf[:, :3] > 0.9).all()
    assert (good.combined > bad.combined + 0.3).all()
    assert (good.morf_mean < bad.morf_mean).all() and (good.lerf_mean > bad.lerf_mean).all()
    torch.testing.assert_close(good.combined, ((good.lerf - good.morf) / 2).mean(1))
    torch.testing.assert_close(good.original, torch.softmax(model(x), 1)[:, 0])


def test_road_batching_and_seed_reproducible():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 96, offset=3.0, pattern=checker())
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    m = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))
    a = road(model, x, m, percentages=(20, 70), batch_size=1, seed=5)
    b = road(model, x, m, percentages=(20, 70), batch_size=64, seed=5)
    torch.testing.assert_close(a.morf, b.morf, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.lerf, b.lerf, atol=1e-6, rtol=0)
    assert tuple(PERCENTAGES) == (10, 20, 30, 40, 50, 60, 70, 80, 90)


def test_road_errors():
    region = square_region()
    model = RegionSumNet(region)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(CnnscopeError, match="between 0 and 100"):
        road(model, x, region, percentages=(0, 50))
    with pytest.raises(CnnscopeError, match="every pixel removed"):
        noisy_linear_impute(x[0], torch.ones(16, 16, dtype=torch.bool), noise=0.0)
    with pytest.raises(CnnscopeError, match=r"\[C, H, W\]"):
        noisy_linear_impute(x, torch.ones(16, 16, dtype=torch.bool))
