"""Turn raw attributions into pictures: heatmaps in [0, 1], upsampling, colour overlays (array level).

These helpers are separate from the methods (docs/ARCHITECTURE.md, rule 5): a method returns raw signed values, and the
viewer, the CLI and the atlas choose how to show them. Tensors in, tensors out; numpy in, numpy out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CnnscopeError

SIGNS = ("positive", "absolute", "negative", "all")
REDUCES = ("sum", "mean", "max")


def upsample(maps: torch.Tensor | np.ndarray, size: tuple[int, int], *, mode: str = "bilinear"
             ) -> torch.Tensor | np.ndarray:
    """Resize maps to ``size = (H, W)``.

    Shape:
        - Input: ``[h, w]``, ``[B, h, w]`` or ``[B, C, h, w]``; Output: the same rank at ``(H, W)``.
    """
    as_numpy = isinstance(maps, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(maps)) if as_numpy else maps
    rank = t.ndim
    if rank not in (2, 3, 4):
        raise CnnscopeError(f"upsample() takes [h,w], [B,h,w] or [B,C,h,w] maps, got shape {tuple(t.shape)}")
    t4 = t.reshape((1, 1) + tuple(t.shape)) if rank == 2 else (t[:, None] if rank == 3 else t)
    if tuple(t4.shape[-2:]) != tuple(size):
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        t4 = F.interpolate(t4.float(), size=tuple(size), mode=mode, **kwargs)
    out = t4[0, 0] if rank == 2 else (t4[:, 0] if rank == 3 else t4)
    return out.numpy() if as_numpy else out


def to_heatmap(values: torch.Tensor | np.ndarray, *, sign: str = "absolute", reduce: str = "sum",
               size: tuple[int, int] | None = None, outlier_perc: float = 0.5) -> torch.Tensor | np.ndarray:
    """Display maps from raw attributions.

    Steps: keep part of the sign (``"positive"`` = ReLU, ``"absolute"``, ``"negative"``, ``"all"`` = signed),
    reduce channels (``"sum"``, ``"mean"``, ``"max"``), upsample to ``size`` (bilinear), then divide each map by
    its ``100 - outlier_perc`` percentile of absolute values and clip. ``max`` after ``absolute`` is Simonyan et
    al.'s ``max_c |grad|``.

    Shape:
        - Input: ``[B, C, H, W]`` (or ``[C, H, W]``); Output: ``[B, H', W']`` in [0, 1] (in [-1, 1] for ``"all"``).
    """
    if sign not in SIGNS:
        raise CnnscopeError(f"sign must be one of {SIGNS}, got {sign!r}")
    if reduce not in REDUCES:
        raise CnnscopeError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    as_numpy = isinstance(values, np.ndarray)
    v = torch.from_numpy(np.ascontiguousarray(values)) if as_numpy else values.detach()
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise CnnscopeError(f"to_heatmap() takes [B,C,H,W] or [C,H,W] values, got shape {tuple(v.shape)}")
    v = v.float()
    v = {"positive": v.clamp(min=0), "absolute": v.abs(), "negative": (-v).clamp(min=0), "all": v}[sign]
    m = {"sum": v.sum(dim=1), "mean": v.mean(dim=1), "max": v.amax(dim=1)}[reduce]
    if sign == "all" and reduce == "max":
        m = v.gather(1, v.abs().argmax(dim=1, keepdim=True))[:, 0]
    if size is not None:
        m = upsample(m, size)
    flat = m.abs().flatten(1)
    q = min(max(1.0 - outlier_perc / 100.0, 0.0), 1.0)
    scale = torch.quantile(flat, q, dim=1) if flat.shape[1] <= 16_000_000 else flat.amax(dim=1)
    scale = torch.where(scale > 0, scale, flat.amax(dim=1))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    out = m / scale.view(-1, 1, 1)
    out = out.clamp(-1, 1) if sign == "all" else out.clamp(0, 1)
    return out.numpy() if as_numpy else out


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``uint8 [H, W, 3]`` colours of a map in [0, 1] (a map in [-1, 1] is shifted to [0, 1])."""
    import matplotlib

    hm = np.asarray(heatmap, dtype=np.float64)
    if hm.ndim != 2:
        raise CnnscopeError(f"colorize() takes one [H, W] map, got shape {hm.shape}")
    if hm.min(initial=0.0) < 0:
        hm = (hm + 1.0) / 2.0
    rgba = matplotlib.colormaps[cmap](np.clip(hm, 0.0, 1.0))
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray | torch.Tensor, *, cmap: str = "jet", alpha: float = 0.5
            ) -> np.ndarray:
    """Blend a coloured heatmap over an image.

    Args:
        image: ``uint8 [H, W, 3]``.
        heatmap: ``[h, w]`` in [0, 1] (or [-1, 1]); resized to the image bilinearly when its size differs.
        cmap: a matplotlib colormap name; alpha: the heatmap's opacity.

    Returns:
        ``uint8 [H, W, 3]``.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise CnnscopeError(f"overlay() takes an uint8 [H, W, 3] image, got shape {img.shape}")
    hm = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    hm = hm.squeeze()
    if hm.shape != img.shape[:2]:
        hm = upsample(hm.astype(np.float32), img.shape[:2])
    colors = colorize(hm, cmap).astype(np.float64)
    out = (1.0 - alpha) * img.astype(np.float64) + alpha * colors
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def display_options(method: str, **overrides: Any) -> dict[str, Any]:
    """The default heatmap options of a registered method (``sign``, ``reduce``) plus a colormap."""
    from .base import get_method

    opts = {"cmap": "jet", **get_method(method).display}
    opts.update(overrides)
    return opts
