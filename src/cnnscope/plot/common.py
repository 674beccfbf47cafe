"""Shared figure helpers: a pyplot-free Figure, image grids (contact sheets), saving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..outputs import atomic_path


def figure(width: float = 6.0, height: float = 4.0, dpi: int = 100) -> Figure:
    """A new matplotlib ``Figure`` with an Agg canvas (no pyplot state, safe in threads and servers)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` (format by suffix) and return the path; parent folders are created. The file is written
    atomically (a temporary file renamed into place), so an interrupted save leaves no truncated picture."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix[1:].lower() or None)
    return path


def grid_image(images: Sequence[np.ndarray] | np.ndarray, cols: int | None = None, pad: int = 2,
               background: int = 255) -> np.ndarray:
    """Tile ``uint8`` HxWx3 images (equal sizes) into one contact sheet ``uint8`` array."""
    imgs = [np.asarray(im) for im in images]
    if not imgs:
        raise ValueError("grid_image() needs at least one image")
    h, w = imgs[0].shape[:2]
    if any(im.shape[:2] != (h, w) for im in imgs):
        raise ValueError("grid_image() needs images of one size")
    n = len(imgs)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), background, np.uint8)
    for k, im in enumerate(imgs):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = im if im.ndim == 3 else im[..., None]
    return sheet
