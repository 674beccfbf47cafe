"""``linearized``: temporarily make every activation module the identity (for expanded weights).

Between two layers, a network with its nonlinearities removed is affine (convolutions, eval-mode batch norm,
average pooling, residual adds), so the gradient of a unit with respect to an earlier layer is the *expanded
weight* between them (Olah et al., *Visualizing Weights*, Distill 2021). The activations' forward output is
replaced by their input through forward hooks (modules are never swapped); in-place activations have their
``inplace`` flag turned off for the duration so their input survives. Hooks and flags are restored in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from .state import is_activation, module_of, output_hooks

if TYPE_CHECKING:
    from ..models import ModelLike


@contextmanager
def linearized(model: ModelLike) -> Iterator[int]:
    """Within the block, every activation module of ``module`` (ReLU, ReLU6, GELU, ...) returns its input.

    Yields:
        The number of activation modules made linear. Activations called as functions inside ``forward`` (not
        modules) stay nonlinear.
    """
    module = module_of(model)
    targets = [m for _, m in module.named_modules() if is_activation(m)]

    def identity(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return inputs[0]

    with output_hooks(targets, identity) as n:
        yield n
