"""The streaming accumulator against brute force on synthetic activations: both memory formats, shifting scales,
ties, ids out of order; and its helpers (sparse nonzero, exact histogram remapping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.dataset import StatisticsAccumulator
from cnnscope.dataset.accumulate import flat_nonzero, memory_matrix
from cnnscope.dataset.histograms import LogBins, remap
from cnnscope.dataset.ranking import priorities

from .helpers import tiny

C, H, W = 5, 6, 7


def _batches(seed: int = 0, clipped: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(ids, values [B, C, H, W])``: tiny values first, then a much larger scale (bands the first batches never
    reached), then many exact ties (zeros and half steps); ids out of order. ``clipped``: values clipped to
    ``[0, 1]`` (ReLU6-like outputs: the top-k and bottom-k are ties broken by position)."""
    g = np.random.default_rng(seed)
    ids = np.array([11, 13, 12, 6, 9, 3, 0, 10, 2, 8, 4, 7, 1, 5])  # later batches hold smaller ids too
    scales = [0.01, 0.01, 100.0, 3.0, 3.0]
    out, start = [], 0
    for i, (size, scale) in enumerate(zip([3, 2, 4, 3, 2], scales)):
        v = g.standard_normal((size, C, H, W)) * scale
        if i >= 3:
            v = np.where(g.random(v.shape) < 0.5, 0.0, np.round(v * 2) / 2)
        if clipped:
            v = np.clip(v * 100, 0.0, 1.0)
        out.append((torch.from_numpy(ids[start:start + size].copy()), torch.from_numpy(v.astype(np.float32))))
        start += size
    return out


def _brute(batches, k: int, bottom_k: int, m: int, bins: LogBins, seed: int):
    ids = torch.cat([i for i, _ in batches]).numpy()
    values = torch.cat([v for _, v in batches]).numpy()
    keys = (ids[:, None] * (H * W) + np.arange(H * W)[None, :]).reshape(-1)
    flat = values.transpose(1, 0, 2, 3).reshape(C, -1)
    prio = priorities(torch.from_numpy(keys), seed).numpy().astype(np.int64)
    top, bottom, bands = [], [], {}
    for ch in range(C):
        v = flat[ch]
        top.append(keys[np.lexsort((keys, -v))][:k])
        bottom.append(keys[np.lexsort((keys, v))][:bottom_k])
        band = bins.lookup(torch.from_numpy(v), "band").numpy()
        for b in np.unique(band):
            idx = np.flatnonzero(band == b)
            bands[ch, b] = keys[idx[np.lexsort((keys[idx], prio[idx]))][:m]]
    hist = np.stack([np.bincount(bins.lookup(torch.from_numpy(flat[ch])).numpy(), minlength=bins.n_bins)
                     for ch in range(C)])
    return np.stack(top), np.stack(bottom), bands, hist, flat


@pytest.mark.parametrize("clipped", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_streaming_equals_brute_force_with_shifts_and_ties(channels_last, clipped):
    model = tiny("relu6")
    k, bottom_k, m, seed = 4, 3, 2, 5
    batches = _batches(clipped=clipped)
    acc = StatisticsAccumulator(model, ["pw"], k=k, bottom_k=bottom_k, band_samples=m, seed=seed)
    for ids, v in batches:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        acc.add(ids, {"pw": v.contiguous(memory_format=fmt)})
    ls = acc.result()["pw"]
    top, bottom, bands, hist, flat = _brute(batches, k, bottom_k, m, acc.bins, seed)
    np.testing.assert_array_equal(ls.top.keys((H, W)).numpy(), top)
    np.testing.assert_array_equal(ls.bottom.keys((H, W)).numpy(), bottom)
    np.testing.assert_array_equal(ls.hist.numpy(), hist)
    assert ls.hist_output is ls.hist and not ls.pre_activation  # the values are the layer's outputs
    got = ls.bands.keys((H, W)).numpy()
    for ch in range(C):
        for b in range(acc.bins.n_bands):
            want = bands.get((ch, b), np.zeros(0, np.int64))
            np.testing.assert_array_equal(got[ch, b][:len(want)], want, err_msg=f"channel {ch} band {b}")
            assert (got[ch, b][len(want):] == -1).all()
    np.testing.assert_allclose(ls.mean.numpy(), flat.astype(np.float64).mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ls.std.numpy(), flat.astype(np.float64).std(axis=1), rtol=1e-5, atol=1e-6)


def test_memory_matrix_reads_channels_last_values_without_a_copy():
    v = torch.randn(3, C, H, W)
    x = v.contiguous(memory_format=torch.channels_last).transpose(0, 1).reshape(C, -1)
    mat, channel_major = memory_matrix(x)
    assert not channel_major and mat.shape == (3 * H * W, C) and mat.data_ptr() == x.data_ptr()
    mat, channel_major = memory_matrix(v.transpose(0, 1).reshape(C, -1))
    assert channel_major and mat.is_contiguous() and mat.shape == (C, 3 * H * W)


@pytest.mark.parametrize("n", [0, 5, 64, 1000, 4099])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
def test_flat_nonzero_equals_nonzero(n, density):
    g = torch.Generator().manual_seed(n)
    mask = torch.rand(n + 3, generator=g) < density
    for m in (mask[:n], mask[3:], mask[:n].view(-1, 1)):  # also misaligned and 2-D
        np.testing.assert_array_equal(flat_nonzero(m).numpy(), torch.nonzero(m.reshape(-1)).squeeze(1).numpy())


def test_remap_moves_counts_like_a_transfer_matrix():
    bins = LogBins()
    g = np.random.default_rng(0)
    counts = g.integers(0, 1000, (4, bins.n_bins))
    for target in (bins.post_map(0.0, 6.0), bins.post_map(0.0, None), g.integers(0, bins.n_bins, bins.n_bins)):
        move = np.zeros((bins.n_bins, bins.n_bins), dtype=counts.dtype)
        move[np.arange(bins.n_bins), target] = 1
        np.testing.assert_array_equal(remap(torch.from_numpy(counts), target).numpy(), counts @ move)
        np.testing.assert_array_equal(remap(torch.from_numpy(counts[0]), target).numpy(), counts[0] @ move)
