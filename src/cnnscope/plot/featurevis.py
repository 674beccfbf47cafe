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
