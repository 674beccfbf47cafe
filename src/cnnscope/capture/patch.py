"""``patch_outputs``: temporarily replace layer outputs (ablation, masking, directions) through hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from .state import module_of, resolve_layers

if TYPE_CHECKING:
    from ..models import ModelLike


@contextmanager
def patch_outputs(model: ModelLike, fns: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Within the block, layer ``name``'s output ``y`` is replaced by ``fns[name](y)`` on every call.

    The functions usually return a tensor of the same shape; any other is passed on as it is (incremental occlusion
    swaps in crops and activations of another size). Hooks are removed in ``finally``.
    """
    module = module_of(model)
    layers = resolve_layers(module, list(fns))
    handles = []
    try:
        for name, mod in layers.items():
            fn = fns[name]
            handles.append(mod.register_forward_hook(lambda m, i, o, fn=fn: fn(o)))
        yield
    finally:
        for h in handles:
            h.remove()
