"""Approximate incremental inference: Krypton's projective-field threshold (Nakandala et al., SIGMOD 2019, Sec. 4.1).

The patch a window changes grows with depth (its *projective field*): by the 14x14 and 7x7 layers of an ImageNet
network nearly every position changes, so exact incremental inference must recompute the deep layers in full. Most
of the change is near the patch's centre, though. With a threshold ``tau`` in (0, 1] the changed patch of every
split layer is cut down to ``floor(tau * n)`` of the layer's ``n`` positions along each axis, around the position
whose receptive field is centred nearest the window's centre; the positions left out keep their clean values, and
the next layer's patch grows from the cut one. ``tau = 1`` is exact; smaller values recompute less and err more.
The crops are still checked on the clean image (there they must reproduce the clean activations exactly), so a
model that is not local still falls back to full forwards. :func:`map_error` measures what the cut costs.
"""

from __future__ import annotations

import torch

from ..errors import CnnscopeError


def check_tau(tau: object) -> float | None:
    """``tau`` as a float in (0, 1], or ``None`` (exact).

    Raises:
        CnnscopeError: anything else.
    """
    if tau is None:
        return None
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < float(tau) <= 1:
        raise CnnscopeError(f"approximate must be None (exact) or a projective-field threshold in (0, 1], got "
                            f"{tau!r}")
    return float(tau)


def truncate(r0: int, r1: int, centre: int, cap: int) -> tuple[int, int]:
    """``[r0, r1)`` cut down to ``cap`` positions around ``centre`` (kept inside ``[r0, r1)``)."""
    if r1 - r0 <= cap:
        return r0, r1
    start = min(max(centre - (cap - 1) // 2, r0), r1 - cap)
    return start, start + cap


def map_error(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """How far an approximate map is from the exact one, per image, the worst image reported.

    Returns:
        ``spearman``: the rank correlation of the two maps' values (``scipy.stats.spearmanr``; lowest over the
        images); ``max_diff``: the largest ``|a - b|`` after min-max normalising each map to [0, 1] (highest over
        them).

    Shape:
        - approx, exact: ``[B, ...]``.
    """
    from scipy.stats import spearmanr

    a = approx.detach().double().flatten(1).cpu()
    b = exact.detach().double().flatten(1).cpu()

    def norm(t: torch.Tensor) -> torch.Tensor:
        lo, hi = t.min(1, keepdim=True).values, t.max(1, keepdim=True).values
        return (t - lo) / (hi - lo).clamp(min=1e-12)

    rho = min(float(spearmanr(ai.numpy(), bi.numpy()).statistic) for ai, bi in zip(a, b))
    return {"spearman": rho, "max_diff": float((norm(a) - norm(b)).abs().max())}
