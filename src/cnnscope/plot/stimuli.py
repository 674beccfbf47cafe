"""Figures of the stimuli area: stimulus sheets, orientation x radius heatmaps, radial (polar) tuning curves,
joint tuning curves and family overviews (Cammarata et al., *Curve Detectors*, Distill 2020).

Every function returns an Agg ``Figure``; save it with :func:`cnnscope.plot.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from .common import figure, grid_image


def _hue(orientations: np.ndarray, period: float) -> np.ndarray:
    """One colour per orientation, cycling with the period (so neighbours in orientation look alike)."""
    from matplotlib import colormaps

    return colormaps["hsv"]((np.asarray(orientations, float) % period) / period)


def _every(n: int, max_ticks: int) -> np.ndarray:
    """Evenly spaced tick indices ``0, k, 2k, ...`` below ``n`` (at most about ``max_ticks``)."""
    return np.arange(0, n, max(1, math.ceil(n / max_ticks)))


def _levels_ticks(ax, levels: np.ndarray, axis: str = "y", max_ticks: int = 8) -> None:
    idx = _every(len(levels), max_ticks)
    labels = [f"{levels[i]:.3g}" for i in idx]
    if axis == "y":
        ax.set_yticks(idx, labels)
    else:
        ax.set_xticks(idx, labels)


def stimulus_sheet(images: np.ndarray, orientations: Sequence[float], levels: Sequence[float], param: str = "radius",
                   max_columns: int = 24) -> Figure:
    """Contact sheet of a stimulus grid, one row per level of ``param`` and one column per orientation.

    Shape:
        - images: ``[P * O, H, W, 3]`` floats in [0, 1] or uint8, rows of ``O`` orientations per level.
    """
    o, p = len(orientations), len(levels)
    imgs = np.asarray(images)
    if imgs.shape[0] != o * p:
        raise ValueError(f"stimulus_sheet() got {imgs.shape[0]} images for {p} levels x {o} orientations")
    if imgs.dtype != np.uint8:
        imgs = np.clip(np.round(imgs * 255.0), 0, 255).astype(np.uint8)
    step = max(1, math.ceil(o / max_columns))
    cols = list(range(0, o, step))
    chosen = [imgs[r * o + c] for r in range(p) for c in cols]
    sheet = grid_image(chosen, cols=len(cols), pad=2, background=170)
    h, w = imgs.shape[1:3]
    fig = figure(min(18.0, 0.6 * len(cols) + 1.5), min(14.0, 0.6 * p + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(sheet)
    ax.set_xticks([2 + k * (w + 2) + w / 2 for k in range(len(cols))], [f"{orientations[c]:g}" for c in cols],
                  fontsize=7)
    ax.set_yticks([2 + k * (h + 2) + h / 2 for k in range(p)], [f"{v:.3g}" for v in levels], fontsize=7)
    ax.set_xlabel("orientation (degrees)")
    ax.set_ylabel(param)
    return fig


def tuning_heatmaps(values: np.ndarray, orientations: Sequence[float], levels: Sequence[float],
                    channels: Sequence[int], *, param: str = "radius", in_std: bool = False, layer: str = "",
                    cols: int = 4) -> Figure:
    """One orientation x ``param`` heatmap per channel, diverging around 0 (the dataset mean when ``in_std``).

    Shape:
        - values: ``[U, P, O]``.
    """
    v = np.asarray(values, float)
    n = len(channels)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = figure(3.2 * cols + 0.6, 2.6 * rows + 0.4)
    vmax = float(np.abs(v).max()) or 1.0
    lo = float(v.min())
    norm = TwoSlopeNorm(0.0, min(lo, -1e-6), max(vmax, 1e-6)) if lo < 0 else Normalize(0.0, vmax)
    orient = np.asarray(orientations, float)
    im = None
    for k, channel in enumerate(channels):
        ax = fig.add_subplot(rows, cols, k + 1)
        im = ax.imshow(v[k], aspect="auto", origin="lower", cmap="RdBu_r", norm=norm, interpolation="nearest")
        ticks = _every(len(orient), 6)
        ax.set_xticks(ticks, [f"{orient[i]:g}" for i in ticks], fontsize=7)
        _levels_ticks(ax, np.asarray(levels, float))
        ax.tick_params(labelsize=7)
        ax.set_title(f"{layer}:{channel}" if layer else f"channel {channel}", fontsize=9)
        if k % cols == 0:
            ax.set_ylabel(param, fontsize=8)
        if k >= n - cols:
            ax.set_xlabel("orientation (deg)", fontsize=8)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    if im is not None:
        bar = fig.colorbar(im, ax=fig.axes, shrink=0.8)
        bar.set_label("std above dataset mean" if in_std else "activation")
    return fig


def radial_tuning_figure(curves: np.ndarray, orientations: Sequence[float], channels: Sequence[int], *,
                         preferred: Sequence[float] | None = None, normalize: bool = True, period: float = 360.0,
                         title: str = "") -> Figure:
    """Radial tuning curves of several channels around one circle (the article's polar plots).

    Each channel is one closed curve, coloured by its preferred orientation; with ``normalize`` every curve is
    scaled to its own peak so weak and strong channels share the circle.

    Shape:
        - curves: ``[U, O]`` non-negative responses.
    """
    c = np.maximum(np.asarray(curves, float), 0.0)
    if normalize:
        c = c / np.maximum(c.max(axis=1, keepdims=True), 1e-12)
    theta = np.radians(np.asarray(orientations, float))
    pref = np.asarray(preferred if preferred is not None else np.asarray(orientations)[c.argmax(axis=1)], float)
    colors = _hue(pref, period)
    fig = figure(5.5, 5.5)
    ax = fig.add_subplot(1, 1, 1, projection="polar")
    closed = np.append(theta, theta[:1] + 2 * np.pi)
    for k, channel in enumerate(channels):
        ax.plot(closed, np.append(c[k], c[k, :1]), color=colors[k], lw=1.5, label=str(channel))
    ax.set_yticklabels([])
    if len(channels) <= 16:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="channel", title_fontsize=8)
    ax.set_title(title or ("radial tuning (each channel scaled to its peak)" if normalize else "radial tuning"),
                 fontsize=10)
    return fig


def joint_tuning_figure(angles: np.ndarray, curves: np.ndarray, sources: Sequence[int], channels: Sequence[int], *,
                        orientations: Sequence[float] | None = None, in_std: bool = False,
                        aligned: bool = True, cols: int = 4) -> Figure:
    """Joint tuning curves: for each source channel's rotated examples, every recorded channel's mean response.

    ``orientations``: each recorded channel's preferred orientation (its colour).

    Shape:
        - angles: ``[A]`` degrees; curves: ``[S, A, U]``.
    """
    a = np.asarray(angles, float)
    curves = np.asarray(curves, float)
    wrapped = (a + 180.0) % 360.0 - 180.0
    order = np.argsort(wrapped)
    s = len(sources)
    cols = max(1, min(cols, s))
    rows = math.ceil(s / cols)
    fig = figure(3.4 * cols + 1.4, 2.5 * rows + 0.4)
    pref = np.asarray(orientations, float) if orientations is not None else \
        np.linspace(0.0, 360.0, len(channels), endpoint=False)
    colors = _hue(pref, 360.0)
    for k, src in enumerate(sources):
        ax = fig.add_subplot(rows, cols, k + 1)
        for j, channel in enumerate(channels):
            lw = 2.2 if channel == src else 1.0
            ax.plot(wrapped[order], curves[k][order, j], color=colors[j], lw=lw, label=str(channel))
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(f"examples of channel {src}", fontsize=9)
        ax.set_xticks([-180, -90, 0, 90, 180])
        ax.tick_params(labelsize=7)
        if k >= s - cols:
            ax.set_xlabel("rotation from peak (deg)" if aligned else "rotation (deg)", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel("std above mean" if in_std else "activation", fontsize=8)
    if len(channels) <= 16 and fig.axes:
        fig.axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="channel",
                            title_fontsize=8)
    return fig


def family_figure(channels: Sequence[int], preferred: Sequence[float], strength: Sequence[float],
                  selectivity: Sequence[float], radial: np.ndarray, orientations: Sequence[float], *,
                  layer: str = "", period: float = 360.0) -> Figure:
    """A family overview: its radial tuning curves on one circle, and each member's strength and selectivity.

    Shape:
        - radial: ``[K, O]``.
    """
    fig = figure(10.5, 4.6)
    ax = fig.add_subplot(1, 2, 1, projection="polar")
    c = np.maximum(np.asarray(radial, float), 0.0)
    c = c / np.maximum(c.max(axis=1, keepdims=True), 1e-12)
    theta = np.radians(np.asarray(orientations, float))
    closed = np.append(theta, theta[:1] + 2 * np.pi)
    colors = _hue(np.asarray(preferred, float), period)
    for k in range(len(channels)):
        ax.plot(closed, np.append(c[k], c[k, :1]), color=colors[k], lw=1.4)
    ax.set_yticklabels([])
    ax.set_title(f"{layer} family: {len(channels)} channels" if layer else f"family: {len(channels)} channels",
                 fontsize=10)
    bx = fig.add_subplot(1, 2, 2)
    x = np.arange(len(channels))
    bx.bar(x, np.asarray(strength, float), color=colors)
    bx.set_xticks(x, [f"{u}\n{p:g}°" for u, p in zip(channels, np.asarray(preferred, float))], fontsize=7)
    bx.set_ylabel("strength (selectivity x depth)", fontsize=8)
    for k, s in enumerate(selectivity):
        bx.text(k, 0, f"{s:.2f}", ha="center", va="bottom", fontsize=6, rotation=90, color="white")
    bx.set_xlabel("channel / preferred orientation (ordered by orientation)", fontsize=8)
    return fig


def tuning_report_figures(report) -> dict[str, Figure]:
    """The figures of a :class:`cnnscope.stimuli.TuningReport`: ``heatmaps``, ``radial``, ``family`` and, with
    joint tuning curves, ``joint``."""
    tmap, fam = report.tuning, report.family
    channels = fam.channels
    shown = tmap.values[[tmap.index(c) for c in channels]]
    figs = {"heatmaps": tuning_heatmaps(shown, tmap.orientations, tmap.levels, channels, param=tmap.param,
                                        in_std=tmap.in_std, layer=report.layer),
            "radial": radial_tuning_figure(fam.radial, fam.orientations, channels, preferred=fam.stats.preferred,
                                           period=fam.period),
            "family": family_figure(channels, fam.stats.preferred, fam.stats.strength, fam.stats.selectivity,
                                    fam.radial, fam.orientations, layer=report.layer, period=fam.period)}
    if report.joint is not None:
        jt = report.joint
        recorded = jt.channels.tolist()
        pref = [float(fam.stats.preferred[channels.index(c)]) for c in recorded]
        figs["joint"] = joint_tuning_figure(jt.angles, jt.curves, jt.sources.tolist(), recorded, orientations=pref,
                                            in_std=jt.in_std, aligned=jt.aligned)
    return figs


def _curve_grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def edit_figure(effect, reduce: str = "max", cols: int = 4, max_channels: int = 16) -> Figure:
    """Tuning before and after a circuit edit (``effect``: :class:`cnnscope.stimuli.editing.EditEffect`): per
    channel, the response against orientation (reduced over the swept parameter, raw values), before (solid) and
    after (dashed)."""
    before = np.asarray(effect.before.raw, float)
    after = np.asarray(effect.after.raw, float)
    red = (lambda v: v.max(axis=1)) if reduce == "max" else (lambda v: v.mean(axis=1))
    b, a = red(before)[:max_channels], red(after)[:max_channels]
    channels = effect.before.channels.tolist()[:max_channels]
    o = np.asarray(effect.before.orientations, float)
    rows, cols = _curve_grid(len(channels), cols)
    fig = figure(3.0 * cols + 0.6, 2.3 * rows + 0.8)
    change = effect.change().tolist()
    for k, channel in enumerate(channels):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(o, b[k], color="#344054", lw=1.5, label="before")
        ax.plot(o, a[k], color="#d2402a", lw=1.5, ls="--", label="after")
        ax.axhline(0, color="#98a2b3", lw=0.5)
        ax.set_title(f"{effect.before.layer}:{channel} (change {change[k]:.0%})", fontsize=8)
        ax.tick_params(labelsize=6)
        if k == 0:
            ax.legend(fontsize=6)
    edits = [f"ablate {name}:{','.join(map(str, ch))}" for name, ch in effect.ablate.items()]
    edits += [f"weight {w}" for w in effect.weights]
    fig.suptitle(f"{effect.before.kind} tuning ({reduce} over {effect.before.param}) before / after: "
                 + "; ".join(edits), fontsize=8)
    fig.tight_layout()
    return fig


#: one colour per unit class of :func:`cnnscope.stimuli.families.classify_units`
CLASS_COLORS = {"curve": "#2457c5", "double": "#d2402a", "echo": "#e0a100", "concentric": "#12805c",
                "unselective": "#98a2b3"}


def unit_classes_figure(tmap, classes, reduce: str = "max", cols: int = 6, max_channels: int = 48) -> Figure:
    """Each channel's radial tuning curve (polar, scaled to its peak) coloured and titled by its class
    (``classes``: :class:`cnnscope.stimuli.families.UnitClasses` of ``tmap``)."""
    curves = np.nan_to_num(np.asarray(tmap.radial(reduce=reduce, positive=True), float))[:max_channels]
    theta = np.radians(np.asarray(tmap.orientations, float))
    closed = np.append(theta, theta[:1] + 2 * np.pi)
    channels = tmap.channels.tolist()[:max_channels]
    rows, cols = _curve_grid(len(channels), cols)
    fig = figure(1.9 * cols + 0.4, 2.1 * rows + 0.6)
    for k, channel in enumerate(channels):
        label = classes.labels[k]
        c = curves[k] / max(curves[k].max(), 1e-12)
        ax = fig.add_subplot(rows, cols, k + 1, projection="polar")
        ax.plot(closed, np.append(c, c[:1]), color=CLASS_COLORS.get(label, "#344054"), lw=1.4)
        ax.set_yticklabels([])
        ax.set_xticklabels([])
        ax.set_title(f"{channel}: {label}", fontsize=7, color=CLASS_COLORS.get(label, "#344054"))
    counts = ", ".join(f"{n} {lab}" for lab, n in classes.counts().items() if n)
    fig.suptitle(f"{tmap.layer}: {counts}", fontsize=9)
    fig.tight_layout()
    return fig
