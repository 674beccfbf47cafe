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


def circuit_figure(weights: np.ndarray, labels: list[str], title: str = "") -> Figure:
    """The strongest incoming kernels of a unit: signed heatmaps on one symmetric colour scale, or a signed bar
    chart when the kernels are 1x1 (pointwise convolutions).

    Args:
        weights: ``float [k, kh, kw]`` kernels, strongest first.
        labels: one caption per kernel (e.g. ``"blocks.3:17"``).
        title: figure title.

    Shape:
        - weights: ``[k, kh, kw]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    k = len(w)
    vmax = float(np.abs(w).max()) or 1.0
    if w.shape[1] * w.shape[2] == 1:
        fig = figure(max(3.0, 0.45 * k + 1.2), 2.4, dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        vals = w.reshape(k)
        ax.bar(range(k), vals, color=["#d2402a" if v < 0 else "#2457c5" for v in vals])
        ax.axhline(0, color="#667085", linewidth=0.8)
        ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("weight", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        return fig
    fig = figure(1.1 * k + 0.6, 1.6, dpi=100)
    im = None
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        im = ax.imshow(w[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(labels[i], fontsize=6)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.7).ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return fig
