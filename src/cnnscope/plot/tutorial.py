"""Figures of the small-CNN tutorial's views: parameter gradients (:mod:`cnnscope.zf.param_grads`) and the
feature space (:mod:`cnnscope.zf.feature_space`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .boundary import _np, class_legend, draw_regions, mark_points
from .common import figure, grid_image


def gradient_filters(grad, side: int = 24) -> np.ndarray:
    """The first convolution's gradient as pictures: ``uint8 [O, side, side, 3]``, one per filter, each scaled
    to its own max |g| (grey = 0; RGB for 3 input channels, grey levels for 1, the norm over channels
    otherwise)."""
    g = _np(grad).astype(np.float64)
    if g.shape[1] not in (1, 3):
        g = np.sqrt((g ** 2).sum(1, keepdims=True))
    peak = np.abs(g).reshape(len(g), -1).max(1).reshape(-1, 1, 1, 1)
    g = 0.5 + 0.5 * g / np.where(peak > 0, peak, 1.0)
    g = np.repeat(g, 3, axis=1) if g.shape[1] == 1 else g
    k = max(1, side // max(g.shape[2:]))
    pics = np.kron(g.transpose(0, 2, 3, 1), np.ones((1, k, k, 1)))
    return np.clip(np.round(pics * 255), 0, 255).astype(np.uint8)


def param_grads_figure(grads, *, max_heatmaps: int = 4, max_filters: int = 64) -> Figure:
    """Per-layer gradient norms (absolute and relative to the weights), per-filter gradient heatmaps of a few
    convolutions along the depth, and the first convolution's gradient as one picture per filter.

    Args:
        grads: a :class:`cnnscope.zf.param_grads.ParameterGradients`.
        max_heatmaps: convolutions shown as ``[out, in]`` heatmaps (spread evenly from first to last).
        max_filters: filters of the first convolution shown.
    """
    rows = grads.layer_table()
    convs = list(grads.filter_norms)
    pick = [convs[int(round(i))] for i in np.linspace(0, len(convs) - 1, min(max_heatmaps, len(convs)))] \
        if convs else []
    pick = list(dict.fromkeys(pick))
    ncols = max(len(pick), 1) + (1 if grads.first_grad is not None else 0)
    fig = figure(max(10.0, 3.2 * ncols), 7.5)
    gs = fig.add_gridspec(2, ncols, height_ratios=[1.0, 1.3])
    ax = fig.add_subplot(gs[0, :])
    idx = np.arange(len(rows))
    g = np.array([r["grad_norm"] for r in rows])
    rel = np.array([r["relative"] for r in rows], dtype=float)
    ax.semilogy(idx, np.where(g > 0, g, np.nan), "o-", ms=3, label="|gradient|")
    ax.semilogy(idx, np.where(rel > 0, rel, np.nan), "s-", ms=3, label="|gradient| / |weights|")
    step = max(1, len(rows) // 30)
    ax.set_xticks(idx[::step], [r["layer"] or "(root)" for r in rows][::step], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("L2 norm")
    ax.legend(fontsize=8)
    ax.set_title(f"gradient of the {grads.score} of {grads.target[0]}"
                 + (f" (+{len(grads.target) - 1} images, mean)" if len(grads.target) > 1 else "") + " per layer",
                 fontsize=9)
    for c, name in enumerate(pick):
        a = fig.add_subplot(gs[1, c])
        im = a.imshow(_np(grads.filter_norms[name]), cmap="magma", aspect="auto", interpolation="nearest")
        a.set(title=name, xlabel="input channel", ylabel="filter")
        a.title.set_fontsize(8)
        fig.colorbar(im, ax=a, fraction=0.046, pad=0.04)
    if grads.first_grad is not None:
        a = fig.add_subplot(gs[1, ncols - 1])
        pics = gradient_filters(grads.first_grad[:max_filters])
        a.imshow(grid_image(list(pics), pad=1, background=255))
        a.set_title(f"{grads.first_layer}: gradient per filter\n(grey = 0, each scaled to its max)", fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig


def feature_space_figure(space, *, legend: Sequence[dict] | None = None, max_names: int = 40) -> Figure:
    """The images in the PCA plane of their penultimate features over the head's class regions (every class on
    the plane named in the legend, each in its own colour), each image marked with its predicted class.

    Args:
        space: a :class:`cnnscope.zf.feature_space.FeatureSpace`.
        legend: the legend to draw (default :func:`~cnnscope.plot.boundary.class_legend` with the predicted classes
            required).
        max_names: images named on the plot (the first ones); the others are marked only.
    """
    preds = [int(c) for c in _np(space.predictions)]
    if legend is None:
        legend = class_legend(space.classes, space.labels, required=preds)
    xs, ys = _np(space.xs), _np(space.ys)
    wide = len(legend) > 30
    fig = figure(13.0 if wide else 10.5, 5.5)
    ax, ax_l = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 0.8 if wide else 0.45]})
    draw_regions(ax, space.classes, legend, (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])),
                 legend_ax=ax_l)
    coords = _np(space.coords)
    named = [(n if i < max_names else "", float(x), float(y)) for i, (n, (x, y)) in enumerate(zip(space.names,
                                                                                                  coords))]
    mark_points(ax, named, preds, legend)
    ev = _np(space.explained)
    ax.set(xlabel=f"PC 1 ({ev[0]:.0%} of the variance)", ylabel=f"PC 2 ({ev[1]:.0%})")
    ax.set_title(f"{space.layer} features -> {space.head}: regions on the PCA plane; "
                 f"{space.agreement:.0%} of the images in their own class's region", fontsize=9)
    return fig
