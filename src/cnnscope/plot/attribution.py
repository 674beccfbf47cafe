"""Attribution figures: the explanation panel (original + one overlay per method, titled with the prediction)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..errors import CnnscopeError
from .common import figure, save_figure


def _title(expl) -> str:
    idx, label, prob = expl.predicted if expl.top else (None, "?", float("nan"))
    lines = [f"{expl.name}", f"{label} {prob:.1%}"]
    if expl.target_index is not None and expl.target_index != idx:
        p = expl.target_probability
        lines.append(f"target: {expl.target}" + (f" {p:.1%}" if p is not None else ""))
    elif expl.target_index is None:
        lines.append(f"target: {expl.target}")
    return "\n".join(lines)


def _method_title(res) -> str:
    title = res.spec.get("title") or res.method
    return f"{title}\n{res.layer}" if res.layer else title


def _draw_row(fig: Figure, expl, row: int, rows: int, cols: int, alpha: float) -> None:
    overlays = expl.overlays(alpha=alpha)
    ax = fig.add_subplot(rows, cols, row * cols + 1)
    ax.imshow(expl.image)
    ax.set_title(_title(expl), fontsize=8)
    ax.axis("off")
    for c, (name, img) in enumerate(overlays.items()):
        ax = fig.add_subplot(rows, cols, row * cols + c + 2)
        ax.imshow(img)
        ax.set_title(_method_title(expl.results[name]), fontsize=8)
        ax.axis("off")


def panel_figure(explanation, *, alpha: float = 0.5, tile: float = 2.4) -> Figure:
    """One image explained: the photo titled with the predicted label and probability, then one overlay per method.

    Args:
        explanation: a :class:`cnnscope.attribution.Explanation` (from :func:`cnnscope.attribution.explain`).
        alpha: opacity of the heatmaps; tile: inches per picture.
    """
    return panels_figure([explanation], alpha=alpha, tile=tile)


def panels_figure(explanations: Sequence, *, alpha: float = 0.5, tile: float = 2.4) -> Figure:
    """Several explanations, one row each (all with the same methods)."""
    if not explanations:
        raise CnnscopeError("panels_figure() needs at least one explanation")
    cols = 1 + max(len(e.results) for e in explanations)
    rows = len(explanations)
    fig = figure(cols * tile, rows * (tile + 0.6))
    for r, expl in enumerate(explanations):
        _draw_row(fig, expl, r, rows, cols, alpha)
    fig.tight_layout()
    return fig


def save_panel(explanation, path: str | Path, *, alpha: float = 0.5, dpi: int = 100) -> Path:
    """Write :func:`panel_figure` of ``explanation`` to ``path`` (PNG by suffix)."""
    return save_figure(panel_figure(explanation, alpha=alpha), path, dpi=dpi)
