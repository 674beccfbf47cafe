"""Class-region figures: the decision plane (:mod:`cnnscope.zf.boundary`) and the feature-space view
(:mod:`cnnscope.zf.feature_space`), with one legend rule for both.

Every class that occupies the drawn grid is named in the legend, each in its own colour (no colour is reused,
whatever the number of classes), ordered by the area it covers; the classes of the marked images are always in
the legend, also when they cover no grid point. :func:`class_legend` returns the legend as data
(``[{"class", "label", "color"}]``), the figure draws exactly that legend, and the commands write it to JSON.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .common import figure


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _palette() -> list[str]:
    """60 qualitative colours: tab20's strong then light halves, then tab20b and tab20c."""
    out: list[str] = []
    for name in ("tab20", "tab20b", "tab20c"):
        cols = [to_hex(c) for c in colormaps[name].colors]
        for c in (cols[0::2] + cols[1::2] if name == "tab20" else cols):
            if c not in out:
                out.append(c)
    return out


def distinct_colors(n: int) -> list[str]:
    """``n`` different ``#rrggbb`` colours: the 60 of tab20, tab20b and tab20c first, then colours spread around
    the hue circle (golden-ratio steps, three lightness levels), never one twice.
    """
    out = _palette()[:n]
    seen, k = set(out), 0
    while len(out) < n:
        h = (k * 0.618033988749895) % 1.0
        light = (0.45, 0.65, 0.3)[(k // 7) % 3]
        c = to_hex(colorsys.hls_to_rgb(h, light, 0.75))
        k += 1
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def class_legend(classes, labels: Mapping[int, str], *, required: Sequence[int] = ()) -> list[dict]:
    """The legend of a class map: every class on the grid once, largest area first (ties: lower index), then the
    ``required`` classes (the marked images' own) that cover no grid point; each with its own colour.

    Args:
        classes: ``[R, C]`` class indices (tensor or array).
        labels: class index -> name (a missing one is written ``class N``).
        required: classes that must be in the legend.

    Returns:
        ``[{"class": int, "label": str, "color": "#rrggbb"}, ...]``.
    """
    uniq, counts = np.unique(_np(classes).astype(np.int64), return_counts=True)
    order = [int(c) for c, _ in sorted(zip(uniq.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0]))]
    order += [int(c) for c in dict.fromkeys(required) if int(c) not in order]
    colors = distinct_colors(len(order))
    return [{"class": c, "label": labels.get(c, f"class {c}"), "color": col} for c, col in zip(order, colors)]


def class_image(classes, legend: Sequence[dict]) -> np.ndarray:
    """``[R, C, 3]`` float RGB: each cell in its class's legend colour."""
    grid = _np(classes).astype(np.int64)
    out = np.zeros((*grid.shape, 3))
    for entry in legend:
        out[grid == entry["class"]] = to_rgb(entry["color"])
    return out


def draw_regions(ax, classes, legend: Sequence[dict], extent: tuple[float, float, float, float], *,
                 legend_ax=None) -> None:
    """The class map on ``ax`` (row 0 at the bottom) in the legend's colours, and the legend on ``legend_ax``
    (an axes of its own, turned off; default beside ``ax``). Each entry reads ``label (index): share of the grid``.
    """
    ax.imshow(class_image(classes, legend), origin="lower", extent=extent, interpolation="nearest", aspect="auto")
    grid = _np(classes).astype(np.int64)
    handles = []
    for e in legend:
        share = float((grid == e["class"]).mean())
        note = "marked image only" if share == 0 else ("<1%" if share < 0.005 else f"{share:.0%}")
        handles.append(Patch(facecolor=e["color"], edgecolor="black", linewidth=0.3,
                             label=f"{e['label'][:24]} ({e['class']}): {note}"))
    own = legend_ax is not None
    host = legend_ax if own else ax
    if own:
        legend_ax.axis("off")
    host.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(0.0 if own else 1.02, 1.0),
                borderaxespad=0.0, ncol=1 if len(handles) <= 30 else 2, title=f"{len(handles)} classes",
                title_fontsize=8)


def mark_points(ax, points: Sequence[tuple[str, float, float]], point_classes: Sequence[int],
                legend: Sequence[dict]) -> None:
    """A star per point, filled with its class's colour, named ``name: class label`` (no text for an empty name)."""
    color = {e["class"]: e["color"] for e in legend}
    label = {e["class"]: e["label"] for e in legend}
    for (name, x, y), c in zip(points, point_classes):
        ax.plot([x], [y], marker="*", color=color.get(c, "white"), markeredgecolor="black", markersize=15)
        if not name:
            continue
        ax.annotate(f"{name}: {label[c]}" if c in label else name, (x, y), textcoords="offset points", xytext=(7, 7),
                    fontsize=8, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})


def boundary_figure(plane, *, legend: Sequence[dict] | None = None) -> Figure:
    """The decision plane: predicted class (left; every class named in the legend in its own colour, the images
    marked with their own class) and the confidence of the prediction (right).

    Args:
        plane: a :class:`cnnscope.zf.DecisionPlane`.
        legend: the legend to draw (default :func:`class_legend` of the plane, with the images' classes required).
    """
    if legend is None:
        legend = class_legend(plane.classes, plane.labels, required=plane.mark_classes)
    a, b = _np(plane.alphas), _np(plane.betas)
    ext = (float(a[0]), float(a[-1]), float(b[0]), float(b[-1]))
    wide = len(legend) > 30
    fig = figure(15.0 if wide else 12.5, 4.8)
    ax_c, ax_l, ax_p = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 0.9 if wide else 0.5, 0.85]})
    draw_regions(ax_c, plane.classes, legend, ext, legend_ax=ax_l)
    mark_points(ax_c, plane.marks, plane.mark_classes or [None] * len(plane.marks), legend)
    xl = "alpha" if plane.mode == "images" else "direction 1"
    yl = "beta" if plane.mode == "images" else "direction 2"
    ax_c.set(xlabel=xl, ylabel=yl, title="predicted class over the plane")
    im = ax_p.imshow(_np(plane.confidence), cmap="viridis", vmin=0, vmax=1, origin="lower", extent=ext,
                     aspect="auto")
    for _, x, y in plane.marks:
        ax_p.plot([x], [y], marker="*", color="white", markeredgecolor="black", markersize=12)
    fig.colorbar(im, ax=ax_p, fraction=0.046, pad=0.04, label="probability of the predicted class")
    ax_p.set(xlabel=xl, ylabel=yl, title="confidence")
    return fig
