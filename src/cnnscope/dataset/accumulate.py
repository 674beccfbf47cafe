"""The per-layer streaming state of the statistics pass (fixed memory, exact, on the activations' device).

Per batch every value is binned once (histogram) and screened once: one lookup in a ``[C, n_bins]`` table and one
comparison per element keep only the positions that can change the top-k, the bottom-k or a band sample; the
exact ranking rules then run on those few candidates (:mod:`.ranking`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..capture.receptive_field import ReceptiveField
from ..errors import CnnscopeError
from .histograms import HistogramAccumulator, LogBins, remap
from .ranking import Kept, priorities
from .results import LayerStats, Moments, examples_from_kept

NO_PRIORITY = 1 << 31  #: above every priority: the threshold of a band cell that is not full
ALL = (1 << 31) - 1  #: the same in the int32 screening table (every priority is <= it)


class LayerAccumulator:
    """Running statistics of one layer.

    Args:
        post: how the post-activation values are known: ``"same"`` (not an activation layer: post = values),
            ``("clamp", lo, hi)`` (ReLU-family: post = values clamped, its histogram remapped exactly) or
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
        lower, upper = bins.bin_bounds()
        self._bin_lower = torch.as_tensor(lower, dtype=torch.float32, device=device)
        self._bin_upper = torch.as_tensor(upper, dtype=torch.float32, device=device)
        self.hist_pre = HistogramAccumulator(bins, channels, device)
        self.hist_post = HistogramAccumulator(bins, channels, device) if post == "captured" else None
        self.moments = {"pre": Moments(0, np.zeros(channels), np.zeros(channels)),
                        "post": Moments(0, np.zeros(channels), np.zeros(channels))}

    # -- per batch -------------------------------------------------------------------------------------------
    def update(self, keys: torch.Tensor, pre: torch.Tensor, post: torch.Tensor | None = None) -> None:
        """Add one batch.

        Shape:
            - keys: ``[N]`` global position keys, ``N = B * h * w`` in ``(b, y, x)`` order.
            - pre, post: ``[B, C, h, w]``.
        """
        c = self.channels
        x = pre.detach().transpose(0, 1).reshape(c, -1).float()
        if x.data_ptr() == pre.data_ptr():
            x = x.clone()
        flat = self.hist_pre.add(x)
        self._rank(keys, x, flat)
        self._moments("pre", x)
        if isinstance(self.post, tuple):
            self._moments("post", x.clamp_(self.post[1], self.post[2]))
        elif self.hist_post is not None:
            if post is None:
                raise CnnscopeError(f"layer {self.name!r} needs its outputs for post-activation statistics")
            y = post.detach().transpose(0, 1).reshape(c, -1).float()
            self.hist_post.add(y)
            self._moments("post", y)

    def _moments(self, kind: str, values: torch.Tensor) -> None:
        """Add a batch to the running mean/variance: ``float32`` sums per batch, Chan's merge in ``float64``.

        The sums are taken around the running mean (the batch mean for the first batch), so there is no
        cancellation when the mean is large compared to the spread.
        """
        current = self.moments[kind]
        n = values.shape[1]
        if current.count:
            shift = torch.as_tensor(current.mean, dtype=values.dtype, device=values.device)
        else:
            shift = values.mean(dim=1)
        s1 = values.sum(dim=1) - shift * n
        s2 = torch.linalg.vector_norm(values - shift[:, None], dim=1) ** 2
        s1, s2, base = (t.double().cpu().numpy() for t in (s1, s2, shift))
        batch = Moments(n, base + s1 / n, np.maximum(s2 - s1 * s1 / n, 0.0))
        self.moments[kind] = current.merge(batch)

    def _rank(self, keys: torch.Tensor, x: torch.Tensor, flat: torch.Tensor) -> None:
        """Offer the batch's positions to the top-k, the bottom-k and the band samples.

        One table lookup and one comparison per value screen the positions: the ``[C, n_bins]`` table holds each
        (channel, bin)'s band-sample threshold, raised to "everything" for the bins that can hold values reaching
        the channel's top-k or bottom-k threshold; a position whose priority is at most its entry is a candidate
        (a superset of what the exact rules of :meth:`_offer` admit). Until the lists fill up (the first batch)
        positions are offered in growing chunks, by increasing priority, so the thresholds tighten early.
        """
        prio = priorities(keys, self.seed)
        n, start = x.shape[1], 0
        warm = bool(self.band_threshold.view(self.channels, -1).min(dim=1).values.lt(NO_PRIORITY).all()
                    and self.top.filled[:, -1].all() and self.bottom.filled[:, -1].all())
        size = n if warm else max(32, n // 512)
        # whatever enters the top-k is at least the batch's k-th largest value (ties included), likewise bottom-k
        batch_top = x.topk(min(self.k, n), dim=1).values[:, -1] if not warm else None
        batch_bottom = x.topk(min(self.bottom_k, n), dim=1, largest=False).values[:, -1] if not warm else None
        if not warm:  # offer positions by increasing priority: a band cell then takes its final members first
            order = torch.argsort(prio)
            prio, keys, x, flat = prio[order], keys[order], x[:, order], flat[:, order]
        while start < n:
            stop = min(n, start + size)
            xs, ps, fs = x[:, start:stop], prio[start:stop], flat[:, start:stop]
            high, low = self._top_threshold(), self._bottom_threshold()
            if batch_top is not None:
                high, low = torch.maximum(high, batch_top), torch.minimum(low, batch_bottom)
            table = self.band_threshold.view(self.channels, self.n_bands)[:, self._band_of_bin]
            reach = (self._bin_upper[None, :] >= high[:, None]) | (self._bin_lower[None, :] <= low[:, None])
            table = torch.where(reach, ALL, table.clamp(max=ALL)).to(torch.int32).reshape(-1)
            cell_thr = torch.index_select(table, 0, fs.reshape(-1)).view(fs.shape)
            rows, cols = torch.nonzero(ps[None, :] <= cell_thr, as_tuple=True)
            if rows.numel():
                self._offer(rows, xs[rows, cols], keys[start + cols], ps[cols].to(torch.int64))
            start = stop
            size *= 2

    def _offer(self, rows: torch.Tensor, v: torch.Tensor, k: torch.Tensor, p: torch.Tensor) -> None:
        """Apply the exact admission rules to the candidates and merge them."""
        sel = v >= self._top_threshold()[rows]
        if sel.any():
            self.top.merge(rows[sel], v[sel], k[sel], v[sel])
        sel = v <= self._bottom_threshold()[rows]
        if sel.any():
            self.bottom.merge(rows[sel], -v[sel], k[sel], v[sel])
        cells = rows * self.n_bands + self.bins.lookup(v, "band").long()
        sel = p <= self.band_threshold[cells]
        if sel.any():
            self.bands.merge(cells[sel], -p[sel], k[sel], v[sel])
            full = self.bands.filled[:, -1]
            self.band_threshold = torch.where(full, -self.bands.scores[:, -1], NO_PRIORITY)

    def _top_threshold(self) -> torch.Tensor:
        full = self.top.filled[:, -1]
        return torch.where(full, self.top.payload[:, -1], float("-inf"))

    def _bottom_threshold(self) -> torch.Tensor:
        full = self.bottom.filled[:, -1]
        return torch.where(full, self.bottom.payload[:, -1], float("inf"))

    # -- result ----------------------------------------------------------------------------------------------
    def result(self, rf: ReceptiveField | None) -> LayerStats:
        c = self.channels
        pre_counts = self.hist_pre.counts.cpu().numpy()
        if isinstance(self.post, tuple):
            post_counts = remap(pre_counts, self.bins.post_map(self.post[1], self.post[2]))
        elif self.hist_post is not None:
            post_counts = self.hist_post.counts.cpu().numpy()
        else:
            post_counts = pre_counts
        positive = pre_counts[:, self.bins.zero_bin + 1:].sum(axis=1)
        return LayerStats(
            layer=self.name, pre_activation=self.pre_activation, grid=self.grid,
            top=examples_from_kept(self.top, self.grid, rf, (c, self.k)),
            bottom=examples_from_kept(self.bottom, self.grid, rf, (c, self.bottom_k)),
            hist_pre=pre_counts, hist_post=post_counts, moments_pre=self.moments["pre"],
            moments_post=self.moments["post"] if self.post != "same" else self.moments["pre"],
            positive=positive, minimum=self.bottom.payload[:, 0].cpu().numpy(),  # the bottom-k / top-k hold the
            maximum=self.top.payload[:, 0].cpu().numpy(),  # extremes exactly
            bands=examples_from_kept(self.bands, self.grid, rf, (c, self.n_bands, self.m), negate=True), rf=rf)
