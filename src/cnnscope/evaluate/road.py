"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022).

Removed pixels are filled by *noisy linear imputation*: each removed pixel equals the weighted mean of its
in-image 8 neighbours (weight 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal ones), removed
neighbours being unknowns too. All removed pixels of one image form **one sparse linear system** (solved once
for all channels with SuperLU); Gaussian noise (std ``noise=0.01``, in the model's input space) is then added
to the imputed pixels. The imputation leaks no information about the removed region's shape through its
values, which is what debiases the score.

For each percentage ``p`` in 10, 20, ..., 90 %, the ``p`` % most relevant pixels (MoRF) or least relevant
pixels (LeRF) are removed and the class score of the imputed image is recorded. MoRF should fall fast (lower
is better), LeRF should stay high (higher is better). The combined score is the mean over ``p`` of
``(LeRF - MoRF) / 2`` (as pytorch-grad-cam's ``ROADCombined``): higher is better.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import splu

from ..batching import track
from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from .common import (
    ClassScorer,
    MapsLike,
    TargetLike,
    compute_maps,
    draw,
    inference,
    make_generator,
    perturbed_batch_size,
    pixel_ranks,
    resolve_targets,
)

#: (dy, dx, weight): the ROAD neighbourhood
NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))
PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def linear_imputation_system(removed: np.ndarray
                             ) -> tuple[coo_matrix, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The sparse system ``A u = K v`` of the removed pixels of one ``[H, W]`` mask.

    For removed pixel ``i`` with in-image neighbours ``j`` (weights ``w_ij``):
    ``sum_j w_ij * u_i - sum_{j removed} w_ij * u_j = sum_{j kept} w_ij * v_j``.

    Returns:
        ``(A, unknown, rhs)``: ``A`` is the ``[N, N]`` matrix (``N`` removed pixels in raster order),
        ``unknown`` their flat pixel indices, and ``rhs = (rows, kept, weights)`` the right-hand side as
        triples: ``b[rows[k]] += weights[k] * image[kept[k]]``.
    """
    h, w = removed.shape
    flat = removed.reshape(-1)
    unknown = np.flatnonzero(flat)
    n = unknown.size
    vid = np.full(h * w, -1, dtype=np.int64)
    vid[unknown] = np.arange(n)
    uy, ux = np.divmod(unknown, w)
    diag = np.zeros(n)
    a_rows, a_cols, a_vals = [], [], []
    r_rows, r_kept, r_vals = [], [], []
    for dy, dx, wt in NEIGHBOURS:
        ny, nx = uy + dy, ux + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        rows = np.flatnonzero(inside)
        nb = ny[inside] * w + nx[inside]
        diag[rows] += wt
        is_unknown = flat[nb]
        a_rows.append(rows[is_unknown])
        a_cols.append(vid[nb[is_unknown]])
        a_vals.append(np.full(int(is_unknown.sum()), -wt))
        kept = ~is_unknown
        r_rows.append(rows[kept])
        r_kept.append(nb[kept])
        r_vals.append(np.full(int(kept.sum()), wt))
    a_rows.append(np.arange(n))
    a_cols.append(np.arange(n))
    a_vals.append(diag)
    a = coo_matrix((np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(n, n))
    rhs = (np.concatenate(r_rows), np.concatenate(r_kept), np.concatenate(r_vals))
    return a, unknown, rhs


def noisy_linear_impute(image: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the ``removed`` pixels of one image by ROAD's noisy linear imputation.

    The system is solved on the CPU (scipy's SuperLU, one factorisation for all channels); the result comes
    back on the image's device. With ``noise=0`` the imputation is exact linear interpolation (a linear ramp
    is reproduced away from the image border).

    Args:
        image: one model-space image.
        removed: ``True`` where a pixel is removed.
        noise: std of the Gaussian noise added to imputed pixels (0 turns it off).
        generator: source of the noise (required when ``noise > 0``).

    Shape:
        - image: ``[C, H, W]``; removed: ``[H, W]`` bool; Output: ``[C, H, W]``.
    """
    if image.ndim != 3 or removed.shape != image.shape[-2:]:
        raise CnnscopeError(f"impute needs image [C, H, W] and mask [H, W], got {tuple(image.shape)} and "
                            f"{tuple(removed.shape)}")
    mask = removed.detach().to("cpu", torch.bool).numpy()
    if mask.all():
        raise CnnscopeError("cannot impute an image with every pixel removed (no known pixel to interpolate)")
    c, h, w = image.shape
    out = image.detach().clone()
    if not mask.any():
        return out
    a, unknown, (rows, kept, weights) = linear_imputation_system(mask)
    values = image.detach().to("cpu", torch.float64).reshape(c, h * w).numpy()
    b = np.zeros((unknown.size, c))
    np.add.at(b, rows, weights[:, None] * values[:, kept].T)
    solved = splu(a.tocsc(), permc_spec="COLAMD").solve(b)  # [N, C]
    fill = torch.from_numpy(solved.T.copy()).to(device=image.device, dtype=image.dtype)
    if noise > 0:
        if generator is None:
            raise CnnscopeError("noisy imputation needs an explicit torch.Generator")
        fill = fill + noise * draw(fill.shape, generator, image.device).to(image.dtype)
    idx = torch.from_numpy(unknown).to(image.device)
    out.view(c, h * w)[:, idx] = fill
    return out


@dataclass
class RoadResult:
    """ROAD scores of a batch of images.

    Attributes:
        percentages: ``[P]`` percent of pixels removed (the x axis, float64 on the CPU).
        morf: ``[B, P]`` class score after removing the most relevant pixels (lower is better).
        lerf: ``[B, P]`` class score after removing the least relevant pixels (higher is better).
        original: ``[B]`` class score of the unperturbed image.
        targets: ``[B]`` class scored per image.

    The per-image tensors are on the model's device.
        noise: imputation noise std.
    """

    percentages: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    original: torch.Tensor
    targets: torch.Tensor
    noise: float

    @property
    def morf_mean(self) -> torch.Tensor:
        """``[B]`` mean MoRF score over the percentages (lower is better)."""
        return self.morf.mean(dim=1)

    @property
    def lerf_mean(self) -> torch.Tensor:
        """``[B]`` mean LeRF score over the percentages (higher is better)."""
        return self.lerf.mean(dim=1)

    @property
    def combined(self) -> torch.Tensor:
        """``[B]`` mean over percentages of ``(LeRF - MoRF) / 2`` (higher is better)."""
        return ((self.lerf - self.morf) / 2).mean(dim=1)


def road_masks(ranks: torch.Tensor, shape: tuple[int, int], percentages: Sequence[float]
               ) -> Iterator[tuple[str, int, torch.Tensor]]:
    """``(order, percentage index, removed mask [H, W])`` for MoRF then LeRF of one image's ranks ``[H*W]``."""
    n = ranks.numel()
    for order in ("morf", "lerf"):
        for k, p in enumerate(percentages):
            count = int(round(float(p) / 100.0 * n))
            removed = ranks < count if order == "morf" else ranks >= n - count
            yield order, k, removed.view(shape)


def road(model: ModelLike, images: object, maps: MapsLike, *, target: TargetLike = None,
         percentages: Sequence[float] = PERCENTAGES, noise: float = 0.01, seed: int = 0, softmax: bool = True,
         batch_size: int | None = None, progress: bool = False) -> RoadResult:
    """ROAD MoRF/LeRF curves with noisy linear imputation.

    Args:
        model: a classifier returning ``[B, classes]`` logits (``LoadedModel`` or ``nn.Module``; temporary eval
            mode, not modified).
        images: anything :meth:`LoadedModel.batch` takes (a model-space tensor, or pictures).
        maps: saliency maps or an explainer ``explainer(model, images, targets) -> maps``.
        target: ``None`` for each image's top-1 class, or class indices/labels (one, or one per image).
        percentages: percent of pixels removed at each point (ROAD: 10..90).
        noise: imputation noise std in the input space (ROAD: 0.01).
        seed: seeds the noise generator.
        softmax: score softmax probabilities (default) or raw logits.
        batch_size: images per forward pass (imputed images, and images per explainer call); ``None`` picks a
            default by the model's device (:data:`.common.PERTURBED_BATCH`).
        progress: show a progress bar.

    Shape:
        - images: ``[B, C, H, W]``; Output: :class:`RoadResult` with ``morf``/``lerf`` ``[B, P]``.
    """
    m = as_model(model)
    x = m.batch(images)
    bs = perturbed_batch_size(batch_size, m.device)
    pcts = [float(p) for p in percentages]
    if not pcts or any(not 0 < p < 100 for p in pcts):
        raise CnnscopeError(f"ROAD percentages must lie strictly between 0 and 100, got {list(percentages)}")
    targets = resolve_targets(m, x, target, bs)
    ranks = pixel_ranks(compute_maps(maps, m, x, targets, bs))
    gen = make_generator(x.device, seed)
    b, _, h, w = x.shape
    scores = {"morf": torch.zeros(b, len(pcts), device=x.device), "lerf": torch.zeros(b, len(pcts), device=x.device)}
    scorer = ClassScorer(m.module, softmax, bs)
    jobs = [(i, order, k, removed) for i in range(b) for order, k, removed in road_masks(ranks[i], (h, w), pcts)]
    pending: list[tuple[int, str, int, torch.Tensor]] = []

    def flush() -> None:
        batch = torch.stack([img for _, _, _, img in pending])
        idx = torch.tensor([i for i, _, _, _ in pending], device=x.device)
        values = scorer(batch, targets[idx])
        for (i, order, k, _), v in zip(pending, values):
            scores[order][i, k] = v
        pending.clear()

    with inference(m.module):
        original = scorer(x, targets)
        for i, order, k, removed in track(jobs, progress, "ROAD", total=len(jobs)):
            pending.append((i, order, k, noisy_linear_impute(x[i], removed, noise=noise, generator=gen)))
            if len(pending) >= bs:
                flush()
        if pending:
            flush()
    return RoadResult(percentages=torch.tensor(pcts, dtype=torch.float64), morf=scores["morf"],
                      lerf=scores["lerf"], original=original, targets=targets, noise=float(noise))
