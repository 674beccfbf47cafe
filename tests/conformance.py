"""docs/ARCHITECTURE.md rule 2, as a reusable check: a public operation must leave the model exactly as it found it.

Use ``assert_unchanged(module, lambda: operation(...))``: the operation runs (an exception it raises is
returned, not propagated) and then the state_dict values, every ``training`` flag, the module objects (identity,
order, ``inplace`` flags) and every hook dictionary are compared with a snapshot taken before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks", "_forward_hooks_with_kwargs",
              "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def snapshot(module: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "training": [(n, m.training) for n, m in module.named_modules()],
        "modules": [(n, id(m), getattr(m, "inplace", None)) for n, m in module.named_modules()],
        "hooks": [(n, d, len(getattr(m, d, {}) or {})) for n, m in module.named_modules() for d in HOOK_DICTS],
        "requires_grad": [(n, p.requires_grad) for n, p in module.named_parameters()],
        "param_grads": [(n, p.grad is None) for n, p in module.named_parameters()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["training"] == after["training"], "training flags changed"
    assert before["modules"] == after["modules"], "modules were swapped or their inplace flags changed"
    assert before["hooks"] == after["hooks"], "hooks survived the operation"
    assert before["requires_grad"] == after["requires_grad"], "requires_grad flags changed"
    assert before["param_grads"] == after["param_grads"], "parameter .grad fields were written"
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"state_dict entry {k} changed"


def assert_unchanged(module: nn.Module, operation: Callable[[], object]) -> BaseException | None:
    """Run ``operation``; assert the module is unchanged afterwards. Returns the exception it raised, if any."""
    before = snapshot(module)
    error: BaseException | None = None
    try:
        operation()
    except Exception as exc:  # noqa: BLE001 - operations that raise must leave the model intact too
        error = exc
    assert_same(before, snapshot(module))
    return error
