"""``list_layers``: every submodule with its kind, output shape and layout, from one probe forward."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CnnscopeError, LayerError, unknown
from ..units import check_layout, layout_grid
from .layout import LayoutProbe
from .state import canonical_layer, check_hookable, evaluating, first_tensor, module_device, module_dtype, module_of

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
        layout: how the output is laid out (:mod:`cnnscope.capture.layout`): ``"nchw"``, ``"nhwc"``, ``"tokens"``,
            ``"tokens+cls"``, ``"nc"`` (``[C]``, no grid), or ``None`` (undetermined, or no tensor).
        output_id: the output tensor's index in the order the probe forward made tensors; modules returning the
            very same tensor object (a block and its last child) share it (``None`` if it never ran).
        grid_size: ``(H, W)`` of the output's grid in its layout, ``None`` without one.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    params: int
    calls: int
    leaf: bool
    layout: str | None = None
    output_id: int | None = None
    grid_size: tuple[int, int] | None = None

    @property
    def channels(self) -> int | None:
        """Channel count in the output's layout (``None`` when the layout is undetermined)."""
        s, lay = self.output_shape, self.layout
        if s is None or lay is None:
            return None
        return s[-1] if lay in ("nhwc", "tokens", "tokens+cls") else s[0]

    @property
    def spatial(self) -> tuple[int, int] | None:
        """``(H, W)`` of the output's grid in its layout (``None`` without one)."""
        return self.grid_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape else None
        d["grid_size"] = list(self.grid_size) if self.grid_size else None
        d["channels"] = self.channels
        return d


def input_channels(model: ModelLike, *, default: int = 3) -> int:
    """Channels of the first ``Conv2d`` in the module (``default`` when there is none)."""
    module = module_of(model)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return default


def _probe_size(input_size: object) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of positive ints; one line otherwise."""
    pair = (input_size, input_size) if isinstance(input_size, int) else input_size
    try:
        h, w = pair  # type: ignore[misc]
        ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CnnscopeError(f"input size must be a positive int or (height, width) of positive ints, got "
                            f"{input_size!r}")
    return int(h), int(w)


def list_layers(model: ModelLike, input_size: int | tuple[int, int] | None = None, *, in_channels: int | None = None,
                layout: Mapping[str, str] | None = None) -> list[LayerInfo]:
    """All submodules in execution order (modules that never ran come last), from one probe forward.

    The probe runs under ``torch.no_grad()`` in temporary eval mode on the module's device; nothing about the
    module changes. Each output's layout is detected in the same forward (rules in :mod:`cnnscope.capture.layout`);
    channels and grid sizes are those of the layout.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        input_size: probe size; default: the ``LoadedModel``'s input size, 224 for a plain module.
        in_channels: probe channels; default: the model's (first convolution's) channel count.
        layout: ``{layer: layout}`` for layers whose layout is known to the user (``"nchw"``, ``"nhwc"``,
            ``"tokens"``, ``"tokens+cls"``); it replaces the detected one. A layer may be named by an alias.

    Raises:
        CnnscopeError: a size that is not positive.
        LayerError: ``layout`` names an unknown layer or layout, or one that does not fit the layer's output; a
            TorchScript model (no hooks run inside it).
    """
    if input_size is None:
        input_size = tuple(getattr(model, "input_size", (224, 224)))  # type: ignore[assignment]
    h, w = _probe_size(input_size)
    if in_channels is None and hasattr(model, "mean") and hasattr(model, "module"):
        in_channels = len(model.mean)  # type: ignore[attr-defined]
    module = module_of(model)
    check_hookable(module)
    from .capture import declared_layouts

    given = {**declared_layouts(module), **{canonical_layer(module, k): v for k, v in dict(layout or {}).items()}}
    table = dict(module.named_modules())
    for name, lay in given.items():
        if name not in table or not name:
            raise LayerError(unknown("layer", str(name), [n for n in table if n]))
        check_layout(lay)
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
    probe = LayoutProbe(module)
    try:
        for name, mod in named:
            handles.append(mod.register_forward_pre_hook(partial(pre_hook, name)))
            handles.append(mod.register_forward_hook(partial(hook, name)))
        probe.attach()
        with torch.no_grad(), evaluating(module):
            module(x)
    finally:
        probe.detach()
        for hd in handles:
            hd.remove()
    rest = [n for n, _ in named if n not in calls]
    out = []
    for name in order + rest:
        mod = table[name]
        shape = seen.get(name)
        lay = given.get(name) or probe.output_layout(name)
        grid = None
        if shape is not None and lay is not None:
            grid = layout_grid(shape, lay, (h, w), name)[1]
        elif shape is None:
            lay = None
        out.append(LayerInfo(name=name, kind=type(mod).__name__, output_shape=shape,
                             params=sum(p.numel() for p in mod.parameters()), calls=calls.get(name, 0),
                             leaf=not any(True for _ in mod.children()), layout=lay,
                             output_id=probe.output_tensor(name), grid_size=grid))
    return out
