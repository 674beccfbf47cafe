"""Crop geometry of incremental inference, along one axis: which positions of a layer a window changes, and which
crop of the layer before computes them.

A :class:`Link` says which positions of a source layer (or of the input) each position of a later layer reads: a
contiguous range that holds every position it depends on (a superset, so a crop built from it is never too small;
the checks on the clean image confirm every crop). Links come from receptive fields measured with NaN probes (the
input positions inside a layer position's extent) or, where receptive fields cover the whole image and no longer
tell positions apart, from NaN probes between the two layers (:func:`probe_link`); links compose along a chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..capture import StopForward, first_tensor, patch_outputs
from .approximate import truncate


@dataclass(frozen=True)
class Axis:
    """Input-pixel extent ``[top, bottom)`` of every position of a layer (or of the input) along one axis."""

    top: np.ndarray
    bottom: np.ndarray

    @classmethod
    def pixels(cls, n: int) -> Axis:
        return cls(np.arange(n), np.arange(n) + 1)

    def __len__(self) -> int:
        return len(self.top)

    @property
    def jump(self) -> int | None:
        """The stride of the positions in input pixels (the most common step of ``top``), ``None`` if irregular."""
        return _step(self.top[self.top > 0] if (self.top > 0).sum() > 1 else self.top)


def _step(starts: np.ndarray) -> int | None:
    steps = np.diff(starts)
    if steps.size == 0:
        return 1
    vals, counts = np.unique(steps, return_counts=True)
    j = int(vals[counts.argmax()])
    return j if j >= 1 else None


@dataclass(frozen=True)
class Link:
    """Position ``p`` of a layer reads positions ``[lo[p], hi[p])`` of its source; ``jump`` is its stride in source
    positions (crops start at multiples of it, so a crop's output lines up with the layer's positions)."""

    lo: np.ndarray
    hi: np.ndarray
    jump: int

    @classmethod
    def from_extents(cls, src: Axis, dst: Axis) -> Link | None:
        """The source positions whose extent lies inside each destination position's (``None`` when a position has
        none, or the strides do not divide)."""
        ja, jb = src.jump, dst.jump
        if ja is None or jb is None or jb % ja:
            return None
        inside = (src.top[None, :] >= dst.top[:, None]) & (src.bottom[None, :] <= dst.bottom[:, None])
        if not inside.any(axis=1).all():
            return None
        return cls(inside.argmax(axis=1), inside.shape[1] - inside[:, ::-1].argmax(axis=1), jb // ja)

    def then(self, nxt: Link) -> Link:
        """The link from this link's source to ``nxt``'s layer (``nxt`` reads this link's layer)."""
        return Link(self.lo[nxt.lo], self.hi[nxt.hi - 1], self.jump * nxt.jump)

    def __len__(self) -> int:
        return len(self.lo)


@torch.no_grad()
def probe_link(module: nn.Module, x: torch.Tensor, src: str, dst: str, src_shape: tuple[int, ...]
               ) -> tuple[Link, Link] | None:
    """The row and column links from layer ``src`` to layer ``dst``, measured with NaN probes.

    ``x`` (one image) runs to ``src``, whose output is swapped for a batch of probes (zeros, and one row or column
    NaN each); the rows and columns of ``dst`` that turn NaN read it. ``None`` if the model cannot take the probes
    or a position of ``dst`` reads nothing.
    """
    _, c, h, w = src_shape
    probes = x.new_zeros((h + w, c, h, w))
    for y in range(h):
        probes[y, :, y, :] = float("nan")
    for v in range(w):
        probes[h + v, :, :, v] = float("nan")
    if x.is_contiguous(memory_format=torch.channels_last):
        probes = probes.contiguous(memory_format=torch.channels_last)
    seen: list[torch.Tensor] = []

    def stop(y: object) -> object:
        seen.append(first_tensor(y))
        raise StopForward

    try:
        with patch_outputs(module, {src: lambda y: probes, dst: stop}):
            module(x)
    except StopForward:
        pass
    except Exception:  # a model that cannot take the probes
        return None
    out = seen[0] if seen else None
    if out is None or out.ndim != 4 or out.shape[0] != h + w:
        return None
    nan = out.isnan()
    rows = nan[:h].any(dim=(1, 3)).cpu().numpy()  # [probe row, dst row]
    cols = nan[h:].any(dim=(1, 2)).cpu().numpy()  # [probe column, dst column]
    links = []
    for hit in (rows, cols):
        if not hit.any(axis=0).all():
            return None
        lo = hit.argmax(axis=0)
        hi = hit.shape[0] - hit[::-1].argmax(axis=0)
        jump = _step(lo[lo > 0] if (lo > 0).sum() > 1 else lo)
        if jump is None:
            return None
        links.append(Link(lo, hi, jump))
    return links[0], links[1]


@dataclass(frozen=True)
class AxisCut:
    """One window along one axis at one stage: the changed positions ``[r0, r1)`` of the stage's layer and the crop
    ``[c0, c1)`` of its source (the input for the first stage, the previous stage's layer after) that computes them.
    ``c0`` is a multiple of ``jump``, the layer's stride in source positions, so the crop's output starts at layer
    position ``c0 // jump``."""

    r0: int
    r1: int
    c0: int
    c1: int
    jump: int

    @property
    def origin(self) -> int:
        """The layer position of the crop output's first row (or column)."""
        return self.c0 // self.jump

    @property
    def local(self) -> tuple[int, int, int]:
        """``(crop length, first changed position in the crop's output, number of changed positions)``."""
        return self.c1 - self.c0, self.r0 - self.origin, self.r1 - self.r0


def stage_cuts(link: Link, n_src: int, extent: Axis, regions: list[tuple[int, int]], centres: list[float],
               windows: list[tuple[int, int]], tau: float | None) -> tuple[list[AxisCut], list[float]] | None:
    """The cut of every window for one stage, and each window's centre in the stage layer's positions (``None``
    when the geometry is irregular).

    Args:
        link: how the stage's layer reads its source (``n_src`` positions).
        extent: the stage layer's input extents: a changed position's extent overlaps the window, which narrows the
            positions found from the source's (both sets hold every position the window changes).
        regions: per window, the changed positions ``[a, b)`` of the source (the window's pixels for the input).
        centres: per window, its centre in source positions.
        windows: per window, its pixels ``[s, e)``.
        tau: ``None`` (exact): every position that reads a changed source position is changed. A fraction in
            (0, 1]: the changed positions are cut down to ``floor(tau * n)`` of the layer's ``n`` around the window's
            centre (Krypton's projective-field threshold, :mod:`.approximate`).

    All crops get one length (the largest, shifted inward at the borders) so every window batches with every other.
    """
    lo, hi, jump = link.lo, link.hi, link.jump
    mid = (lo + hi - 1) / 2.0
    n_dst = len(link)
    cap = None if tau is None else max(1, int(tau * n_dst))
    raw, out_centres = [], []
    for (a, b), centre, (s, e) in zip(regions, centres, windows):
        hit = np.nonzero((lo < b) & (hi > a) & (extent.top < e) & (extent.bottom > s))[0]
        if hit.size == 0 or hit[-1] - hit[0] + 1 != hit.size:
            return None
        r0, r1 = int(hit[0]), int(hit[-1]) + 1
        at = int(np.abs(mid - centre).argmin())
        if cap is not None:
            r0, r1 = truncate(r0, r1, at, cap)
        raw.append((r0, r1, int(lo[r0:r1].min()) // jump * jump, int(hi[r0:r1].max())))
        out_centres.append(float(at))
    length = -(-max(c1 - c0 for *_, c0, c1 in raw) // jump) * jump
    last = max(0, (n_src - length) // jump * jump)
    cuts = []
    for r0, r1, c0, c1 in raw:
        c0 = min(c0, last)
        cuts.append(AxisCut(r0, r1, c0, max(c1, min(c0 + length, n_src)), jump))
    return cuts, out_centres
