"""Figures of the paper's design experiments (:mod:`cnnscope.zf.train`, ``diagnose``, ``ablate``, ``transfer``):
training curves, filter diagnoses side by side, ablation and transfer bars; Agg ``Figure``\\ s (never pyplot)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import figure, grid_image


def training_curves_figure(history: Sequence[dict], title: str = "training") -> Figure:
    """Loss and accuracy per epoch, training (running over the epoch's batches) and held-out."""
    epochs = [r["epoch"] for r in history]
    fig = figure(10.0, 3.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["loss"] for r in history], "o-", label="train (running)")
    if all("test_loss" in r for r in history):
        ax_loss.plot(epochs, [r["test_loss"] for r in history], "s--", label="held-out")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend(fontsize=8)
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train (running)")
    ax_acc.plot(epochs, [r["test_accuracy"] for r in history], "s--", label="held-out")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1 accuracy")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.legend(fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    return fig


def diagnosis_figure(diagnoses: dict) -> Figure:
    """Per model (a column): the first-layer filters, and per filter (sorted) its high-frequency share and its
    aliased share (with the aliased threshold), dead filters marked."""
    from ..zf.diagnose import ALIASED
    from ..zf.filters import filter_images

    n = len(diagnoses)
    shares = [float(d.layers[0].aliased_share.max()) for d in diagnoses.values()
              if d.layers[0].aliased_share is not None]
    top = max([ALIASED, *shares]) * 1.1
    fig = figure(4.2 * n, 9.0)
    axes = fig.subplots(3, n, squeeze=False)
    fig.subplots_adjust(hspace=0.45)
    for col, (name, diag) in enumerate(diagnoses.items()):
        first = diag.layers[0]
        ax = axes[0, col]
        ax.set_xticks([])
        ax.set_yticks([])
        w = diag.first_weights
        if w.shape[1] in (1, 3):
            tiles = filter_images(w, per_filter=False)
            zoom = max(1, 24 // max(tiles.shape[1:3]))
            ax.imshow(grid_image([np.repeat(np.repeat(t, zoom, 0), zoom, 1) for t in tiles], pad=1))
        ax.set_title(f"{name}\n{first.layer} {first.kernel[0]}x{first.kernel[1]} stride {first.stride[0]}; "
                     f"dead {len(first.dead)}", fontsize=8)
        hs = first.high_share.numpy()
        order = np.argsort(hs)
        colors = ["black" if i in set(first.dead) else "tab:blue" for i in order]
        axes[1, col].bar(np.arange(len(hs)), hs[order], width=1.0, color=colors)
        axes[1, col].set_ylim(0, 1)
        axes[1, col].set_title(f"energy above half Nyquist (mean {hs.mean():.0%}); black: dead", fontsize=8)
        ax = axes[2, col]
        if first.aliased_share is not None:
            al = first.aliased_share.numpy()
            ax.bar(np.arange(len(al)), np.sort(al), width=1.0, color="tab:red")
            ax.axhline(ALIASED, color="black", linestyle="--", linewidth=1)
            ax.set_ylim(0, top)
            ax.set_title(f"response energy above the stride's Nyquist\n(mean {al.mean():.1%}; "
                         f"{len(first.aliased or [])} filters above {ALIASED:.0%})", fontsize=8)
        else:
            ax.text(0.5, 0.5, "aliasing not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("filter (sorted)")
    return fig


def ablation_figure(ablation) -> Figure:
    """Train and test error of every variant (paper Table 2 as bars)."""
    rows = ablation.rows
    x = np.arange(len(rows))
    fig = figure(max(5.0, 1.1 * len(rows) + 2), 4.0)
    ax = fig.subplots()
    ax.bar(x - 0.2, [r.train_error for r in rows], width=0.4, label="train error")
    ax.bar(x + 0.2, [r.test_error for r in rows], width=0.4, label="test error")
    ax.set_xticks(x, [r.variant for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("top-1 error")
    ax.legend(fontsize=8)
    ax.set_title(f"ablation on {ablation.data} ({ablation.settings['epochs']} epochs, seed "
                 f"{ablation.settings['seed']})", fontsize=9)
    return fig


def transfer_figure(result) -> Figure:
    """Held-out accuracy of a classifier retrained on frozen layers 1..k, for each k (paper Tables 3-6)."""
    rows = [r for r in result.rows if r.layer != "scratch"]
    fig = figure(max(5.0, 0.9 * len(rows) + 2), 4.0)
    ax = fig.subplots()
    ax.plot([r.k for r in rows], [r.test_accuracy for r in rows], "o-", label="held-out")
    ax.plot([r.k for r in rows], [r.train_accuracy for r in rows], "s--", label="train")
    scratch = [r for r in result.rows if r.layer == "scratch"]
    if scratch:
        ax.axhline(scratch[0].test_accuracy, color="grey", linestyle=":", label="trained from scratch (held-out)")
    ax.set_xticks([r.k for r in rows], [f"{r.k}\n{r.layer}" for r in rows], fontsize=7)
    ax.set_xlabel("layers frozen (classifier on layer k)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"transfer of {result.model} to {result.data}", fontsize=9)
    return fig
