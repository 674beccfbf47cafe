"""``conv_bn_pairs``: which batch norms read a convolution's output directly (for folding them)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import torch
from torch import nn

from .state import module_of

if TYPE_CHECKING:
    from ..models import ModelLike


def conv_bn_pairs(model: ModelLike, images: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batch-norm name)`` for every ``BatchNorm2d`` that reads a ``Conv2d``'s output directly.

    One forward of ``images[:1]`` (a model-space batch) without gradients; the module must be in the mode the
    caller runs it in.
    """
    module = module_of(model)
    produced: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    keep: list[torch.Tensor] = []  # held, so tensor ids stay unique during the pass
    handles = []

    def conv_out(name: str, out: object) -> None:
        if isinstance(out, torch.Tensor):
            produced[id(out)] = name
            keep.append(out)

    def bn_in(name: str, inputs: tuple) -> None:
        src = produced.get(id(inputs[0])) if inputs and isinstance(inputs[0], torch.Tensor) else None
        if src is not None:
            pairs.append((src, name))

    for name, mod in module.named_modules():
        if type(mod) is nn.Conv2d:
            handles.append(mod.register_forward_hook(lambda m, i, o, n=name: conv_out(n, o)))
        elif isinstance(mod, nn.BatchNorm2d):
            handles.append(mod.register_forward_pre_hook(lambda m, i, n=name: bn_in(n, i)))
    try:
        with torch.no_grad():
            module(images[:1])
    finally:
        for h in handles:
            h.remove()
    convs = Counter(c for c, _ in pairs)
    bns = Counter(b for _, b in pairs)
    return [(c, b) for c, b in pairs if convs[c] == 1 and bns[b] == 1]  # modules called twice are left alone
