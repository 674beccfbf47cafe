"""Figures of the curve analyses: the spline curve a unit prefers, curves traced in an image beside Canny edges,
weight-level equivariance, and the hand-built curve network's tuning beside learned units' (Cammarata et al.,
*Curve Detectors*, Distill 2020).

Every function returns an Agg ``Figure``; save it with :func:`cnnscope.plot.save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .common import figure
from .stimuli import _hue


def _to_pixels(xy: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(x right, y up)`` around the image centre -> imshow coordinates (column, row of pixel centres)."""
    h, w = size
    return xy[..., 0] + w / 2 - 0.5, h / 2 - xy[..., 1] - 0.5


def preferred_curve_figure(pc) -> Figure:
    """The preferred curve (:class:`~cnnscope.stimuli.spline.PreferredCurve`): the picture with its control polygon
    and the unit's centre, and the activation over the optimisation steps."""
    size = pc.picture.shape[:2]
    fig = figure(9.0, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(pc.picture)
    cx, cy = _to_pixels(pc.control.numpy(), size)
    ax.plot(cx, cy, "o--", color="tab:orange", lw=1, ms=4, label="control points")
    ux, uy = _to_pixels(np.asarray(pc.centre), size)
    ax.plot([ux], [uy], "+", color="tab:red", ms=12, mew=2, label="unit's centre")
    g = pc.geometry
    ax.set_title(f"{pc.unit}\norientation {g['orientation']:.1f} deg, radius {g['radius']:.3g} px, "
                 f"width {pc.width:.2g} px", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_axis_off()
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(np.arange(1, len(pc.history) + 1), pc.history.numpy(), color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("activation (best start)")
    ax.set_title(f"final {pc.value:.4g}; starts: {', '.join(f'{v:.3g}' for v in pc.values.tolist()[:8])}",
                 fontsize=9)
    return fig


def traces_figure(image: np.ndarray, traces, edges: np.ndarray | None = None, scores: dict | None = None) -> Figure:
    """Traced curves (:class:`~cnnscope.stimuli.tracing.Traces`) over the image, the family's strength map with
    its orientation, and the Canny edges with the traces on top."""
    panels = 3 if edges is not None else 2
    fig = figure(4.2 * panels, 4.6)
    colors = _hue(np.linspace(0, 360, max(len(traces.polylines), 1), endpoint=False), 360.0)
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(image)
    for k, line in enumerate(traces.polylines):
        ax.plot(line[:, 1], line[:, 0], color=colors[k], lw=1.5)
    ax.set_title(f"{len(traces.polylines)} traced curves ({traces.layer})", fontsize=9)
    ax.set_axis_off()
    ax = fig.add_subplot(1, panels, 2)
    s = traces.maps.strength.numpy()
    hue = _hue(traces.maps.orientation.numpy(), 360.0)[..., :3]
    level = np.clip(s / max(float(np.nanmax(s)), 1e-12), 0, 1)[..., None]
    ax.imshow(hue * level)
    ax.set_title("family response (hue: orientation)", fontsize=9)
    ax.set_axis_off()
    if edges is not None:
        ax = fig.add_subplot(1, panels, 3)
        ax.imshow(edges, cmap="gray")
        for line in traces.polylines:
            ax.plot(line[:, 1], line[:, 0], color="tab:orange", lw=1)
        title = "Canny edges and traces"
        if scores:
            title += (f"\ntraced near an edge {scores['traced_near_edge']:.0%}, edges near a trace "
                      f"{scores['edge_near_trace']:.0%} (within {scores['distance']:g} px)")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return fig


def equivariance_figure(eq, kernels: np.ndarray | None = None) -> Figure:
    """Weight-level equivariance (:class:`~cnnscope.stimuli.equivariance.Equivariance`): per pair of neighbours,
    the correlation after rotating by the step and without; the members' kernels (summed over inputs) below.

    Shape:
        - kernels: ``[K, k, k]`` in ``eq.channels`` order, optional.
    """
    rows = 2 if kernels is not None else 1
    fig = figure(max(6.0, 0.6 * len(eq.channels) + 2), 3.6 * rows)
    ax = fig.add_subplot(rows, 1, 1)
    x = np.arange(len(eq.correlation))
    ax.bar(x - 0.2, eq.correlation.numpy(), 0.4, label="rotated by the step", color="tab:blue")
    ax.bar(x + 0.2, eq.unrotated.numpy(), 0.4, label="not rotated", color="tab:gray")
    ax.set_xticks(x, [f"{a}->{b}\n{s:+.0f}" for (a, b), s in zip(eq.pairs(), eq.steps.tolist())], fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("kernel correlation")
    ax.set_title(f"{eq.layer}: weight-level equivariance, mean {eq.mean:.3f}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    if kernels is not None:
        k = np.asarray(kernels, float)
        for i, (kern, o) in enumerate(zip(k, eq.orientations)):
            a = fig.add_subplot(rows, len(k), len(k) + i + 1)
            lim = max(float(np.abs(kern).max()), 1e-12)
            a.imshow(kern, cmap="RdBu_r", vmin=-lim, vmax=lim)
            a.set_title(f"{eq.channels[i]}\n{o:.0f} deg", fontsize=7)
            a.set_axis_off()
    return fig


def tuning_comparison_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[int], Sequence[float]]]
                             ) -> Figure:
    """Radial tuning curves side by side (e.g. the hand-built curve network's and a learned family's).

    Args:
        panels: ``(title, curves [U, O], orientations [O], channels, preferred)`` per polar panel; each curve is
            scaled to its own peak and coloured by its preferred orientation.
    """
    fig = figure(5.0 * len(panels), 5.0)
    for k, (title, curves, orientations, channels, preferred) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1, projection="polar")
        c = np.maximum(np.asarray(curves, float), 0.0)
        c = c / np.maximum(c.max(axis=1, keepdims=True), 1e-12)
        theta = np.radians(np.asarray(orientations, float))
        closed = np.append(theta, theta[:1] + 2 * np.pi)
        colors = _hue(np.asarray(preferred, float), 360.0)
        for u, channel in enumerate(channels):
            ax.plot(closed, np.append(c[u], c[u, :1]), color=colors[u], lw=1.3, label=str(channel))
        ax.set_yticklabels([])
        ax.set_title(title, fontsize=9)
    return fig
