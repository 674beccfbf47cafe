"""Figures of circuits between units (Cammarata et al., *Curve Detectors*, Distill 2020): spatial attribution
(Figs. 8 and 10) and the flow between the orientation families of two layers.

Every function returns an Agg ``Figure``; save it with :func:`cnnscope.plot.save_figure`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .common import figure

POS, NEG = "#2457c5", "#d2402a"


def spatial_attribution_figure(sa, image: np.ndarray | None = None, tile: int = 24) -> Figure:
    """Spatial attribution (``sa``: :class:`cnnscope.dataset.spatial_attribution.SpatialAttribution`): the image
    with the unit's grid cell marked, the summed attribution over the kernel window, and per input channel its
    ``kh x kw`` tiles of feature visualization with opacity ``|attribution|`` (sign on the frame colour)."""
    attr = sa.attribution
    conn = attr.connection
    k, kh, kw = sa.maps.shape
    gap = max(4, tile // 4)
    mosaic = sa.mosaic(tile=tile, gap=gap)
    width = 3.0 + 0.35 * k * kw * tile / 24 + (2.5 if image is not None else 0)
    fig = figure(min(20.0, width), 3.2, dpi=110)
    cols = 3 if image is not None else 2
    grid = fig.add_gridspec(1, cols, width_ratios=([1.0] if image is not None else []) + [0.8, max(1.0, k * kw / 4)])
    i = 0
    if image is not None:
        ax = fig.add_subplot(grid[0, 0])
        ax.imshow(image)
        if min(attr.grid) > 0:
            gy = (attr.position[0] + 0.5) * image.shape[0] / attr.grid[0]
            gx = (attr.position[1] + 0.5) * image.shape[1] / attr.grid[1]
            ax.plot([gx], [gy], marker="+", color="yellow", markersize=14, markeredgewidth=2)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{conn.layer}:{conn.channel} at {attr.position}", fontsize=7)
        i = 1
    total = sa.total.numpy()
    vmax = float(np.abs(total).max()) or 1.0
    ax = fig.add_subplot(grid[0, i])
    im = ax.imshow(total, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"all inputs: {float(total.sum()):.3g}\n= value {attr.value:.3g} - bias {conn.bias:.3g}", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
    ax = fig.add_subplot(grid[0, i + 1])
    ax.imshow(mosaic)
    for j, (c, m) in enumerate(zip(sa.channels, sa.maps)):
        left = j * (kw * tile + gap)
        s = float(m.sum())
        ax.add_patch(_frame(left - 0.5, -0.5, kw * tile, kh * tile, POS if s >= 0 else NEG))
        ax.text(left + kw * tile / 2, -2, f"in {c}\n{s:+.3g}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    src = f" (visualizations of {sa.from_layer})" if sa.from_layer else ""
    ax.set_xlabel(f"strongest inputs of {conn.conv}: opacity = |activation x weight| at each kernel position{src}",
                  fontsize=7)
    fig.tight_layout()
    return fig


def _frame(x: float, y: float, w: float, h: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=1.2)


def flow_figure(flow, max_edges: int = 200) -> Figure:
    """The flow between two families (``flow``: :class:`cnnscope.stimuli.flow.FamilyFlow`) as a graph: source
    members on the top row, target members below, each ordered by preferred orientation (as given otherwise);
    edges drawn with width and opacity by ``|edge|``, blue positive, red negative (the ``max_edges`` strongest)."""
    s, t = len(flow.source_channels), len(flow.target_channels)
    e = flow.edges.numpy()
    fig = figure(min(18.0, 2.0 + 0.5 * max(s, t)), 4.0, dpi=110)
    ax = fig.add_subplot(1, 1, 1)

    def xs(n: int) -> np.ndarray:
        return np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])

    sx, tx = xs(s), xs(t)
    top = float(np.abs(e).max()) or 1.0
    order = np.argsort(-np.abs(e).ravel(), kind="stable")[:max_edges]
    for flat in order[::-1]:  # strongest drawn last (on top)
        i, j = divmod(int(flat), t)
        w = abs(e[i, j]) / top
        if w == 0:
            continue
        ax.plot([sx[i], tx[j]], [1.0, 0.0], color=POS if e[i, j] > 0 else NEG, linewidth=0.3 + 3.5 * w,
                alpha=0.15 + 0.85 * w, solid_capstyle="round", zorder=1)

    def label(channels: list[int], orient: list[float] | None, k: int) -> str:
        return f"{channels[k]}" + (f"\n{orient[k]:g}°" if orient is not None else "")

    ax.scatter(sx, np.ones(s), s=60, color="#344054", zorder=2)
    ax.scatter(tx, np.zeros(t), s=60, color="#344054", zorder=2)
    for k in range(s):
        ax.text(sx[k], 1.06, label(flow.source_channels, flow.source_orientations, k), ha="center", va="bottom",
                fontsize=6)
    for k in range(t):
        ax.text(tx[k], -0.06, label(flow.target_channels, flow.target_orientations, k), ha="center", va="top",
                fontsize=6)
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.35, 1.35)
    ax.set_yticks([0.0, 1.0], [flow.target_layer, flow.source_layer], fontsize=7)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    what = "weight sums" if flow.mode == "weights" else f"activation x weight over {flow.images} images"
    ax.set_title(f"{flow.source_layer} -> {flow.target_layer} ({what}; blue +, red -)", fontsize=8)
    fig.tight_layout()
    return fig
