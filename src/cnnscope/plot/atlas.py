"""Figures of the atlas: a unit's activation histogram."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .common import figure


def unit_histogram(centers: np.ndarray, widths: np.ndarray, mass: np.ndarray, title: str = "",
                   mean: float | None = None, xlabel: str = "activation") -> Figure:
    """Bar chart of the fraction of positions per bin on a symmetric-log value axis.

    Args:
        centers, widths: bin centres and widths (``float [n]``), e.g. from ``cnnscope.dataset.histograms.density``.
        mass: fraction of all positions in each bin (``float [n]``).
        title: axes title.
        mean: draws a vertical line at the mean.
        xlabel: value axis label.

    Shape:
        - centers, widths, mass: ``[n]``.
    """
    fig = figure(4.2, 2.4, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    keep = mass > 0
    if keep.any():
        ax.bar(centers[keep], mass[keep], width=widths[keep], color="#2457c5", linewidth=0)
        # linear within 1% of the largest magnitude, logarithmic beyond: both tails stay readable
        ax.set_xscale("symlog", linthresh=max(0.01 * float(np.abs(centers[keep]).max()), 1e-6))
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if mean is not None and np.isfinite(mean):
        ax.axvline(mean, color="#d2402a", linewidth=1, label=f"mean {mean:.3g}")
        ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("fraction of positions", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
