"""``list_layers``: every submodule with its kind and output shape, from one probe forward."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from .state import evaluating, first_tensor, module_device, module_dtype, module_of

if TYPE_CHECKING:
    from ..models import ModelLike


@dataclass(frozen=True)
class LayerInfo:
    """One submodule as seen in a probe forward.

    Attributes:
        name: dotted ``named_modules()`` name.
        kind: class name (``"Conv2d"``, ``"InvertedResidual"``, ...).
        output_shape: output shape without the batch dimension (first call), ``None`` if it never ran.
        params: number of parameters inside the module (recursively).
        calls: how many times it ran in one forward (``> 1`` means a reused module).
        leaf: whether it has no children.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    params: int
    calls: int
    leaf: bool

    @property
    def channels(self) -> int | None:
        """Channel count for ``[C, H, W]`` or ``[C]`` outputs."""
        return self.output_shape[0] if self.output_shape else None

    @property
    def spatial(self) -> tuple[int, int] | None:
        """``(H, W)`` for ``[C, H, W]`` outputs."""
        s = self.output_shape
        return (s[1], s[2]) if s is not None and len(s) == 3 else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape else None
        return d


def input_channels(model: ModelLike, *, default: int = 3) -> int:
    """Channels of the first ``Conv2d`` in the module (``default`` when there is none)."""
    module = module_of(model)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return default


def list_layers(model: ModelLike, input_size: int | tuple[int, int] | None = None, *, in_channels: int | None = None
                ) -> list[LayerInfo]:
    """All submodules in execution order (modules that never ran come last), from one probe forward.

    The probe runs under ``torch.no_grad()`` in temporary eval mode on the module's device; nothing about the
    module changes.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        input_size: probe size; default: the ``LoadedModel``'s input size, 224 for a plain module.
        in_channels: probe channels; default: the model's (first convolution's) channel count.
    """
    if input_size is None:
        input_size = tuple(getattr(model, "input_size", (224, 224)))  # type: ignore[assignment]
    if in_channels is None and hasattr(model, "mean") and hasattr(model, "module"):
        in_channels = len(model.mean)  # type: ignore[attr-defined]
    module = module_of(model)
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    c = in_channels or input_channels(module)
    x = torch.zeros(1, c, h, w, device=module_device(module), dtype=module_dtype(module))
    named = [(n, m) for n, m in module.named_modules() if n]
    seen: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = {}
    order: list[str] = []

    def pre_hook(name: str, mod: nn.Module, inputs: tuple) -> None:
        if name not in calls:
            order.append(name)  # parents before children, in the order the forward enters them

    def hook(name: str, mod: nn.Module, inputs: tuple, output: object) -> None:
        calls[name] = calls.get(name, 0) + 1
        if name not in seen:
            t = first_tensor(output)
            seen[name] = tuple(t.shape[1:]) if t is not None else None

    handles = []
    try:
        for name, mod in named:
            handles.append(mod.register_forward_pre_hook(partial(pre_hook, name)))
            handles.append(mod.register_forward_hook(partial(hook, name)))
        with torch.no_grad(), evaluating(module):
            module(x)
    finally:
        for hd in handles:
            hd.remove()
    table = dict(named)
    rest = [n for n, _ in named if n not in calls]
    out = []
    for name in order + rest:
        mod = table[name]
        out.append(LayerInfo(name=name, kind=type(mod).__name__, output_shape=seen.get(name),
                             params=sum(p.numel() for p in mod.parameters()), calls=calls.get(name, 0),
                             leaf=not any(True for _ in mod.children())))
    return out
