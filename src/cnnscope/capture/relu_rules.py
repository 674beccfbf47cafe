"""``relu_rule``: temporary guided-backprop / deconvnet backward rules for every ReLU of a model.

Backward rules, with ``x`` the activation's input and ``g`` the incoming gradient:

* ``"guided"`` (Springenberg et al. 2014): ``g * 1[x in the linear region] * 1[g > 0]``; the linear region is
  ``x > 0`` for ReLU and ``0 < x < 6`` for ReLU6.
* ``"deconv"`` (Zeiler & Fergus 2013): ``max(g, 0)``, the forward mask is ignored (ReLU6 too: the
  reconstruction signal is rectified, as the deconvnet rectifies its unpooled maps).

The forward value is unchanged. Modules are never swapped: each ReLU module gets a forward hook and has its
``inplace`` flag turned off for the duration (so its input survives), and both are restored in ``finally``.
Modules called several times per forward (one ``self.relu`` reused across a block) are handled per call.

ReLUs called as functions inside ``forward`` (``F.relu``, ``torch.relu``, ``x.relu_()``, ``F.relu6``,
``F.hardtanh(x, 0, t)``: DenseNet's last ReLU, GoogLeNet's and Inception's ``BasicConv2d``) get the same rule
through a :class:`torch.overrides.TorchFunctionMode` active only inside the block (an in-place call stays
in-place). Other activations (SiLU, GELU, Hardswish, ...) keep their ordinary gradient; a model whose forward
runs no ReLU at all is refused, naming the activations it has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import MethodError, unknown
from .state import is_activation, module_of, output_hooks

if TYPE_CHECKING:
    from ..models import ModelLike

RULES = ("guided", "deconv")
RULE_NAMES = {"guided": "guided backprop", "deconv": "the deconvnet rule"}


class NoReLUError(MethodError):
    """A backward rule for ReLUs on a model that runs none (a SiLU/GELU network): the method does not apply."""


def _rule_backward(rule: str, upper: float | None, out: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
    """The rule's input gradient; ``out`` is the activation's output (``x > 0`` iff ``out > 0``, and
    ``0 < x < t`` iff ``0 < out < t``, so the output gives the guided mask)."""
    pos = g.clamp(min=0)
    if rule == "deconv":
        return pos
    mask = out > 0
    if upper is not None:
        mask = mask & (out < upper)
    return pos * mask.to(pos.dtype)


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str, upper: float | None) -> torch.Tensor:  # type: ignore[override]
        ctx.rule, ctx.upper = rule, upper
        out = x.clamp(min=0) if upper is None else x.clamp(0, upper)
        if rule == "guided":
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        out = ctx.saved_tensors[0] if ctx.rule == "guided" else None
        return _rule_backward(ctx.rule, ctx.upper, out, g), None, None


class _RuleReLUInplace(torch.autograd.Function):
    """The same rule for an in-place call (``F.relu(x, inplace=True)``, ``x.relu_()``): ``x`` is modified."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str, upper: float | None) -> torch.Tensor:  # type: ignore[override]
        ctx.rule, ctx.upper = rule, upper
        ctx.mark_dirty(x)
        x.clamp_(min=0) if upper is None else x.clamp_(0, upper)
        if rule == "guided":
            ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        out = ctx.saved_tensors[0] if ctx.rule == "guided" else None
        return _rule_backward(ctx.rule, ctx.upper, out, g), None, None


def _upper(mod: nn.Module) -> float | None:
    if isinstance(mod, nn.ReLU6):
        return 6.0
    if isinstance(mod, nn.Hardtanh) and mod.min_val == 0.0:
        return float(mod.max_val)
    return None


def relu_modules(model: ModelLike) -> list[tuple[str, nn.Module]]:
    """The ReLU-family modules a rule can override: ``nn.ReLU``, ``nn.ReLU6`` (and ``Hardtanh(0, t)``)."""
    module = module_of(model)
    out = []
    for name, m in module.named_modules():
        if isinstance(m, nn.ReLU) or (isinstance(m, nn.Hardtanh) and m.min_val == 0.0):
            out.append((name, m))
    return out


