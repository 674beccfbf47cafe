"""Figures of the Zeiler & Fergus toolkit (:mod:`cnnscope.zf`), as Agg ``Figure``\\ s (never pyplot)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..images import resize
from .boundary import class_legend
from .common import figure, grid_image


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _box(ax, box, color: str = "yellow") -> None:
    t, left, b, r = box
    ax.add_patch(Rectangle((left - 0.5, t - 0.5), r - left, b - t, fill=False, edgecolor=color, linewidth=1.5))


def _tile(img: np.ndarray, side: int) -> np.ndarray:
    """Pad a patch to a square (mid-grey) and resize it to ``side`` pixels."""
    h, w = img.shape[:2]
    s = max(h, w)
    sq = np.full((s, s, 3), 128, np.uint8)
    sq[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = img
    return resize(sq, (side, side))


def projection_figure(image: np.ndarray, projection, *, index: int = 0, title: str | None = None) -> Figure:
    """The image with the receptive field, the deconvnet projection, and both cropped to the field.

    ``image`` is the picture the model saw (``uint8 [H, W, 3]``); ``index`` picks the projection's image.
    """
    pic = projection.pictures()[index]
    box = projection.boxes[index] if projection.boxes is not None else None
    n = 4 if box is not None else 2
    fig = figure(3.0 * n, 3.2)
    axes = fig.subplots(1, n)
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(pic)
    axes[1].set_title(f"{projection.method} projection")
    if box is not None:
        _box(axes[0], box)
        _box(axes[1], box)
        t, left, b, r = box
        axes[2].imshow(pic[t:b, left:r])
        axes[2].set_title("projection (field)")
        axes[3].imshow(image[t:b, left:r])
        axes[3].set_title("image patch")
    for ax in axes:
        _off(ax)
    where = projection.positions[index] if projection.positions is not None else "every position"
    fig.suptitle(title or f"{projection.layer} channel {projection.channel} at {where} "
                 f"(activation {float(projection.activations[index]):.3g})")
    return fig


def top9_figure(tp, channels: Sequence[int] | None = None, side: int = 48) -> Figure:
    """The paper's Fig. 2 layout: per channel, the top projections (left) beside their image patches (right)."""
    chans = list(channels if channels is not None else tp.channels)
    fig = figure(7.0, 3.3 * len(chans))
    axes = np.atleast_2d(fig.subplots(len(chans), 2, squeeze=False))
    for row, c in enumerate(chans):
        entries = tp.entries[c]
        scale = max(float(e.values.abs().max()) for e in entries) if entries else 1.0
        k = int(np.ceil(np.sqrt(len(entries))))
        proj = grid_image([_tile(tp.projection_image(e, scale), side) for e in entries], cols=k)
        crops = grid_image([_tile(tp.crop(e), side) for e in entries], cols=k)
        axes[row, 0].imshow(proj)
        axes[row, 0].set_title(f"{tp.layer} ch {c}: {tp.method} projections")
        axes[row, 1].imshow(crops)
        axes[row, 1].set_title("image patches")
        _off(axes[row, 0])
        _off(axes[row, 1])
    return fig


def _edges(centres: np.ndarray, limit: int) -> np.ndarray:
    """Cell edges around (possibly unevenly spaced) centres: midpoints, the outer ones clipped to the image."""
    if len(centres) == 1:
        return np.array([0.0, float(limit)])
    mid = (centres[1:] + centres[:-1]) / 2.0
    first, last = centres[0] - (mid[0] - centres[0]), centres[-1] + (centres[-1] - mid[-1])
    return np.clip(np.concatenate([[first], mid, [last]]), 0, limit)


def _map(ax, fig, study, values, title: str, cmap: str, **kw) -> object:
    """Draw a per-position map over the image area, each cell centred on its square's centre."""
    ys, xs = study.centers()
    h, w = study.image.shape[:2]
    ax.imshow(study.image, alpha=0.45)
    mesh = ax.pcolormesh(_edges(xs, w), _edges(ys, h), _np(values), cmap=cmap, alpha=0.75, **kw)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    if not kw:
        fig.colorbar(mesh, ax=ax, fraction=0.046)
    return mesh


