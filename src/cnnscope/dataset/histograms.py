"""Fixed-memory, mergeable per-channel histograms on symmetric logarithmic bins.

A value's bin comes from the top bits of its ``float32`` representation (sign, exponent and the top
``mantissa_bits`` of the mantissa: ``2**mantissa_bits`` bins per octave, neighbouring edges 9% apart for 3 bits),
through one lookup table. Magnitudes ``2**min_exp <= |x| < 2**max_exp`` are resolved; below that there are three
bins (tiny negative, zero, tiny positive) and above it one overflow bin per sign. The edges do not depend on the
data, every element lands in the same bin however the data are batched, and binning is a table lookup of the
value's high 16 bits: partial histograms add up to exactly the histogram of one pass, for any activation scale, in
fixed memory.

Bins are grouped into *sampling bands* of ``band_every`` bins (an octave by default; the three small bins form one
band, each overflow bin its own) for example sampling, so a band's count is a sum of histogram counts.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import CnnscopeError

EXPONENT_BITS = 8


@dataclass(frozen=True)
class LogBins:
    """Symmetric log-spaced bins read from ``float32`` bits.

    Attributes:
        min_exp, max_exp: magnitudes ``2**min_exp <= |x| < 2**max_exp`` are resolved (default ~0.001 .. 16384).
        mantissa_bits: ``2**mantissa_bits`` bins per octave (0 .. 7).
        band_every: bins per sampling band (must divide the bins per side).
    """

    min_exp: int = -10
    max_exp: int = 14
    mantissa_bits: int = 3
    band_every: int = 8

    def __post_init__(self) -> None:
        if not (-126 <= self.min_exp < self.max_exp <= 127) or not 0 <= self.mantissa_bits <= 7:
            raise CnnscopeError(f"invalid histogram bins {self}")
        if self.band_every < 1 or self.side % self.band_every:
            raise CnnscopeError(f"band_every={self.band_every} must divide the {self.side} bins per side")

    # -- layout --------------------------------------------------------------------------------------------
    @property
    def side(self) -> int:
        """Resolved bins per sign."""
        return (self.max_exp - self.min_exp) << self.mantissa_bits

    @property
    def n_bins(self) -> int:
        """``overflow-, side negative bins, tiny-, zero, tiny+, side positive bins, overflow+``."""
        return 2 * self.side + 5

    @property
    def zero_bin(self) -> int:
        return self.side + 2

    @property
    def n_bands(self) -> int:
        return 2 * (self.side // self.band_every + 1) + 1

    @property
    def shift(self) -> int:
        return 23 - self.mantissa_bits

    def magnitude_edges(self) -> np.ndarray:
        """``side + 1`` magnitudes ``2**min_exp .. 2**max_exp`` bounding the resolved bins (``float64``)."""
        q0 = (self.min_exp + 127) << self.mantissa_bits
        bits = ((q0 + np.arange(self.side + 1, dtype=np.int64)) << self.shift).astype(np.uint32)
        return bits.view(np.float32).astype(np.float64)

    def bin_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper value bound of every bin, ascending (``-inf``/``inf`` at the ends; the zero bin is the
        single value 0). Positive bins hold ``lower <= x < upper``, negative bins ``lower < x <= upper``."""
        e = self.magnitude_edges()
        lo_pos, hi_pos = e, np.concatenate([e[1:], [np.inf]])
        lower = np.concatenate([-hi_pos[::-1], [-e[0], 0.0, 0.0], lo_pos])
        upper = np.concatenate([-lo_pos[::-1], [0.0, 0.0, e[0]], hi_pos])
        return lower, upper

    def _band_of_signed(self, j: np.ndarray) -> np.ndarray:
        """Band of a signed bin position ``j`` (``0`` = the small bins, ``±1 .. ±(side+1)`` resolved/overflow)."""
        per_side = self.side // self.band_every + 1
        mag = (np.abs(j) + self.band_every - 1) // self.band_every
        return per_side + np.sign(j) * mag

    def _signed_of_bin(self) -> np.ndarray:
        """Signed position of every bin: the three small bins share position 0."""
        k = np.arange(self.n_bins) - self.zero_bin
        return np.where(np.abs(k) <= 1, 0, k - np.sign(k))

    def band_of_bin(self) -> np.ndarray:
        """``int64 [n_bins]``: the sampling band of every bin."""
        return self._band_of_signed(self._signed_of_bin()).astype(np.int64)

    def band_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper value bound of every sampling band."""
        lower, upper = self.bin_bounds()
        band = self.band_of_bin()
        lo = np.array([lower[band == b].min() for b in range(self.n_bands)])
        hi = np.array([upper[band == b].max() for b in range(self.n_bands)])
        return lo, hi

    @cached_property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Lookup tables ``code -> bin`` and ``code -> band`` (``int32 [65536]``), ``code`` = the high 16 bits of
        the ``float32`` value (sign, exponent, top 7 mantissa bits)."""
        code = np.arange(1 << 16, dtype=np.int64)
        negative = code >> 15
        q = (code & 0x7FFF) >> (7 - self.mantissa_bits)
        q0 = (self.min_exp + 127) << self.mantissa_bits
        j = np.clip(q - q0 + 1, 0, self.side + 1)
        signed = np.where(negative == 1, -j, j)
        bins = np.where(j > 0, self.zero_bin + signed + np.sign(signed),
                        np.where(q == 0, self.zero_bin, self.zero_bin + np.where(negative == 1, -1, 1)))
        return bins.astype(np.int32), self._band_of_signed(signed).astype(np.int32)

    def lookup(self, values: torch.Tensor, table: str = "bin") -> torch.Tensor:
        """Bin (or band) of every value as ``int32``, same shape as ``values``.

        The high half of each ``float32`` is read through an ``int16`` view (no shift), widened and looked up.
        Values below ``2**-126`` (denormals, zero) fall in the zero bin.
        """
        v = values.float().contiguous().reshape(-1)
        halves = v.view(torch.int16)
        high = halves[1::2] if sys.byteorder == "little" else halves[0::2]
        code = high.to(torch.int32).bitwise_and_(0xFFFF)
        t = torch.as_tensor(self.tables[0 if table == "bin" else 1], device=values.device)
        return torch.index_select(t, 0, code).view(values.shape)

    def post_map(self, lower: float | None, upper: float | None) -> np.ndarray:
        """Where each bin's count goes when values are clamped to ``[lower, upper]`` (ReLU: ``(0, None)``).

        Exact: a bin entirely inside the range keeps its count, every bin below/above moves to the bin of the
        bound (values of the bound's own bin on the inside stay in it, which is the same bin).
        """
        target = np.arange(self.n_bins)
        for bound, below in ((lower, True), (upper, False)):
            if bound is None:
                continue
            b = int(self.lookup(torch.tensor([float(bound)]))[0])
            target = np.where(target < b, b, target) if below else np.where(target > b, b, target)
        return target

    def to_dict(self) -> dict:
        return asdict(self)


