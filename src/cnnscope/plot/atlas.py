"""Figures of the atlas: a unit's activation histogram and its strongest incoming kernels.

Both are drawn for their display size on the unit page (stored at 80 dpi): text at least 8 pt (about 9 pixels),
tick labels that never overlap (the histogram keeps at most :data:`MAX_TICKS` value ticks), and kernel captions
that name the unit only (the source layer is said once, in the title)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator, SymmetricalLogLocator

from .common import figure

#: value ticks on a histogram's symmetric-log axis at most
MAX_TICKS = 7


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
    fig = figure(5.0, 2.8, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    keep = mass > 0
    if keep.any():
        ax.bar(centers[keep], mass[keep], width=widths[keep], color="#2457c5", linewidth=0)
        # linear within 1% of the largest magnitude, logarithmic beyond: both tails stay readable
        linthresh = max(0.01 * float(np.abs(centers[keep]).max()), 1e-6)
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.xaxis.set_major_locator(_SparseSymlog(ax.xaxis.get_transform(), subs=[1.0]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if mean is not None and np.isfinite(mean):
        ax.axvline(mean, color="#d2402a", linewidth=1, label=f"mean {mean:.3g}")
        ax.legend(fontsize=8, frameon=False, loc="upper right")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("fraction of positions", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class _SparseSymlog(SymmetricalLogLocator):
    """Decade ticks of a symmetric-log axis, thinned to at most :data:`MAX_TICKS` (every other decade, ...)."""

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        ticks = np.asarray(super().tick_values(vmin, vmax))
        ticks = ticks[(ticks >= min(vmin, vmax)) & (ticks <= max(vmin, vmax))]
        if len(ticks) <= MAX_TICKS:
            return ticks
        step = int(np.ceil(len(ticks) / MAX_TICKS))
        zero = int(np.argmin(np.abs(ticks)))  # keep 0 (or the tick nearest it) and thin outwards from it
        keep = [i for i in range(len(ticks)) if (i - zero) % step == 0]
        return ticks[keep]


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
        ax.set_xticks(range(k), [_short(t) for t in labels], rotation=60 if k > 12 else 0,
                      ha="right" if k > 12 else "center", fontsize=8)
        ax.set_xlabel("input unit", fontsize=8)
        ax.set_ylabel("weight", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        return fig
    fig = figure(1.25 * k + 0.9, 2.1, dpi=100)
    im = None
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        im = ax.imshow(w[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_short(labels[i]), fontsize=8)
        ax.set_xlabel(f"{w[i].sum():+.2g}", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.7).ax.tick_params(labelsize=8)
    fig.suptitle(title + "\n(below each kernel: its sum, the signed weight)", fontsize=9)
    return fig


def _short(label: str) -> str:
    """``"blocks.3.2.bn1.act:17"`` -> ``"17"`` (the layer is in the title); other captions as given."""
    head, _, unit = label.rpartition(":")
    return unit if head and unit.isdigit() else label