def occlusion_figure(study) -> Figure:
    """Fig. 7 panels: (a) image, (b) feature-map activity, (c) its projection, (d) p(correct), (e) top label."""
    fig = figure(17.0, 3.6)
    axes = fig.subplots(1, 5)
    axes[0].imshow(study.image)
    _box(axes[0], (0, 0, study.size, study.size), "grey")
    axes[0].set_title(f"(a) image, {study.size}px grey square", fontsize=9)
    _map(axes[1], fig, study, study.activation, f"(b) total activation\n{study.layer} ch {study.channel}",
         "viridis")
    axes[2].imshow(study.projection.pictures()[0])
    axes[2].set_title(f"(c) projection ({study.projection.method})", fontsize=9)
    _map(axes[3], fig, study, study.probability, f"(d) p({study.label})", "magma")
    classes = _np(study.top_class).astype(int)
    legend = class_legend(classes, study.labels)  # every class on the map, each in its own colour
    codes = np.vectorize({e["class"]: i for i, e in enumerate(legend)}.get)(classes)
    _map(axes[4], fig, study, codes, "(e) most probable label", ListedColormap([e["color"] for e in legend]),
         vmin=-0.5, vmax=len(legend) - 0.5)
    axes[4].legend(handles=[Patch(color=e["color"], label=e["label"][:22]) for e in legend], fontsize=7,
                   loc="upper left", bbox_to_anchor=(1.0, 1.0), ncol=1 if len(legend) <= 14 else 2)
    for ax in axes:
        _off(ax)
    return fig


