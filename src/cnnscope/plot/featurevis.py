"""Feature-visualization figures: a labelled contact sheet and rows of layers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..batching import track
from .common import figure


def contact_sheet(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str] | None = None,
                  values: Sequence[float] | None = None, cols: int | None = None, title: str | None = None,
                  tile: float = 1.6, progress: bool = False) -> Figure:
    """A grid of rendered images, each titled with its label and (optionally) its activation.

    Args:
        images: ``uint8 [N, H, W, 3]``.
        labels: one short title per image.
        values: one number per image, printed under the label (``act 12.3``).
        cols: columns (default: about square).
        tile: inches per image.
        progress: show a tqdm bar of the tiles drawn (hundreds of channels take a while).
    """
    n = len(images)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = figure(cols * tile, rows * (tile + 0.35) + (0.4 if title else 0))
    for k in track(range(rows * cols), progress, "contact sheet", total=rows * cols, unit="tile"):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], interpolation="nearest")
        text = [labels[k]] if labels is not None else []
        if values is not None:
            text.append(f"act {values[k]:.3g}")
        if text:
            ax.set_title("\n".join(text), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def layer_rows(rows: Mapping[str, tuple[np.ndarray, Sequence[str]]], title: str | None = None,
               tile: float = 1.5) -> Figure:
    """One row per layer (shallow to deep): ``{row title: (uint8 [N, H, W, 3], labels)}``."""
    cols = max(len(imgs) for imgs, _ in rows.values())
    fig = figure(cols * tile + 1.2, len(rows) * (tile + 0.3) + (0.4 if title else 0))
    for r, (name, (imgs, labels)) in enumerate(rows.items()):
        for c in range(cols):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
                ax.set_title(labels[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def interpolation_strip(images: np.ndarray, t: Sequence[float], values_a: Sequence[float],
                        values_b: Sequence[float], labels: tuple[str, str], title: str | None = None,
                        tile: float = 1.6) -> Figure:
    """Frames of an interpolation (``uint8 [N, H, W, 3]``) in a row, over a plot of both objectives per frame."""
    n = len(images)
    fig = figure(n * tile, tile + 2.2 + (0.4 if title else 0))
    grid = fig.add_gridspec(2, n, height_ratios=[tile, 1.6])
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        ax.axis("off")
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(f"t={t[i]:.2f}", fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    ax.plot(t, values_a, "o-", label=f"a: {labels[0]}")
    ax.plot(t, values_b, "s-", label=f"b: {labels[1]}")
    ax.set_xlabel("t (b's share of the objective)", fontsize=8)
    ax.set_ylabel("value on the frame", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def dictionary_mosaic(top_units: np.ndarray, norms: np.ndarray, unit_images: dict[int, np.ndarray],
                      cell: int = 32) -> np.ndarray:
    """``uint8 [h * cell, w * cell, 3]``: each position's top unit's visualization, faded towards white by the
    position's activation norm relative to the largest (Building Blocks' semantic dictionary as one picture)."""
    from ..images import resize

    h, w = top_units.shape[:2]
    out = np.full((h * cell, w * cell, 3), 255, np.uint8)
    peak = float(norms.max()) or 1.0
    small = {u: resize(img, (cell, cell)).astype(float) for u, img in unit_images.items()}
    for r in range(h):
        for c in range(w):
            u = int(top_units[r, c, 0])
            if u not in small:
                continue
            alpha = float(norms[r, c]) / peak
            out[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = np.round(
                alpha * small[u] + (1 - alpha) * 255).astype(np.uint8)
    return out


def semantic_dictionary_figure(image: np.ndarray, top_units: np.ndarray, top_values: np.ndarray, norms: np.ndarray,
                               units: Sequence[int], unit_images: np.ndarray, title: str | None = None,
                               legend: int = 12) -> Figure:
    """The image with the layer's grid, the mosaic of each position's top unit (faded by activation norm), the
    top units' numbers per position (small grids) and the most frequent units' visualizations."""
    h, w, k = top_units.shape
    have = len(unit_images) > 0
    images = {u: unit_images[i] for i, u in enumerate(units)} if have else {}
    fig = figure(11, 5.6 + (0.4 if title else 0))
    grid = fig.add_gridspec(2, 3 if have else 2, height_ratios=[4, 1.2])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image)
    ih, iw = image.shape[:2]
    for r in range(1, h):
        ax.axhline(r * ih / h - 0.5, color="white", lw=0.4, alpha=0.7)
    for c in range(1, w):
        ax.axvline(c * iw / w - 0.5, color="white", lw=0.4, alpha=0.7)
    ax.set_title("image and the layer's positions", fontsize=8)
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 1])
    ax.imshow(norms, cmap="magma")
    if h * w <= 100:
        for r in range(h):
            for c in range(w):
                ax.text(c, r, "\n".join(str(int(u)) for u in top_units[r, c]), ha="center", va="center",
                        fontsize=max(3, 7 - k), color="cyan")
    ax.set_title(f"activation norm; top {k} channels per position", fontsize=8)
    ax.axis("off")
    if have:
        ax = fig.add_subplot(grid[0, 2])
        ax.imshow(dictionary_mosaic(top_units, norms, images))
        ax.set_title("top unit's visualization per position", fontsize=8)
        ax.axis("off")
        counts = np.bincount(top_units[..., 0].ravel(), minlength=max(units) + 1)
        shown = [u for u in np.argsort(-counts, kind="stable") if counts[u] > 0][:legend]
        sub = grid[1, :].subgridspec(1, max(len(shown), 1))
        for i, u in enumerate(shown):
            a = fig.add_subplot(sub[0, i])
            a.imshow(images[int(u)])
            a.set_title(f"ch {int(u)} ({counts[u]})", fontsize=7)
            a.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
