"""``layer_times``: when, within a forward pass, each named layer finishes (for cost estimates)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .state import module_of, resolve_layers

if TYPE_CHECKING:
    from ..models import ModelLike


@dataclass(frozen=True)
class LayerTime:
    """Timing of one layer in a forward pass.

    Attributes:
        share: share of the forward's time spent when the layer returned (0..1).
        calls: how many times the layer ran in one forward.
        shape: its output's shape (``None`` if not a tensor).
        output: an id shared by layers that return the very same tensor (a block and its last child).
    """

    share: float
    calls: int
    shape: tuple[int, ...] | None
    output: int


def layer_times(model: ModelLike, images: torch.Tensor, layers: Iterable[str], *, runs: int = 3
                ) -> dict[str, LayerTime]:
    """Time a forward of ``images`` (a model-space batch) and report when each of ``layers`` finishes.

    One warm-up forward, then ``runs`` timed ones without gradients; each stretch between two consecutive layer exits
    counts with its fastest run, which keeps the shares stable on a busy machine. On CUDA every hook synchronizes.
    The module is run as it is (set eval mode around the call if needed); hooks are removed in ``finally``.

    Returns:
        ``name -> LayerTime`` for the layers that ran, in execution order.
    """
    module = module_of(model)
    x = images
    mods = resolve_layers(module, list(layers))
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    seen: dict[str, float] = {}
    calls: dict[str, int] = {}
    outputs: dict[str, object] = {}  # held, so tensor ids stay unique during the pass

    def mark(name: str, out: object) -> None:
        sync()
        calls[name] = calls.get(name, 0) + 1
        seen[name] = time.perf_counter()
        outputs[name] = out

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: mark(n, o)) for n, m in mods.items()]
    timed: list[list[float]] = []  # per timed run: the exit time of each layer in execution order, then the end
    order: list[str] = []
    try:
        with torch.no_grad():
            for r in range(runs + 1):
                seen.clear()
                calls.clear()
                outputs.clear()
                sync()
                t0 = time.perf_counter()
                module(x)
                sync()
                end = time.perf_counter()
                order = sorted(seen, key=seen.get)
                if r:  # the first run warms up
                    timed.append([seen[n] - t0 for n in order] + [end - t0])
    finally:
        for h in handles:
            h.remove()
    segments = np.min(np.diff(np.array(timed), axis=1, prepend=0.0), axis=0)
    shares = np.cumsum(segments)[:-1] / max(float(segments.sum()), 1e-12)
    ids: dict[int, int] = {}
    result = {}
    for name, share in zip(order, shares, strict=True):
        out = outputs[name]
        key = ids.setdefault(id(out), len(ids))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        result[name] = LayerTime(float(share), calls[name], shape, key)
    outputs.clear()
    return result
