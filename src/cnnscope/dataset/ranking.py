"""Keep the ``m`` best records per row under a total order: the one helper behind top-k, bottom-k and band samples.

A record is ``(row, score, key)``: ``row`` is a channel (or a channel x band cell), ``score`` is what is ranked
(higher is better) and ``key`` is the record's global position (``image_id * h * w + y * w + x``). Records are
ordered by score descending, ties broken by the smaller key, so the kept set does not depend on batch sizes,
worker counts or the order in which partial results are merged: streaming equals brute force, bit for bit.

Band samples rank by a pseudo-random *priority* hashed from ``(seed, key)``: the ``m`` records of
smallest priority in a band are a uniform random sample of the band (without replacement), and the ``m``
smallest of a union are among the union of each part's ``m`` smallest, so samples merge exactly too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASK32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (two multiply-xorshift rounds) computed in ``int64`` without overflow.

    Shape:
        - x: any shape, integer values in ``[0, 2**32)``; output: same shape, ``int64`` in ``[0, 2**32)``.
    """
    x = x & MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    return (x >> 16) ^ x


def priorities(keys: torch.Tensor, seed: int) -> torch.Tensor:
    """Pseudo-random priorities of positions, uniform on ``[0, 2**31)`` and independent across keys (``int32``).

    All channels share a position's priority: the sample of each (channel, band) cell is still uniform, and one
    hash per position serves every channel.

    Shape:
        - keys: ``[N]`` int64 global position keys; output ``[N]`` int32.
    """
    lo = hash32(keys ^ (seed * 0x9E3779B1))
    return (hash32(lo ^ hash32((keys >> 32) + 0x7F4A7C15 + seed)) >> 1).to(torch.int32)


@dataclass
class Kept:
    """The ``m`` best records of each of ``R`` rows, best first; empty slots have ``key == -1``.

    Shape:
        - scores, keys: ``[R, m]``; payload: ``[R, m]`` (a second value carried along, e.g. the activation).
    """

    scores: torch.Tensor
    keys: torch.Tensor
    payload: torch.Tensor

    @classmethod
    def empty(cls, rows: int, m: int, score_dtype: torch.dtype, device: torch.device) -> Kept:
        low = torch.finfo(score_dtype).min if score_dtype.is_floating_point else torch.iinfo(score_dtype).min
        return cls(torch.full((rows, m), low, dtype=score_dtype, device=device),
                   torch.full((rows, m), -1, dtype=torch.int64, device=device),
                   torch.zeros((rows, m), dtype=torch.float32, device=device))

    @property
    def filled(self) -> torch.Tensor:
        """``[R, m]`` bool: which slots hold a record."""
        return self.keys >= 0

    def merge(self, rows: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, payload: torch.Tensor) -> Kept:
        """Add candidate records (flat ``[n]`` tensors) and keep the best ``m`` of each row (in place).

        Only the rows that received candidates are re-ranked, so a merge costs ``O(candidates + touched * m)``.
        """
        n_rows, m = self.keys.shape
        hit = torch.zeros(n_rows, dtype=torch.bool, device=rows.device).index_fill_(0, rows, True)
        touched = torch.nonzero(hit).squeeze(1)
        local = take(torch.cumsum(hit, 0) - 1, rows)
        old_keys = take(self.keys, touched).view(-1)
        filled = torch.nonzero(old_keys >= 0).squeeze(1)  # flat slots of the touched rows that hold a record
        kept = select(torch.cat([filled // m, local]),
                      torch.cat([take(take(self.scores, touched).view(-1), filled), scores.to(self.scores.dtype)]),
                      torch.cat([take(old_keys, filled), keys]),
                      torch.cat([take(take(self.payload, touched).view(-1), filled),
                                 payload.to(self.payload.dtype)]), touched.numel(), m)
        self.scores.index_copy_(0, touched, kept.scores)
        self.keys.index_copy_(0, touched, kept.keys)
        self.payload.index_copy_(0, touched, kept.payload)
        return self


def take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` along the first dimension (``index_select``: cheaper than advanced indexing)."""
    return torch.index_select(t, 0, index)


def ascending_score_key(scores: torch.Tensor) -> torch.Tensor:
    """An ``int64`` in ``[0, 2**32)`` that sorts ascending as ``scores`` sort descending.

    ``float32`` scores use their bits made monotone (sign-magnitude to two's complement); integer scores (negated
    priorities in ``(-2**32, 0]``) are negated.
    """
    if scores.dtype.is_floating_point:
        bits = (scores.float() + 0.0).contiguous().view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into 0.0
        monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # same order as the float values
        return (2 ** 31 - 1) - monotone
    return -scores.to(torch.int64)


def select(rows: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, payload: torch.Tensor, n_rows: int,
           m: int) -> Kept:
    """The ``m`` best records of each row among flat candidates (score descending, then key ascending).

    One stable sort by ``row * 2**32 + ascending_score_key(score)``; where two candidates of a row have equal
    scores, two: by key, then stably by that.

    Shape:
        - rows, scores, keys, payload: ``[n]``.
        - Output: :class:`Kept` with ``[n_rows, m]`` tensors.
    """
    device = keys.device
    packed = (rows.to(torch.int64) << 32) | ascending_score_key(scores)
    order = torch.argsort(packed, stable=True)
    ordered = take(packed, order)
    if ordered.numel() > 1 and bool((ordered[1:] == ordered[:-1]).any()):  # ties: break them by key
        order = torch.argsort(keys, stable=True)
        order = take(order, torch.argsort(take(packed, order), stable=True))
    rows, scores, keys, payload = (take(t, order) for t in (rows, scores, keys, payload))
    start = torch.searchsorted(rows, torch.arange(n_rows, device=device, dtype=rows.dtype))
    rank = torch.arange(rows.numel(), device=device) - take(start, rows)
    keep = torch.nonzero(rank < m).squeeze(1)
    out = Kept.empty(n_rows, m, scores.dtype, device)
    slot = take(rows, keep).to(torch.int64) * m + take(rank, keep)
    out.scores.view(-1).index_copy_(0, slot, take(scores, keep))
    out.keys.view(-1).index_copy_(0, slot, take(keys, keep).to(torch.int64))
    out.payload.view(-1).index_copy_(0, slot, take(payload, keep).to(out.payload.dtype))
    return out
