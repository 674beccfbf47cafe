"""Find the chain of invertible modules that leads from the input to a layer, and prove it is the real path.

The true deconvnet needs the exact sequence of operations between the pixels and the chosen layer. It is read
from the model in three steps:

1. one probe forward (:func:`cnnscope.capture.list_layers`) gives the order in which submodules run;
2. walking down the layer's dotted name, every sibling that ran before it is expanded into its submodules
   (containers) or turned into a :class:`~cnnscope.zf.steps.Step` (conv, ReLU, max-pool, ...); a fused module
   (timm's ``BatchNormAct2d``) becomes the step of its own operation followed by its submodules; a leaf module
   of any other kind stops the walk with a :class:`DeconvError` naming it;
3. the chain is replayed on a seeded random probe and compared with the model's own outputs of every container
   it passed through and of the layer itself: a container whose ``forward`` does more than run its children in
   order (a residual add, a squeeze-excite product, a ``torch`` call) is named in the error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..capture import Capture, canonical_layer, evaluating, is_activation, list_layers, resolve_layers
from .steps import DeconvError, Step, fused_step_for, hint, step_for

__all__ = ["Chain", "DeconvError", "build_chain", "hint"]


@dataclass
class Chain:
    """The steps from the input to ``layer`` (``steps[-1]`` produces the layer's output).

    Attributes:
        layer: the dotted layer name.
        steps: the invertible steps in forward order.
        containers: ``(name, index of the step that finishes it)`` for every container on the path.
    """

    layer: str
    steps: list[Step]
    containers: list[tuple[str, int]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[object], list[torch.Tensor]]:
        """Run the steps; returns the output, each step's record and each step's output."""
        records: list[object] = []
        outs: list[torch.Tensor] = []
        for step in self.steps:
            x, rec = step.forward(x)
            records.append(rec)
            outs.append(x)
        return x, records, outs

    def receptive_field(self, row: int | tuple[int, int], col: int | tuple[int, int], size: tuple[int, int]
                        ) -> tuple[int, int, int, int]:
        """The input box ``(top, left, bottom, right)`` (half-open, clipped to ``size``) seen by output positions.

        ``row``/``col`` are one index or an inclusive ``(first, last)`` range in the layer's map.
        """
        ranges = []
        for axis, idx in enumerate((row, col)):
            lo, hi = (idx, idx) if isinstance(idx, int) else idx
            for step in reversed(self.steps):
                g = step.geometry
                lo = lo * g.stride[axis] - g.padding[axis]
                hi = hi * g.stride[axis] - g.padding[axis] + g.dilation[axis] * (g.kernel[axis] - 1)
            ranges.append((max(lo, 0), min(hi, size[axis] - 1) + 1))
        (top, bottom), (left, right) = ranges
        return top, left, bottom, right


def _children_in_order(parent: str, mod: nn.Module, entered: list[str]) -> list[str]:
    """Direct children of ``parent`` in the order they first ran (never-run children left out)."""
    prefix = parent + "." if parent else ""
    kids = {prefix + n for n, _ in mod.named_children()}
    return [n for n in entered if n in kids]


def _expand(name: str, mod: nn.Module, entered: list[str], table: dict[str, nn.Module], steps: list[Step],
            containers: list[tuple[str, int]]) -> None:
    head = fused_step_for(name, mod)
    step = step_for(name, mod) if head is None else None
    if step is not None:
        steps.append(step)
        return
    kids = _children_in_order(name, mod, entered)
    if head is not None:
        steps.append(head)  # a fused module: its own operation, then its submodules
    elif not kids and is_activation(mod):
        raise DeconvError(f"cannot invert layer {name!r} ({type(mod).__name__}): the deconvnet's backward rule "
                          "(rectify the signal) is defined for ReLU and ReLU6 only")
    elif not kids:
        raise DeconvError(f"cannot invert layer {name!r} ({type(mod).__name__}): it is not one of the modules a "
                          "deconvnet knows how to reverse")
    for kid in kids:
        _expand(kid, table[kid], entered, table, steps, containers)
    containers.append((name, len(steps) - 1))


def build_chain(module: nn.Module, layer: str, input_size: tuple[int, int], in_channels: int = 3) -> Chain:
    """The invertible chain from the input to ``layer``, checked against the model on a random probe.

    Raises:
        LayerError: unknown layer name (with close matches).
        DeconvError: a module on the path cannot be inverted (the message names it and points to the
            backward-rule deconvnet).
    """
    resolve_layers(module, layer)
    layer = canonical_layer(module, layer)  # the chain walks dotted names
    infos = list_layers(module, input_size, in_channels=in_channels)
    entered = [i.name for i in infos if i.calls > 0]
    if layer not in entered:
        raise DeconvError(f"layer {layer!r} does not run in the model's forward pass")
    table = dict(module.named_modules())
    steps: list[Step] = []
    containers: list[tuple[str, int]] = []
    parts = layer.split(".")
    parent = ""
    for depth in range(len(parts)):
        here = ".".join(parts[:depth + 1])
        for sib in _children_in_order(parent, table[parent], entered):
            if sib == here:
                break
            _expand(sib, table[sib], entered, table, steps, containers)
        if depth < len(parts) - 1 and (head := fused_step_for(here, table[here])) is not None:
            steps.append(head)  # a fused ancestor (timm's BatchNormAct2d of `X.bn.act`): its own operation first
        parent = here
    _expand(layer, table[layer], entered, table, steps, containers)
    if containers and containers[-1][0] == layer:
        containers.pop()  # the layer itself is checked below
    chain = Chain(layer=layer, steps=steps, containers=containers)
    _validate(module, chain, input_size, in_channels)
    return chain


def _validate(module: nn.Module, chain: Chain, input_size: tuple[int, int], in_channels: int) -> None:
    """Replay the chain on a seeded random probe, step by step; every container and the layer must match the model.

    A step that cannot even run on what the previous one produced (a branch of a block fed the other branch's
    output: a residual block's shortcut, an Inception or Fire module's concatenation) names the block where the
    two steps meet.
    """
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    probe = torch.randn(2, in_channels, *input_size, generator=gen, device=device, dtype=dtype)
    names = [n for n, _ in chain.containers] + [chain.layer]
    with torch.no_grad(), evaluating(module), Capture(module, names, stop_early=False, reuse="all") as cap:
        cap.run(probe)
    checks: dict[int, list[str]] = {}
    for name, idx in chain.containers + [(chain.layer, len(chain.steps) - 1)]:
        checks.setdefault(idx, []).append(name)
    x = probe
    with torch.no_grad():
        for i, step in enumerate(chain.steps):
            try:
                x, _ = step.forward(x)
            except (RuntimeError, ValueError, IndexError):
                raise DeconvError(_broken(module, chain.steps[i - 1].name if i else None, step.name)) from None
            for name in checks.get(i, []):
                ref = cap.activations[name][0]
                if not isinstance(ref, torch.Tensor) or ref.shape != x.shape or not _close(x, ref):
                    raise DeconvError(_mismatch(module, name, name == chain.layer))


def _mismatch(module: nn.Module, name: str, is_layer: bool) -> str:
    what = table_kind(module, name)
    if is_layer:
        return (f"cannot invert the path to {name!r} ({what}): the model computes something on the way that is "
                "not a module the deconvnet can see (a residual add, a function call or input normalisation inside "
                "forward())")
    return (f"cannot invert {name!r} ({what}): its forward() does more than run its submodules one after another "
            "(e.g. a residual add, a concatenation, a squeeze-excite gate or a relu called as a function)")


def _broken(module: nn.Module, before: str | None, step: str) -> str:
    """The message for a step that cannot run on the previous step's output: name the block where they meet."""
    if before is None:
        return (f"cannot invert the path to {step!r}: it does not take the model's input directly (the model "
                "prepares the input in forward())")
    a, b = before.split("."), step.split(".")
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    common = ".".join(a[:k])
    where = f"{common!r} ({table_kind(module, common)})" if common else f"the forward() of {type(module).__name__}"
    return (f"cannot invert {where}: {step!r} does not run on the output of {before!r}, so the block is not a "
            "chain of its submodules (branches joined by a residual add or a concatenation)")


def table_kind(module: nn.Module, name: str) -> str:
    return type(resolve_layers(module, name)[name]).__name__ if name else type(module).__name__


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale + 1e-6))