class HistogramAccumulator:
    """Per-channel counts over :class:`LogBins`, accumulated on the values' device.

    Shape:
        - counts: ``int64 [C, n_bins]``.
    """

    def __init__(self, bins: LogBins, channels: int, device: torch.device) -> None:
        self.bins = bins
        self.counts = torch.zeros(channels, bins.n_bins, dtype=torch.int64, device=device)
        self._offsets = torch.arange(channels, device=device, dtype=torch.int32)[:, None] * bins.n_bins

    def add(self, values: torch.Tensor, channel_major: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Count ``values``: ``[C, N]`` or, with ``channel_major=False``, ``[N, C]``.

        Returns:
            ``(flat, counts)``: every value's flat index ``channel * n_bins + bin`` (``int32``, shaped like
            ``values``) and the batch's own counts (``int64 [C, n_bins]``).
        """
        offsets = self._offsets if channel_major else self._offsets.view(1, -1)
        flat = self.bins.lookup(values).add_(offsets)
        counts = torch.bincount(flat.view(-1), minlength=self.counts.numel()).view_as(self.counts)
        self.counts += counts
        return flat, counts


def remap(counts: torch.Tensor, target: np.ndarray) -> torch.Tensor:
    """Move every bin's count to ``target[bin]`` (see :meth:`LogBins.post_map`).

    Shape:
        - counts: ``[..., n_bins]``; output the same.
    """
    index = torch.as_tensor(target, dtype=torch.int64, device=counts.device)
    return torch.zeros_like(counts).index_add_(-1, index, counts)


def density(counts: torch.Tensor, bins: LogBins) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probability density per resolved bin: ``(centers, widths, density)`` (``float64``, CPU); the small and
    overflow bins are dropped.

    Shape:
        - counts: ``[n_bins]``; outputs: ``[2 * side]``.
    """
    lower, upper = bins.bin_bounds()
    keep = np.isfinite(lower) & np.isfinite(upper) & (np.abs(lower) > 0) & (np.abs(upper) > 0)
    lo, hi = torch.from_numpy(lower[keep]), torch.from_numpy(upper[keep])
    total = max(int(counts.sum()), 1)
    widths = hi - lo
    centers = torch.sign(lo + hi) * torch.sqrt(lo * hi)
    return centers, widths, counts.cpu()[torch.from_numpy(keep)].double() / total / widths
