"""The per-layer streaming state of the statistics pass (fixed memory, exact, on the activations' device).

Per batch every value is binned once (histogram) and screened once: one lookup in a ``[C, n_bins]`` table and one
comparison per element keep only the positions that can change the top-k, the bottom-k or a band sample; the
exact ranking rules then run on those few candidates (:mod:`.ranking`).

Values are read in their memory order (``[N, C]`` for channels-last activations, ``[C, N]`` otherwise), so no
activation is transposed or copied. The table is built from the kept records *and* from the batch's own histogram:
nothing below a channel's k-th largest value of the batch can enter its top-k (likewise the bottom-k), and
nothing above the m-th smallest priority of a band cell in the batch can enter that cell's sample, so even the
first batch (empty lists) yields few candidates.
"""

from __future__ import annotations

import math

import torch

from ..capture.receptive_field import ReceptiveField
from ..errors import CnnscopeError
from .histograms import HistogramAccumulator, LogBins, remap
from .ranking import Kept, priorities, take
from .results import LayerStats, Moments, examples_from_kept

NO_PRIORITY = 1 << 31  #: above every priority: the threshold of a band cell that is not full
ALL = (1 << 31) - 1  #: the same in the int32 screening table (every priority is <= it)


def memory_matrix(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A contiguous 2-D view of ``x`` (``[C, N]``) in memory order: ``(x, True)`` or ``(x.T, False)``.

    Channels-last activations give ``x`` with strides ``(1, C)``: their matrix is the ``[N, C]`` view ``x.T``.
    Anything else that is not contiguous is copied.
    """
    if x.is_contiguous():
        return x, True
    if x.t().is_contiguous():
        return x.t(), False
    return x.contiguous(), True


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Ascending flat indices of the ``True`` entries of a contiguous bool tensor (``int64 [K]``).

    A sparse mask is searched eight bytes at a time: only the words that hold a ``True`` are expanded.
    """
    flat = mask.reshape(-1)
    n = flat.numel()
    head = n - n % 8
    if head < 64 or not flat.is_contiguous() or flat.data_ptr() % 8:
        return torch.nonzero(flat).squeeze(1)
    words = flat[:head].view(torch.uint8).view(torch.int64)
    hit = torch.nonzero(words).squeeze(1)
    idx = (hit[:, None] * 8 + torch.arange(8, device=flat.device)).reshape(-1)
    idx = take(idx, torch.nonzero(take(flat, idx)).squeeze(1))
    if head < n:
        idx = torch.cat([idx, torch.nonzero(flat[head:]).squeeze(1) + head])
    return idx


class LayerAccumulator:
    """Running statistics of one layer.

    Args:
        post: how the layer's outputs are known: ``"same"`` (the values are the outputs), ``("clamp", lo, hi)``
            (pre-activation values of a ReLU-family module: outputs = values clamped, the histogram remapped exactly) or
            ``"captured"`` (given to :meth:`update`).
    """

    def __init__(self, name: str, channels: int, grid: tuple[int, int], pre_activation: bool, post: object, k: int,
                 bottom_k: int, band_samples: int, bins: LogBins, seed: int, device: torch.device) -> None:
        self.name, self.channels, self.grid, self.pre_activation = name, channels, grid, pre_activation
        self.post = post
        self.k, self.bottom_k, self.m, self.bins, self.seed = k, bottom_k, band_samples, bins, seed
        self.n_bands = bins.n_bands
        self.top = Kept.empty(channels, k, torch.float32, device)
        self.bottom = Kept.empty(channels, bottom_k, torch.float32, device)
        self.bands = Kept.empty(channels * self.n_bands, band_samples, torch.int64, device)
        self.band_threshold = torch.full((channels * self.n_bands,), NO_PRIORITY, dtype=torch.int64, device=device)
        self._band_of_bin = torch.as_tensor(bins.band_of_bin(), device=device)
        self._bin_index = torch.arange(bins.n_bins, device=device)
        lower, upper = bins.bin_bounds()
        self._bin_lower = torch.as_tensor(lower, dtype=torch.float32, device=device)
        self._bin_upper = torch.as_tensor(upper, dtype=torch.float32, device=device)
        #: flat histogram index ``channel * n_bins + bin`` -> band cell ``channel * n_bands + band``
        self._cell_of_flat = (torch.arange(channels, device=device)[:, None] * self.n_bands
                              + self._band_of_bin[None, :]).reshape(-1)
        self.hist = HistogramAccumulator(bins, channels, device)
        self.hist_output = HistogramAccumulator(bins, channels, device) if post == "captured" else None
        self.moments = {"values": Moments.empty(channels), "output": Moments.empty(channels)}

    # -- per batch -------------------------------------------------------------------------------------------
    def update(self, keys: torch.Tensor, values: torch.Tensor, outputs: torch.Tensor | None = None) -> None:
        """Add one batch: the ranked values and, for ``post="captured"``, the layer's outputs.

        Shape:
            - keys: ``[N]`` global position keys, ``N = B * h * w`` in ``(b, y, x)`` order.
            - values, outputs: ``[B, C, h, w]``.
        """
        c = self.channels
        x = values.detach().transpose(0, 1).reshape(c, -1).float()  # a view for channels-last values
        mat, channel_major = memory_matrix(x)
        flat, counts = self.hist.add(mat, channel_major)
        self._rank(keys, mat, channel_major, flat, counts)
        self._moments("values", x)
        if isinstance(self.post, tuple):
            self._moments("output", x.clamp(self.post[1], self.post[2]), scratch=True)
        elif self.hist_output is not None:
            if outputs is None:
                raise CnnscopeError(f"layer {self.name!r} needs its outputs for the output statistics")
            y = outputs.detach().transpose(0, 1).reshape(c, -1).float()
            self.hist_output.add(*memory_matrix(y))
            self._moments("output", y)

    def _moments(self, kind: str, values: torch.Tensor, scratch: bool = False) -> None:
        """Add a batch to the running mean/variance: ``float32`` sums per batch, Chan's merge in ``float64``.

        The sums are taken around the running mean (the batch mean for the first batch), so there is no
        cancellation when the mean is large compared to the spread. ``scratch``: ``values`` may be overwritten.
        """
        current = self.moments[kind]
        n = values.shape[1]
        if current.count:
            shift = torch.as_tensor(current.mean, dtype=values.dtype, device=values.device)
        else:
            shift = values.mean(dim=1)
        s1 = values.sum(dim=1) - shift * n
        centered = values.sub_(shift[:, None]) if scratch else values - shift[:, None]
        s2 = torch.linalg.vector_norm(centered, dim=1) ** 2
        s1, s2, base = (t.double().cpu() for t in (s1, s2, shift))
        batch = Moments(n, base + s1 / n, (s2 - s1 * s1 / n).clamp(min=0.0))
        self.moments[kind] = current.merge(batch)

    def _rank(self, keys: torch.Tensor, mat: torch.Tensor, channel_major: bool, flat: torch.Tensor,
              counts: torch.Tensor) -> None:
        """Offer the batch's positions to the top-k, the bottom-k and the band samples.

        One table lookup and one comparison per value screen the positions: the ``[C, n_bins]`` table holds each
        (channel, bin)'s band-sample threshold, raised to "everything" for the bins that can hold values reaching
        the channel's top-k or bottom-k; a position whose priority is at most its entry is a candidate (a superset
        of what the exact rules of :meth:`_offer` admit).

        Shape:
            - mat: ``[C, N]`` (``channel_major``) or ``[N, C]``; flat: the same, ``channel * n_bins + bin``.
            - counts: ``[C, n_bins]`` the batch's histogram.
        """
        prio = priorities(keys, self.seed)
        c, n = self.channels, keys.numel()
        top, bottom = self._top_threshold(), self._bottom_threshold()
        # the batch's k-th largest value lies in the highest bin with >= k values at or above it (equal values
        # share a bin): lower bins cannot reach the top-k; likewise the bottom-k
        first_top = (counts.flip(1).cumsum(1) >= self.k).sum(1) - 1
        last_bottom = self.bins.n_bins - (counts.cumsum(1) >= self.bottom_k).sum(1)
        if self._ties_lose(keys):  # a value equal to a record cannot enter: the zero bin of a ReLU layer stays out
            reach_top = (self._bin_index >= first_top[:, None]) & (self._bin_upper > top[:, None])
            reach_bottom = (self._bin_index <= last_bottom[:, None]) & (self._bin_lower < bottom[:, None])
        else:
            reach_top = (self._bin_index >= first_top[:, None]) & (self._bin_upper >= top[:, None])
            reach_bottom = (self._bin_index <= last_bottom[:, None]) & (self._bin_lower <= bottom[:, None])
        band = self._band_limits(prio, flat, channel_major, counts)
        table = band.view(c, self.n_bands)[:, self._band_of_bin].clamp(max=ALL)
        table = torch.where(reach_top | reach_bottom, ALL, table).to(torch.int32).reshape(-1)
        cell = torch.index_select(table, 0, flat.reshape(-1)).view(flat.shape)
        found = flat_nonzero((prio[None, :] if channel_major else prio[:, None]) <= cell)
        if not found.numel():
            return
        if channel_major:
            rows, cols = found // n, found % n
        else:
            rows, cols = found % c, found // c
        self._offer(rows, take(mat.reshape(-1), found), take(keys, cols), take(prio, cols).to(torch.int64),
                    take(flat.reshape(-1), found).to(torch.int64), reach_top.reshape(-1), reach_bottom.reshape(-1),
                    band)

    def _band_limits(self, prio: torch.Tensor, flat: torch.Tensor, channel_major: bool, counts: torch.Tensor
                     ) -> torch.Tensor:
        """Per band cell a priority that every position entering the cell's sample is at most (``int64 [C*bands]``).

        The kept sample's threshold, lowered where the batch alone fills a cell: positions are grouped by priority
        into half-octave ranges; the top of the first range that brings a cell ``band_samples`` positions of the
        batch bounds the cell's ``band_samples``-th smallest priority in the batch. Counting costs a pass over the
        values, so it runs only when the kept thresholds would let many more positions through (the first batch,
        or bands the earlier batches rarely reached).
        """
        state = self.band_threshold
        per_cell = torch.zeros(self.channels, self.n_bands, dtype=counts.dtype, device=counts.device)
        per_cell = per_cell.index_add_(1, self._band_of_bin, counts).reshape(-1)
        expected = (per_cell.double() * (state.double() / NO_PRIORITY)).sum()
        needed = per_cell.clamp(max=2 * self.m).sum()
        if bool(expected <= 2 * needed + self.channels):
            return state
        n = prio.numel()
        octaves = max(1, math.ceil(math.log2(max(n, 1) / self.m)) + 1)
        octaves = min(octaves, 28)
        edges = sorted([NO_PRIORITY >> i for i in range(1, octaves + 1)] + [3 << (29 - i) for i in range(octaves)])
        edges = torch.tensor(edges, device=prio.device)  # range j holds priorities in [edges[j-1], edges[j])
        ranges = edges.numel() + 1
        which = torch.bucketize(prio, edges, right=True).to(torch.int32)
        lookup = (self._cell_of_flat * ranges).to(torch.int32)
        index = torch.index_select(lookup, 0, flat.reshape(-1)).view(flat.shape)
        index += which[None, :] if channel_major else which[:, None]
        hist = torch.bincount(index.reshape(-1), minlength=per_cell.numel() * ranges).view(-1, ranges)
        reached = hist.cumsum(1) >= self.m
        first = reached.to(torch.uint8).argmax(1)
        limit = torch.cat([edges - 1, torch.tensor([NO_PRIORITY], device=prio.device)])[first]
        return torch.minimum(state, torch.where(reached[:, -1], limit, NO_PRIORITY))

    def _offer(self, rows: torch.Tensor, v: torch.Tensor, k: torch.Tensor, p: torch.Tensor, flat: torch.Tensor,
               reach_top: torch.Tensor, reach_bottom: torch.Tensor, band: torch.Tensor) -> None:
        """Apply the exact admission rules to the candidates and merge them.

        A candidate enters the top-k only if it ranks before the channel's k-th record (a larger value, or an equal
        one at a smaller position), so masses of equal values (zeros, clipped maxima) do not reach the merge.
        """
        for kept, reach, sign in ((self.top, reach_top, 1.0), (self.bottom, reach_bottom, -1.0)):
            value, key = self._last(kept, sign)
            value, key = take(value, rows), take(key, rows)
            better = v > value if sign > 0 else v < value
            new = torch.nonzero(take(reach, flat) & (better | ((v == value) & (k < key)))).squeeze(1)
            if new.numel():
                values = take(v, new)
                kept.merge(take(rows, new), values * sign, take(k, new), values)
        cells = take(self._cell_of_flat, flat)
        new = torch.nonzero(p <= take(band, cells)).squeeze(1)
        if new.numel():
            self.bands.merge(take(cells, new), -take(p, new), take(k, new), take(v, new))
            full = self.bands.filled[:, -1]
            self.band_threshold = torch.where(full, -self.bands.scores[:, -1], NO_PRIORITY)

    def _ties_lose(self, keys: torch.Tensor) -> bool:
        """Whether every key of the batch is larger than every kept record's: then an equal value never enters
        (:meth:`_offer` breaks ties by the smaller key), and the screen may compare strictly. Streams hand out
        increasing keys, so after the first batch this holds and masses of equal values (the zeros of a ReLU, the
        sixes of a ReLU6) are not even candidates."""
        kept_keys = torch.cat([self.top.keys.reshape(-1), self.bottom.keys.reshape(-1)])
        return bool(keys.numel() and kept_keys.max() < keys.min())

    @staticmethod
    def _last(kept: Kept, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Value and key of each row's last record (``sign``: +1 top, -1 bottom); rows not full admit anything."""
        full = kept.filled[:, -1]
        value = torch.where(full, kept.payload[:, -1], -sign * float("inf"))
        return value, torch.where(full, kept.keys[:, -1], torch.iinfo(torch.int64).max)

    def _top_threshold(self) -> torch.Tensor:
        return self._last(self.top, 1.0)[0]

    def _bottom_threshold(self) -> torch.Tensor:
        return self._last(self.bottom, -1.0)[0]

    # -- result ----------------------------------------------------------------------------------------------
    def result(self, rf: ReceptiveField | None) -> LayerStats:
        c = self.channels
        counts = self.hist.counts.cpu()
        if isinstance(self.post, tuple):
            output_counts = remap(counts, self.bins.post_map(self.post[1], self.post[2]))
        elif self.hist_output is not None:
            output_counts = self.hist_output.counts.cpu()
        else:
            output_counts = counts
        return LayerStats(
            layer=self.name, pre_activation=self.pre_activation, grid=self.grid,
            top=examples_from_kept(self.top, self.grid, rf, (c, self.k)),
            bottom=examples_from_kept(self.bottom, self.grid, rf, (c, self.bottom_k)),
            hist=counts, hist_output=output_counts, moments=self.moments["values"],
            moments_output=self.moments["output"] if self.post != "same" else self.moments["values"],
            positive=counts[:, self.bins.zero_bin + 1:].sum(dim=1),
            # the bottom-k / top-k hold the extremes exactly
            minimum=self.bottom.payload[:, 0].cpu(), maximum=self.top.payload[:, 0].cpu(),
            bands=examples_from_kept(self.bands, self.grid, rf, (c, self.n_bands, self.m), negate=True), rf=rf)