def other_activations(model: ModelLike) -> list[str]:
    """Type names of the activation modules that are not ReLUs (``["SiLU"]``, ``["GELU"]``), most frequent first;
    a backward rule leaves them alone."""
    counts = Counter(type(m).__name__ for m in module_of(model).modules()
                     if is_activation(m) and not (isinstance(m, nn.ReLU)
                                                  or (isinstance(m, nn.Hardtanh) and m.min_val == 0.0)))
    return [name for name, _ in counts.most_common()]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def functional_relu(func: Any, args: tuple, kwargs: dict) -> tuple[bool, float | None] | None:
    """``(inplace, upper)`` when ``func(*args, **kwargs)`` is a ReLU call, else ``None``."""
    if func in (F.relu, F.relu6):
        return bool(_arg(args, kwargs, 1, "inplace", False)), (6.0 if func is F.relu6 else None)
    if func in (torch.relu, torch.Tensor.relu):
        return False, None
    if func in (torch.relu_, torch.Tensor.relu_):
        return True, None
    if func is F.hardtanh and float(_arg(args, kwargs, 1, "min_val", -1.0)) == 0.0:
        return bool(_arg(args, kwargs, 3, "inplace", False)), float(_arg(args, kwargs, 2, "max_val", 1.0))
    return None


class _FunctionalRule(TorchFunctionMode):
    """Applies the rule to ReLU calls made outside the hooked ReLU modules (those have their own hook)."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule
        self.module_input: torch.Tensor | None = None  # the input of the hooked ReLU module that is starting
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        hit = functional_relu(func, args, kwargs)
        if hit is None or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return func(*args, **kwargs)
        if args[0] is self.module_input:  # the module's own relu call: its forward hook applies the rule
            self.module_input = None
            return func(*args, **kwargs)
        inplace, upper = hit
        self.calls += 1
        fn = _RuleReLUInplace if inplace else _RuleReLU
        return fn.apply(args[0], self.rule, upper)


@contextmanager
def swapped_activations(targets: list[nn.Module], hook: Any, mode: TorchFunctionMode) -> Iterator[int]:
    """``hook`` replaces the output of every module in ``targets`` while ``mode`` (a function mode that rewrites
    relu calls) is active; each target's input is handed to the mode as ``mode.module_input`` while it runs, so the
    mode can leave the module's own relu call to the hook. Yields the number of targets."""
    def enter(mod: nn.Module, inputs: tuple) -> None:
        mode.module_input = inputs[0]  # type: ignore[attr-defined]

    handles = [m.register_forward_pre_hook(enter) for m in targets]
    try:
        with output_hooks(targets, hook) as n, mode:
            yield n
    finally:
        mode.module_input = None  # type: ignore[attr-defined]
        for h in handles:
            h.remove()


@contextmanager
def relu_rule(model: ModelLike, rule: str, *, report: dict | None = None) -> Iterator[int]:
    """Within the block, every ReLU/ReLU6 of ``model`` back-propagates with ``rule``: its modules, and the ReLUs
    its ``forward`` calls as functions.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module`` (not modified).
        rule: ``"guided"`` or ``"deconv"``.
        report: when given, filled at the end of the block with ``modules`` (ReLU modules overridden),
            ``functional_calls`` (functional ReLU calls overridden during the block) and ``other_activations``
            (activation module types left with their ordinary gradient).

    Yields:
        The number of ReLU modules overridden.

    Raises:
        MethodError: unknown rule.
        NoReLUError: (a :class:`MethodError`) when the block ends, the model has no ReLU modules and its forward
            called no ReLU function either (a SiLU/GELU network): the message names its activations.
    """
    module = module_of(model)
    if rule not in RULES:
        raise MethodError(unknown("backward rule", rule, RULES))
    targets = [m for _, m in relu_modules(module)]
    mode = _FunctionalRule(rule)

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return _RuleReLU.apply(inputs[0], rule, _upper(mod))

    with swapped_activations(targets, hook, mode) as n:
        yield n
    others = other_activations(module)
    if report is not None:
        report.update(modules=len(targets), functional_calls=mode.calls, other_activations=others)
    if not targets and not mode.calls:
        what = f"the activations are {', '.join(others)}" if others else "it has no activation modules"
        raise NoReLUError(f"{type(module).__name__} runs no ReLU (no nn.ReLU/ReLU6 modules, no relu calls in "
                            f"forward): {what}; {RULE_NAMES[rule]} needs ReLUs")