def invariance_figure(studies: Sequence) -> Figure:
    """Fig. 5 layout: columns = transforms; rows = distance at each layer, then p(true class); a line per image."""
    n_layers = len(studies[0].layers)
    fig = figure(4.2 * len(studies), 2.8 * (n_layers + 1))
    axes = fig.subplots(n_layers + 1, len(studies), squeeze=False)
    for col, s in enumerate(studies):
        amounts = np.asarray(s.amounts)
        for i, name in enumerate(s.names):
            for j in range(len(s.layers)):
                axes[j, col].plot(amounts, _np(s.distances[i, j]), marker=".", label=name)
            axes[-1, col].plot(amounts, _np(s.probabilities[i]), marker=".", label=f"{name} ({s.labels[i]})")
        for j, layer in enumerate(s.layers):
            axes[j, col].set_title(f"{s.transform}: {layer}", fontsize=9)
            axes[j, col].set_ylabel("Euclidean distance")
        axes[-1, col].set_ylabel("p(true class)")
        axes[-1, col].set_xlabel(s.unit)
        axes[-1, col].set_ylim(0, 1)
    axes[-1, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def correspondence_figure(result, images: Sequence[np.ndarray] | None = None) -> Figure:
    """Table 1 as bars: mean normalised Hamming distance (± std) for the part masks and the random masks."""
    n_img = len(images) if images is not None else 0
    fig = figure(max(6.0, 2.0 * n_img), 6.0 if n_img else 3.5)
    if n_img:
        top = fig.subfigures(2, 1, height_ratios=[1, 1.3])
        axs = top[0].subplots(1, n_img, squeeze=False)[0]
        for ax, img, box, name in zip(axs, images, result.boxes, result.names):
            ax.imshow(img)
            _box(ax, box, "red")
            ax.set_title(name[-20:], fontsize=8)
            _off(ax)
        ax = top[1].subplots()
    else:
        ax = fig.subplots()
    x = np.arange(len(result.layers))
    part = [result.part[n] for n in result.layers]
    ax.bar(x - 0.2, [d.mean for d in part], 0.4, yerr=[d.std for d in part], label="masked part", capsize=3)
    if result.random:
        rnd = [result.random[n] for n in result.layers]
        ax.bar(x + 0.2, [d.mean for d in rnd], 0.4, yerr=[d.std for d in rnd], label="random masks", capsize=3)
    ax.set_xticks(x, result.layers, fontsize=8)
    ax.set_ylabel("sign-change Hamming distance\n(lower = more consistent)")
    ax.legend(fontsize=8)
    return fig


def evolution_figure(ev, side: int = 48) -> Figure:
    """Fig. 4 layout: one row per channel, one column per checkpoint, each the strongest projection."""
    from ..zf.deconvnet import display

    n_rows, n_cols = len(ev.channels), len(ev.entries)
    fig = figure(1.3 * n_cols + 1.0, 1.4 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for col, row_entries in enumerate(ev.entries):
        for row, e in enumerate(row_entries):
            ax = axes[row, col]
            ax.imshow(_tile(display(e.values), side))
            _off(ax)
            if row == 0:
                ep = ev.epochs[col]
                ax.set_title(f"epoch {ep}" if ep is not None else f"#{col}", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"ch {ev.channels[row]}", fontsize=8)
    fig.suptitle(f"evolution of {ev.layer}", fontsize=10)
    return fig


def filters_figure(tiles: np.ndarray, title: str = "first-layer filters", side: int = 24) -> Figure:
    """First-layer filters (``uint8 [N, kh, kw, 3]``) as a grid of small pictures (nearest-neighbour zoom)."""
    zoom = max(1, side // max(tiles.shape[1:3]))
    big = [np.repeat(np.repeat(t, zoom, axis=0), zoom, axis=1) for t in tiles]
    fig = figure(6.0, 6.0)
    ax = fig.subplots()
    ax.imshow(grid_image(big, pad=1))
    ax.set_title(f"{title} ({len(tiles)})")
    _off(ax)
    return fig


def kernels_figure(weights: torch.Tensor, layer: str = "", max_out: int = 16, max_in: int = 8) -> Figure:
    """Kernels of a conv layer as diverging heatmaps (red positive, blue negative; one shared scale)."""
    w = _np(weights)[:max_out, :max_in]
    n_out, n_in = w.shape[:2]
    vmax = float(np.abs(w).max()) or 1.0
    fig = figure(0.9 * n_in + 1.2, 0.9 * n_out + 0.6)
    axes = fig.subplots(n_out, n_in, squeeze=False)
    im = None
    for o in range(n_out):
        for i in range(n_in):
            im = axes[o, i].imshow(w[o, i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            _off(axes[o, i])
            if i == 0:
                axes[o, i].set_ylabel(str(o), fontsize=6)
            if o == 0:
                axes[o, i].set_title(f"in {i}", fontsize=6)
    fig.colorbar(im, ax=axes, fraction=0.02)
    fig.suptitle(f"kernels {layer} (out x in, first {n_out} x {n_in} of {tuple(weights.shape[:2])})", fontsize=9)
    return fig


def feature_maps_figure(maps: torch.Tensor, layer: str = "", max_maps: int = 64) -> Figure:
    """One image's feature maps ``[C, h, w]`` as a grid (each map on its own colour scale)."""
    m = _np(maps)[:max_maps]
    cols = int(np.ceil(np.sqrt(len(m))))
    rows = int(np.ceil(len(m) / cols))
    fig = figure(1.3 * cols, 1.3 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        _off(ax)
        if k < len(m):
            ax.imshow(m[k], cmap="viridis")
            ax.set_title(str(k), fontsize=6)
    fig.suptitle(f"feature maps {layer} ({len(m)} of {maps.shape[0]})", fontsize=9)
    return fig


def spectrum_figure(spec) -> Figure:
    """Mean power spectrum of the filters, their radial energy profile and the low/mid/high band shares."""
    fig = figure(13.0, 3.6)
    axes = fig.subplots(1, 3)
    mean_power = _np(spec.power).mean(0)
    axes[0].imshow(np.log10(mean_power + 1e-12), cmap="magma", extent=(-1, 1, -1, 1))
    axes[0].set_title("mean log power (x Nyquist)", fontsize=9)
    radii, prof = _np(spec.radii), _np(spec.profile)
    axes[1].plot(radii, prof.T, color="grey", alpha=0.25, linewidth=0.7)
    axes[1].plot(radii, prof.mean(0), color="black", linewidth=2, label="mean")
    axes[1].set_xlabel("radial frequency (x Nyquist)")
    axes[1].set_ylabel("share of energy")
    axes[1].legend(fontsize=8)
    bands = _np(spec.bands)
    order = np.argsort(bands[:, 0])
    bottom = np.zeros(len(bands))
    for j, name in enumerate(("low", "mid", "high")):
        axes[2].bar(np.arange(len(bands)), bands[order, j], bottom=bottom, width=1.0, label=name)
        bottom += bands[order, j]
    axes[2].set_xlabel("filter (sorted by low-band share)")
    axes[2].set_title(f"band shares; dead filters: {len(spec.dead)}", fontsize=9)
    axes[2].legend(fontsize=8)
    return fig
