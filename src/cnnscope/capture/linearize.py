"""``linearized``: temporarily make every activation module the identity (for expanded weights).

Between two layers, a network with its nonlinearities removed is affine (convolutions, eval-mode batch norm,
average pooling, residual adds), so the gradient of a unit with respect to an earlier layer is the *expanded
weight* between them (Olah et al., *Visualizing Weights*, Distill 2021). The activations' forward output is
replaced by their input through forward hooks (modules are never swapped); in-place activations have their
``inplace`` flag turned off for the duration so their input survives. ReLUs called as functions inside
``forward`` (``F.relu``, ``torch.relu``, ``x.relu_()``, ``F.relu6``, ``F.hardtanh(x, 0, t)``, as in
:mod:`.relu_rules`) return their input too, through a ``TorchFunctionMode`` active only inside the block. Hooks and
flags are restored in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .relu_rules import functional_relu, swapped_activations
from .state import is_activation, module_of

if TYPE_CHECKING:
    from ..models import ModelLike


class _FunctionalIdentity(TorchFunctionMode):
    """ReLU calls made outside the hooked activation modules return their input."""

    def __init__(self) -> None:
        super().__init__()
        self.module_input: torch.Tensor | None = None
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        if functional_relu(func, args, kwargs) is None or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        if args[0] is self.module_input:  # an activation module's own call: its forward hook handles it
            self.module_input = None
            return func(*args, **kwargs)
        self.calls += 1
        return args[0]


@contextmanager
def linearized(model: ModelLike) -> Iterator[int]:
    """Within the block, every activation module of ``module`` (ReLU, ReLU6, GELU, ...) returns its input, and so
    do the ReLUs its ``forward`` calls as functions.

    Yields:
        The number of activation modules made linear. Activations other than ReLUs called as functions inside
        ``forward`` (``F.gelu``, ``F.silu``) stay nonlinear.
    """
    module = module_of(model)
    targets = [m for _, m in module.named_modules() if is_activation(m)]
    def identity(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return inputs[0]

    with swapped_activations(targets, identity, _FunctionalIdentity()) as n:
        yield n
