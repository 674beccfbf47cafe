"""Figures of dataset and circuit analysis: example crops, activation spectra, weights, attribution, NMF."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..images import resize
from .common import figure, grid_image

POS, NEG = "#2457c5", "#d2402a"
BAND_COLORS = ("#1b7837", "#7fbf7b", "#d9a441", "#c2452d")


def _square(crops: Sequence[np.ndarray], side: int) -> list[np.ndarray]:
    return [resize(c, (side, side)) if c.shape[:2] != (side, side) else c for c in crops]


def _sheet(ax, crops: Sequence[np.ndarray], values: Sequence[float], title: str, side: int, cols: int) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if not len(crops):
        ax.text(0.5, 0.5, "no examples", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        return
    ax.imshow(grid_image(_square(crops, side), cols=cols, pad=2))
    for k, v in enumerate(values):
        r, c = divmod(k, cols)
        ax.text(2 + c * (side + 2) + 2, 2 + r * (side + 2) + side - 3, f"{v:.2f}", fontsize=5, color="white",
                bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.5, "linewidth": 0})


def examples_figure(top: Sequence[np.ndarray], top_values: Sequence[float], bottom: Sequence[np.ndarray] = (),
                    bottom_values: Sequence[float] = (), title: str = "", side: int = 64) -> Figure:
    """Contact sheets of a unit's strongest (and weakest) dataset examples, each labelled with its value.

    Args:
        top, bottom: ``uint8 [h, w, 3]`` crops, shown resized to ``side`` pixels.
        top_values, bottom_values: the unit's value at each example.
    """
    cols = max(1, int(np.ceil(np.sqrt(max(len(top), 1)))))
    panels = 2 if len(bottom) else 1
    fig = figure(2.6 * panels + 0.2, 2.9, dpi=110)
    _sheet(fig.add_subplot(1, panels, 1), top, top_values, "largest", side, cols)
    if panels == 2:
        _sheet(fig.add_subplot(1, 2, 2), bottom, bottom_values, "smallest", side,
               max(1, int(np.ceil(np.sqrt(len(bottom))))))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def spectrum_figure(spec, band_crops: Sequence[Sequence[np.ndarray]] | None = None, side: int = 40) -> Figure:
    """The article's activation spectrum of one unit (``spec``: :class:`cnnscope.dataset.spectrum.Spectrum`).

    Top: probability density of the values on a log scale (an exponential tail is a straight line), bands
    shaded. Middle: contribution to the expected rectified value, ``max(x, 0) p(x)``, with each band's share.
    Bottom (with ``band_crops``): random examples of each band.
    """
    rows = 3 if band_crops is not None else 2
    fig = figure(7.0, 2.2 * rows + 0.4, dpi=110)
    what = "pre-activation" if spec.pre_activation else "activation"
    x, dens, contrib = (t.numpy() for t in (spec.linear_centers, spec.linear_density, spec.linear_contribution))
    keep = dens > 0
    ax = fig.add_subplot(rows, 1, 1)
    for band, color in zip(spec.bands, BAND_COLORS):
        ax.axvspan(band.low, band.high, color=color, alpha=0.15, linewidth=0)
    ax.semilogy(x[keep], dens[keep], ".-", color=POS, markersize=3, linewidth=0.8)
    ax.axvline(0, color="#667085", linewidth=0.6)
    ax.set_ylabel("probability density", fontsize=8)
    ax.set_title(f"{spec.layer}:{spec.channel}  {what}s over {spec.images} images   mean {spec.mean:.3g}, std "
                 f"{spec.std:.3g}, {spec.fraction_positive:.1%} > 0", fontsize=8)
    ax.tick_params(labelsize=7)
    ax2 = fig.add_subplot(rows, 1, 2, sharex=ax)
    ax2.fill_between(x, contrib, step="mid", color=POS, alpha=0.6, linewidth=0)
    top = float(contrib.max()) if contrib.size and contrib.max() > 0 else 1.0
    for band, color in zip(spec.bands, BAND_COLORS):
        ax2.axvspan(band.low, band.high, color=color, alpha=0.15, linewidth=0)
        ax2.text((band.low + band.high) / 2, top * 0.95, f"{band.label}\n{band.fraction:.1%} of positions\n"
                 f"{band.contribution:.0%} of E[max(x,0)]", ha="center", va="top", fontsize=6)
    ax2.set_ylabel("x p(x)", fontsize=8)
    ax2.set_xlabel(what, fontsize=8)
    ax2.tick_params(labelsize=7)
    if band_crops is not None:
        n = max(len(spec.bands), 1)
        for i, (band, crops) in enumerate(zip(spec.bands, band_crops)):
            axb = fig.add_subplot(rows, n, 2 * n + i + 1)
            _sheet(axb, list(crops), [e.value for e in band.examples][:len(crops)],
                   f"{band.label} [{band.low:.2g}, {band.high:.2g})", side, 3)
    fig.tight_layout()
    return fig


def _kernel_grid(fig: Figure, kernels: np.ndarray, labels: Sequence[str], rows: int, cols: int, first: int = 1,
                 title_size: int = 6) -> None:
    vmax = float(np.abs(kernels).max()) or 1.0
    im = None
    for i, (k, lab) in enumerate(zip(kernels, labels)):
        ax = fig.add_subplot(rows, cols, first + i)
        im = ax.imshow(k, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(lab, fontsize=title_size)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.6).ax.tick_params(labelsize=6)


def weights_figure(conn, n: int = 16) -> Figure:
    """A unit's incoming weights (``conn``: :class:`cnnscope.dataset.circuits.Connection`), strongest first: kernel
    heatmaps on one symmetric colour scale, or a signed bar chart for a pointwise (1x1) convolution."""
    order = conn.ranked(n)
    w = conn.weights[order].numpy()
    norms = conn.norms.tolist()
    labels = [f"in {int(conn.inputs[i])}\n|w| {norms[i]:.2f}" for i in order]
    title = f"{conn.layer}:{conn.channel} from {conn.conv}" + (f" (+{conn.norm} folded)" if conn.norm else "")
    if w.shape[1] * w.shape[2] == 1:
        fig = figure(max(3.5, 0.4 * len(order) + 1.5), 2.6, dpi=110)
        ax = fig.add_subplot(1, 1, 1)
        vals = w.reshape(-1)
        ax.bar(range(len(vals)), vals, color=[NEG if v < 0 else POS for v in vals])
        ax.axhline(0, color="#667085", linewidth=0.6)
        ax.set_xticks(range(len(vals)), [str(int(conn.inputs[i])) for i in order], fontsize=6, rotation=60)
        ax.set_xlabel("input channel (by |weight|)", fontsize=8)
        ax.set_ylabel("weight", fontsize=8)
        ax.set_title(title, fontsize=8)
        fig.tight_layout()
        return fig
    cols = min(8, len(order))
    rows = int(np.ceil(len(order) / cols))
    fig = figure(1.05 * cols + 0.8, 1.25 * rows + 0.5, dpi=110)
    _kernel_grid(fig, w, labels, rows, cols)
    fig.suptitle(title, fontsize=8)
    return fig


def attribution_figure(image: np.ndarray, attr, box: tuple[int, int, int, int] | None = None, n: int = 12
                       ) -> Figure:
    """Activation x weight attribution of a unit on an image (``attr``: :class:`cnnscope.dataset.circuits.Attribution`):
    the image with the unit's receptive field ``box`` (without one, a cross at the centre of the unit's grid cell),
    the top contributing previous-layer channels (signed bars), and the spatial attribution of the strongest ones
    when the kernel is larger than 1x1."""
    conn = attr.connection
    top = attr.top(n)
    tensor = attr.tensor.cpu().numpy()
    spatial = tensor.shape[1] * tensor.shape[2] > 1
    fig = figure(9.0 if spatial else 7.0, 3.0, dpi=110)
    ax = fig.add_subplot(1, 3 if spatial else 2, 1)
    ax.imshow(image)
    if box is not None:
        t, left, b, r = box
        ax.add_patch(Rectangle((left - 0.5, t - 0.5), r - left, b - t, fill=False, edgecolor="yellow",
                               linewidth=1.5))
    elif min(attr.grid) > 0:  # no receptive field given: mark the centre of the unit's grid cell
        gy = (attr.position[0] + 0.5) * image.shape[0] / attr.grid[0]
        gx = (attr.position[1] + 0.5) * image.shape[1] / attr.grid[1]
        ax.plot([gx], [gy], marker="+", color="yellow", markersize=14, markeredgewidth=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{conn.layer}:{conn.channel} at {attr.position}\nvalue {attr.value:.3g} = bias "
                 f"{conn.bias:.3g} + {float(attr.contributions.sum()):.3g}", fontsize=7)
    ax2 = fig.add_subplot(1, 3 if spatial else 2, 2)
    vals = [v for _, v in top]
    ax2.barh(range(len(top)), vals, color=[NEG if v < 0 else POS for v in vals])
    ax2.set_yticks(range(len(top)), [str(c) for c, _ in top], fontsize=6)
    ax2.invert_yaxis()
    ax2.axvline(0, color="#667085", linewidth=0.6)
    ax2.set_xlabel("contribution (W x h_prev)", fontsize=7)
    ax2.set_ylabel(f"{conn.conv} input channel", fontsize=7)
    ax2.tick_params(labelsize=6)
    if spatial:
        k = min(4, len(top))
        index = {c: i for i, c in enumerate(conn.inputs.tolist())}
        tensors = np.stack([tensor[index[c]] for c, _ in top[:k]])
        vmax = float(np.abs(tensors).max()) or 1.0
        for i in range(k):
            axk = fig.add_subplot(2, 6, 5 + (i % 2) + 6 * (i // 2))
            axk.imshow(tensors[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            axk.set_xticks([])
            axk.set_yticks([])
            axk.set_title(f"in {top[i][0]}", fontsize=6)
    fig.tight_layout()
    return fig


def expanded_figure(ew, n: int = 16) -> Figure:
    """Expanded weights (``ew``: :class:`cnnscope.dataset.circuits.ExpandedWeights`), strongest earlier channels."""
    order = np.argsort(-ew.norms.numpy(), kind="stable")[:n]
    cols = min(8, len(order))
    rows = int(np.ceil(len(order) / cols))
    fig = figure(1.05 * cols + 0.8, 1.25 * rows + 0.5, dpi=110)
    _kernel_grid(fig, ew.window.numpy()[order], [f"{ew.from_layer}:{i}" for i in order], rows, cols, title_size=5)
    fig.suptitle(f"expanded weights {ew.from_layer} -> {ew.layer}:{ew.channel} at {ew.position} (linearised)",
                 fontsize=8)
    return fig


def nmf_figure(factors, n: int = 6) -> Figure:
    """NMF of one image (``factors``: :class:`cnnscope.dataset.factorize.ImageFactors`): the image, the groups'
    coloured spatial map over it, and each group's strongest channel loadings."""
    from ..dataset.factorize import palette

    k = factors.k
    colors = palette(k)
    fig = figure(4.8 + 1.6 * min(k, 6), 3.0, dpi=110)
    panels = [("image", factors.image), ("where each group is active", factors.colored_map(factors.image.shape[:2])),
              (f"{k} groups at {factors.layer}\nrel. error {factors.relative_error:.2f}", factors.overlay(0.7))]
    for i, (title, img) in enumerate(panels):
        ax = fig.add_subplot(1, 3 + k, i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_axis_off()
    for g in range(k):
        top = factors.top_channels(g, n)
        axg = fig.add_subplot(1, 3 + k, 4 + g)
        axg.barh(range(len(top)), [v for _, v in top], color=colors[g])
        axg.set_yticks(range(len(top)), [str(c) for c, _ in top], fontsize=6)
        axg.invert_yaxis()
        axg.tick_params(axis="x", labelsize=5)
        axg.set_title(f"group {g}", fontsize=7, color=colors[g])
    fig.tight_layout()
    return fig


def groups_figure(groups, n: int = 8) -> Figure:
    """Neuron groups found over many images (``groups``: :class:`cnnscope.dataset.factorize.NeuronGroups`)."""
    from ..dataset.factorize import palette

    k = groups.k
    colors = palette(k)
    fig = figure(1.7 * k + 0.6, 2.6, dpi=110)
    for g in range(k):
        top = groups.top_channels(g, n)
        ax = fig.add_subplot(1, k, g + 1)
        ax.barh(range(len(top)), [v for _, v in top], color=colors[g])
        ax.set_yticks(range(len(top)), [str(c) for c, _ in top], fontsize=6)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=5)
        ax.set_title(f"group {g}", fontsize=7, color=colors[g])
    fig.suptitle(f"{k} neuron groups of {groups.layer} over {groups.images} images ({groups.positions} positions, "
                 f"rel. error {groups.relative_error:.2f})", fontsize=8)
    fig.tight_layout()
    return fig
