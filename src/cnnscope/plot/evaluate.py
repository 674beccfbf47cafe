"""Figures of the evaluation metrics: deletion/insertion curves, ROAD curves, sanity-check curves and maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .common import figure, save_figure


def _mean_std(values: object) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(values.detach().cpu().double() if hasattr(values, "detach") else values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    with np.errstate(invalid="ignore"):
        return np.nanmean(a, axis=0), (np.nanstd(a, axis=0) if a.shape[0] > 1 else np.zeros(a.shape[1]))


def curves_figure(curves: Mapping[str, object], kind: str = "deletion", title: str | None = None) -> Figure:
    """Mean curve (band: +- one std over images) per method, AUC in the legend.

    Args:
        curves: ``method -> CurveResult`` of one kind (or ``method -> {kind: CurveResult}``).
        kind: ``"deletion"`` or ``"insertion"``.
    """
    fig = figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for method, res in curves.items():
        res = res[kind] if isinstance(res, Mapping) else res
        mean, std = _mean_std(res.scores)
        x = np.asarray(res.fractions.cpu(), dtype=np.float64)
        auc = float(res.auc.float().mean())
        (line,) = ax.plot(x, mean, label=f"{method} (AUC {auc:.3f})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
    ax.set_ylabel("class probability")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    better = "lower" if kind == "deletion" else "higher"
    ax.set_title(title or f"{kind.capitalize()} curves ({better} AUC is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def road_figure(results: Mapping[str, object], title: str = "ROAD (noisy linear imputation)") -> Figure:
    """MoRF (left, lower is better) and LeRF (right, higher is better) curves per method."""
    fig = figure(10.0, 4.0)
    axes = [fig.add_subplot(1, 2, k + 1) for k in range(2)]
    for method, res in results.items():
        p = np.asarray(res.percentages, dtype=np.float64)
        for ax, key in zip(axes, ("morf", "lerf")):
            mean, std = _mean_std(getattr(res, key))
            (line,) = ax.plot(p, mean, marker="o", markersize=3, label=method)
            ax.fill_between(p, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    for ax, name in zip(axes, ("MoRF: most relevant removed first (lower is better)",
                               "LeRF: least relevant removed first (higher is better)")):
        ax.set_xlabel("% of pixels removed")
        ax.set_ylabel("class probability")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(bottom=0)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def sanity_figure(result: object, measure: str = "spearman_abs", title: str | None = None) -> Figure:
    """One curve per method: similarity to the trained model's maps after each randomization step.

    Args:
        result: a :class:`~cnnscope.evaluate.SanityResult`.
        measure: ``spearman_abs``, ``spearman``, ``ssim`` or ``hog``.
    """
    steps: Sequence[str] = result.steps
    fig = figure(max(6.0, 0.45 * len(steps) + 2.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(steps))
    for method, per in result.similarity.items():
        mean, std = _mean_std(per[measure].T)
        (line,) = ax.plot(x, mean, marker="o", markersize=3, label=method)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.12, linewidth=0)
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(steps, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(measure.replace("_", " "))
    ax.set_ylim(-0.5 if measure.startswith("spearman") or measure == "hog" else 0.0, 1.05)
    where = "top layer first, cumulative" if result.mode == "cascading" else "one layer at a time"
    ax.set_title(title or f"Sanity check: {result.mode} randomization ({where})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sanity_maps_figure(result: object, image: int = 0, every: int = 1) -> Figure:
    """Maps of one image (rows: methods) after each randomization step (columns); needs ``keep_maps=True``."""
    methods = list(result.maps)
    if not methods:
        raise ValueError("sanity_maps_figure() needs a SanityResult made with keep_maps=True")
    cols = list(range(0, len(result.steps), max(1, every)))
    fig = figure(1.3 * len(cols) + 1.0, 1.4 * len(methods) + 0.6)
    for r, m in enumerate(methods):
        for c, s in enumerate(cols):
            ax = fig.add_subplot(len(methods), len(cols), r * len(cols) + c + 1)
            a = np.abs(np.asarray(result.maps[m][s, image].detach().cpu(), dtype=np.float64))
            ax.imshow(a / (a.max() or 1.0), cmap="inferno", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(result.steps[s], fontsize=6, rotation=45)
            if c == 0:
                ax.set_ylabel(m, fontsize=7)
    fig.tight_layout()
    return fig


def save_figures(evaluation: object, out: str | Path) -> list[Path]:
    """Write the curve plots of an :class:`~cnnscope.evaluate.Evaluation` into the folder ``out``:
    ``curves_deletion.png``, ``curves_insertion.png``, ``road.png``, ``sanity_spearman_abs.png``,
    ``sanity_ssim.png`` (those whose metric was run)."""
    folder = Path(out)
    paths = []
    for kind in ("deletion", "insertion"):
        got = {m: c[kind] for m, c in evaluation.curves.items() if kind in c}
        if got:
            paths.append(save_figure(curves_figure(got, kind), folder / f"curves_{kind}.png"))
    if evaluation.road:
        paths.append(save_figure(road_figure(evaluation.road), folder / "road.png"))
    if evaluation.sanity is not None:
        for measure in ("spearman_abs", "ssim"):
            paths.append(save_figure(sanity_figure(evaluation.sanity, measure), folder / f"sanity_{measure}.png"))
    return paths
