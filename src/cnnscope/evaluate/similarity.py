"""Similarity of two sets of saliency maps, as used by the sanity checks (Adebayo et al. 2018).

* ``spearman_abs``: Spearman rank correlation of the absolute maps;
* ``spearman``: Spearman rank correlation of the signed maps;
* ``ssim``: structural similarity (Wang et al. 2004) of the absolute maps, each min-max scaled to [0, 1];
* ``hog``: Pearson correlation of the HOG descriptors (Dalal & Triggs 2005) of the same scaled maps.

Spearman uses average ranks for ties (saliency maps often hold many exact zeros), computed on the maps'
device. A constant map has no ranking: its correlations are ``nan`` (reported, not hidden).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import MethodError, unknown

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``0..N-1`` along the last dim, ties sharing their average rank.

    Shape:
        - x: ``[B, N]``; Output: ``[B, N]`` float64.
    """
    out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    for i in range(x.shape[0]):
        vals, order = torch.sort(x[i], stable=True)
        _, counts = torch.unique_consecutive(vals, return_counts=True)
        ends = torch.cumsum(counts, 0)
        avg = (ends - counts).double() + (counts.double() - 1) / 2
        out[i, order] = torch.repeat_interleave(avg, counts)
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation (``nan`` for a constant row). Shape: ``[B, N]`` x2 -> ``[B]``."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    num = (a * b).sum(dim=1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of signed maps. Shape: ``[B, H, W]`` x2 -> ``[B]`` float64."""
    return pearson(average_ranks(a.flatten(1)), average_ranks(b.flatten(1)))


def spearman_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of absolute maps. Shape: ``[B, H, W]`` x2 -> ``[B]``."""
    return spearman(a.abs(), b.abs())


def unit_scale(m: torch.Tensor) -> np.ndarray:
    """``|m|`` min-max scaled to [0, 1] per map, as float64 numpy (a constant map becomes all zeros)."""
    a = m.detach().abs().double()
    lo = a.flatten(1).min(dim=1).values.view(-1, 1, 1)
    hi = a.flatten(1).max(dim=1).values.view(-1, 1, 1)
    return ((a - lo) / (hi - lo).clamp_min(1e-300)).cpu().numpy()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of the scaled absolute maps (scikit-image, data range 1). Shape: ``[B, H, W]`` x2 -> ``[B]``."""
    from skimage.metrics import structural_similarity

    sa, sb = unit_scale(a), unit_scale(b)
    vals = [structural_similarity(x, y, data_range=1.0) for x, y in zip(sa, sb)]
    return torch.tensor(vals, dtype=torch.float64, device=a.device)


def hog_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of HOG descriptors of the scaled absolute maps. Shape: ``[B, H, W]`` x2 -> ``[B]``."""
    from skimage.feature import hog

    sa, sb = unit_scale(a), unit_scale(b)
    side = min(sa.shape[-2:])
    cell = 8 if side >= 32 else max(2, side // 4)  # scikit-image's default cell, smaller for tiny maps
    feats = [(hog(x, pixels_per_cell=(cell, cell), cells_per_block=(2, 2)),
              hog(y, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))) for x, y in zip(sa, sb)]
    fa = torch.tensor(np.stack([f for f, _ in feats]))
    fb = torch.tensor(np.stack([f for _, f in feats]))
    return pearson(fa, fb).to(a.device)


#: name -> ``fn(reference_maps, other_maps) -> [B]``
SIMILARITIES: dict[str, Similarity] = {
    "spearman_abs": spearman_abs,
    "spearman": spearman,
    "ssim": ssim,
    "hog": hog_correlation,
}


def get_similarities(names: str | list[str] | tuple[str, ...] | None) -> dict[str, Similarity]:
    """Resolve similarity names (``None``: all of them)."""
    if names is None:
        return dict(SIMILARITIES)
    chosen = [names] if isinstance(names, str) else list(names)
    out = {}
    for n in chosen:
        if n not in SIMILARITIES:
            raise MethodError(unknown("similarity", n, SIMILARITIES))
        out[n] = SIMILARITIES[n]
    return out
