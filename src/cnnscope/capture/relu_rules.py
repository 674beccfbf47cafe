"""``relu_rule``: temporary guided-backprop / deconvnet backward rules for ReLU and ReLU6 modules.

Backward rules, with ``x`` the activation's input and ``g`` the incoming gradient:

* ``"guided"`` (Springenberg et al. 2014): ``g * 1[x in the linear region] * 1[g > 0]``; the linear region is
  ``x > 0`` for ReLU and ``0 < x < 6`` for ReLU6.
* ``"deconv"`` (Zeiler & Fergus 2013): ``max(g, 0)``, the forward mask is ignored (ReLU6 too: the
  reconstruction signal is rectified, as the deconvnet rectifies its unpooled maps).

The forward value is unchanged. Modules are never swapped: each ReLU module gets a forward hook and has its
``inplace`` flag turned off for the duration (so its input survives), and both are restored in ``finally``.
Modules called several times per forward (one ``self.relu`` reused across a block) are handled per call.
ReLUs applied as ``torch.relu``/``F.relu`` inside ``forward`` are not modules and cannot be overridden.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CnnscopeError, MethodError, unknown
from .state import module_of, output_hooks

if TYPE_CHECKING:
    from ..models import ModelLike

RULES = ("guided", "deconv")


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str, upper: float | None) -> torch.Tensor:  # type: ignore[override]
        ctx.rule, ctx.upper = rule, upper
        if rule == "guided":
            ctx.save_for_backward(x)
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        pos = g.clamp(min=0)
        if ctx.rule == "deconv":
            return pos, None, None
        (x,) = ctx.saved_tensors
        mask = x > 0
        if ctx.upper is not None:
            mask = mask & (x < ctx.upper)
        return pos * mask.to(pos.dtype), None, None


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


@contextmanager
def relu_rule(model: ModelLike, rule: str) -> Iterator[int]:
    """Within the block, every ReLU/ReLU6 module of ``module`` back-propagates with ``rule``.

    Yields:
        The number of modules overridden.

    Raises:
        MethodError: unknown rule.
        CnnscopeError: the model has no ReLU modules (e.g. it only calls ``F.relu``).
    """
    module = module_of(model)
    if rule not in RULES:
        raise MethodError(unknown("backward rule", rule, RULES))
    targets = relu_modules(module)
    if not targets:
        raise CnnscopeError(f"{type(module).__name__} has no nn.ReLU/nn.ReLU6 modules, so the {rule!r} rule "
                            "cannot be applied (ReLUs called as functions inside forward() are not modules)")

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return _RuleReLU.apply(inputs[0], rule, _upper(mod))

    with output_hooks([m for _, m in targets], hook) as n:
        yield n
