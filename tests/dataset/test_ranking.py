"""The ranking helper against an independent sort: ties, signed zeros, merges in any order."""

from __future__ import annotations

import numpy as np
import torch

from cnnscope.dataset.ranking import Kept, priorities, select


def _brute(rows, scores, keys, n_rows, m):
    out = []
    for r in range(n_rows):
        idx = np.flatnonzero(rows == r)
        order = idx[np.lexsort((keys[idx], -scores[idx].astype(np.float64)))][:m]
        out.append(list(zip(scores[order].tolist(), keys[order].tolist())))
    return out


def test_select_matches_lexsort_with_ties_and_signed_zeros():
    g = np.random.default_rng(0)
    n, n_rows, m = 400, 7, 5
    rows = g.integers(0, n_rows, n)
    scores = g.choice(np.array([-2.5, -0.0, 0.0, 1.0, 3.25, 7.0], dtype=np.float32), n)
    keys = g.permutation(10_000)[:n]
    kept = select(torch.from_numpy(rows), torch.from_numpy(scores), torch.from_numpy(keys),
                  torch.from_numpy(scores), n_rows, m)
    want = _brute(rows, scores, keys, n_rows, m)
    for r in range(n_rows):
        got = [(float(s), int(k)) for s, k in zip(kept.scores[r], kept.keys[r]) if k >= 0]
        assert got == [(float(s), int(k)) for s, k in want[r]]


def test_merging_in_pieces_equals_selecting_at_once():
    g = np.random.default_rng(1)
    n, n_rows, m = 600, 5, 4
    rows = torch.from_numpy(g.integers(0, n_rows, n))
    scores = torch.from_numpy(g.integers(-3, 3, n).astype(np.float32))  # many ties
    keys = torch.from_numpy(g.permutation(n).astype(np.int64))
    once = select(rows, scores, keys, scores, n_rows, m)
    state = Kept.empty(n_rows, m, torch.float32, torch.device("cpu"))
    for part in np.array_split(g.permutation(n), 7):
        p = torch.from_numpy(part)
        state.merge(rows[p], scores[p], keys[p], scores[p])
    assert torch.equal(state.keys, once.keys) and torch.equal(state.scores, once.scores)


def test_priorities_are_uniform_and_reproducible():
    keys = torch.arange(200_000)
    p = priorities(keys, 3)
    assert p.dtype == torch.int32 and int(p.min()) >= 0
    assert torch.equal(p, priorities(keys, 3)) and not torch.equal(p, priorities(keys, 4))
    counts = np.bincount((p.numpy().astype(np.int64) >> 27), minlength=16)  # 16 equal bins of [0, 2**31)
    assert counts.min() > 0.9 * len(keys) / 16 and counts.max() < 1.1 * len(keys) / 16
