"""Figures of human labels against activation (Cammarata et al., *Curve Detectors*, Distill 2020, Figs. 9, 11 and
12): label composition per activation band, the value distribution of each label and each label's contribution to
the expected value (:mod:`cnnscope.dataset.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .common import figure

#: colours of the first labels, in order (then again)
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
#: the article's colours for its labels (Fig. 9); "other" and "unrelated" are grey
FIXED = {"curve": "#1f4e9c", "imperfect curve": "#8ec1ea", "unrelated": "#c8c8a0", "opposing curve": "#f28e2b",
         "other": "#9a9a9a", "edge": "#59a14f"}


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label: the article's for its labels, then :data:`PALETTE` in order."""
    out, k = {}, 0
    for lab in labels:
        if lab.casefold() in FIXED:
            out[lab] = FIXED[lab.casefold()]
        else:
            out[lab] = PALETTE[k % len(PALETTE)]
            k += 1
    return out


def band_sheet(band_crops: Sequence[Sequence[np.ndarray]], side: int = 128, pad: int = 2, background: int = 255
               ) -> tuple[np.ndarray, list[list[list[int]]]]:
    """A contact sheet with one row per band, the highest band on top, each band's crops left to right.

    Returns:
        ``(sheet uint8 [H, W, 3], cells)``: ``cells[band][k] = [top, left, height, width]`` of the band's ``k``-th
        crop in the sheet (band ``0`` is the bottom row).
    """
    from ..images import resize

    rows = len(band_crops)
    cols = max([len(c) for c in band_crops] + [1])
    sheet = np.full((pad + rows * (side + pad), pad + cols * (side + pad), 3), background, np.uint8)
    cells: list[list[list[int]]] = []
    for b, crops in enumerate(band_crops):
        r = rows - 1 - b
        row_cells = []
        for k, im in enumerate(crops):
            top, left = pad + r * (side + pad), pad + k * (side + pad)
            resample = "nearest" if im.shape[0] * 2 <= side else "bilinear"
            sheet[top:top + side, left:left + side] = resize(np.asarray(im, np.uint8), (side, side), resample=resample)
            row_cells.append([top, left, side, side])
        cells.append(row_cells)
    return sheet, cells


def label_report_figure(report) -> Figure:
    """Three panels of a :class:`~cnnscope.dataset.labels.LabelReport`: the share of each label among the labelled
    examples of every band (stacked bars as wide as the bands, the number labelled above each; Fig. 9), the
    estimated number of dataset positions of each label per value (each example counted with its band weight;
    Fig. 11) and each label's estimated contribution to the expected value per value (stacked; Fig. 12). The title
    gives the agreement of each label."""
    colors = label_colors(report.labels)
    fig = figure(15.0, 4.2)
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))
    lows = np.array([b.low for b in report.bands])
    widths = np.array([b.high - b.low for b in report.bands])
    bottom = np.zeros(len(report.bands))
    fractions = np.array(report.fractions, dtype=np.float64).reshape(len(report.bands), len(report.labels))
    for j, lab in enumerate(report.labels):
        ax1.bar(lows, fractions[:, j], width=widths * 0.95, bottom=bottom, align="edge", color=colors[lab],
                label=lab)
        bottom += fractions[:, j]
    for b, row in zip(report.bands, report.composition):
        ax1.text(b.low + (b.high - b.low) / 2, 1.01, str(sum(row)), ha="center", va="bottom", fontsize=7)
    ax1.set_ylim(0, 1.1)
    ax1.set_xlabel("activation band")
    ax1.set_ylabel("share of labelled examples")
    ax1.set_title("label composition per band (n labelled above)", fontsize=9)
    ax1.legend(fontsize=7, loc="lower left")
    edges = np.asarray(report.hist_edges)
    centers, step = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    for lab in report.labels:
        w = np.asarray(report.hist_weighted[lab])
        ax2.step(centers, np.where(w > 0, w, np.nan), where="mid", color=colors[lab], label=lab)
    ax2.set_yscale("log")
    ax2.set_xlabel("activation")
    ax2.set_ylabel("estimated dataset positions per bin")
    ax2.set_title("distribution per label (band-weighted)", fontsize=9)
    ax2.legend(fontsize=7)
    total = sum(sum(v) for v in report.hist_value.values()) or 1.0
    bottom = np.zeros(len(centers))
    for lab in report.labels:
        share = np.asarray(report.hist_value[lab]) / total
        ax3.bar(edges[:-1], share, width=step * 0.95, bottom=bottom, align="edge", color=colors[lab], label=lab)
        bottom += share
    ax3.set_ylim(0, max(float(bottom.max()) * 1.08, 1e-9))
    ax3.set_xlabel("activation")
    ax3.set_ylabel("share of the expected value")
    ax3.set_title("contribution to E[max(x, 0)] per label", fontsize=9)
    agree = ", ".join(f"{lab} {share:.0%}" for lab, share in report.agreement.items())
    fig.suptitle(f"{report.layer}:{report.unit}  share of expected value: {agree}  (labelled bands hold "
                 f"{report.coverage:.0%} of it)", fontsize=9)
    fig.tight_layout()
    return fig
