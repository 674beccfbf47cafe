"""Shared pieces of the capture layer: layer lookup, temporary eval mode, activation types."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import LayerError, ModelError, unknown

if TYPE_CHECKING:
    from ..models import ModelLike

#: Activation modules whose input is the "pre-activation" (Curve Detectors uses pre-ReLU values).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)


class StopForward(BaseException):
    """Raised by a hook to end a forward pass early (a ``BaseException`` so model code can't swallow it)."""


def module_of(model: ModelLike) -> nn.Module:
    """The ``nn.Module`` of a ``LoadedModel`` (anything with ``.module`` and ``.preprocess``) or the module itself.

    Raises:
        ModelError: ``model`` is neither.
    """
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and hasattr(model, "preprocess"):
        return inner
    raise ModelError(f"expected a LoadedModel (cnnscope.load_model / cnnscope.wrap) or a torch.nn.Module, got "
                     f"{type(model).__name__}")


def layer_names(model: ModelLike) -> list[str]:
    """Dotted names of every submodule (``named_modules()`` order, root excluded)."""
    module = module_of(model)
    return [n for n, _ in module.named_modules() if n]


def resolve_layers(model: ModelLike, names: str | Iterable[str]) -> dict[str, nn.Module]:
    """Map dotted layer names to submodules; unknown names raise :class:`LayerError` with close matches."""
    module = module_of(model)
    wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    if not wanted:
        raise LayerError("no layer names given")
    table = dict(module.named_modules())
    out: dict[str, nn.Module] = {}
    for name in wanted:
        if not isinstance(name, str) or not name:
            raise LayerError(f"layer names are non-empty dotted strings like 'blocks.4.0', got {name!r}")
        if name not in table:
            raise LayerError(unknown("layer", name, [n for n in table if n]))
        out[name] = table[name]
    return out


def is_activation(submodule: nn.Module) -> bool:
    """Whether ``submodule`` is an elementwise activation (its input is a pre-activation)."""
    return isinstance(submodule, ACTIVATION_TYPES) or type(submodule).__name__.lower() in ("swish", "quickgelu")


def first_tensor(value: object) -> torch.Tensor | None:
    """The tensor of a module output (first tensor of a tuple/list/dict), or ``None``."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = first_tensor(v)
            if t is not None:
                return t
    return None


@contextmanager
def evaluating(model: ModelLike) -> Iterator[nn.Module]:
    """Temporarily put every submodule in eval mode; restore each ``training`` flag in ``finally``.

    A module already all in eval mode is left alone: ``eval()`` walks every submodule through ``__setattr__``, a
    sizeable cost for the thousands of small passes a perturbation method makes.
    """
    module = module_of(model)
    training = [m for m in module.modules() if m.training]
    try:
        if training:
            module.eval()
        yield module
    finally:
        for m in training:
            m.training = True


@contextmanager
def output_hooks(modules: Iterable[nn.Module], hook: Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]
                 ) -> Iterator[int]:
    """Within the block, ``hook(module, inputs, output)`` replaces each module's output; in-place is turned off.

    The activation overrides (backward rules, linearisation) share this: in-place flags are switched off so the
    hook sees the module's real input, and every flag and hook is restored in ``finally``.

    Yields:
        The number of modules hooked.
    """
    targets = list(modules)
    saved = [(m, m.inplace) for m in targets if isinstance(getattr(m, "inplace", None), bool)]
    handles = []
    try:
        for m, _ in saved:
            m.inplace = False
        for m in targets:
            handles.append(m.register_forward_hook(hook))
        yield len(targets)
    finally:
        for h in handles:
            h.remove()
        for m, inplace in saved:
            m.inplace = inplace


def module_device(model: ModelLike) -> torch.device:
    """Device of the first parameter/buffer (CPU for a module without any)."""
    module = module_of(model)
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def module_dtype(model: ModelLike) -> torch.dtype:
    """Floating dtype of the first floating parameter (float32 when there is none)."""
    module = module_of(model)
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def module_state(model: ModelLike) -> tuple:
    """A fingerprint of a model's numbers: identity, version, storage, dtype and device of every parameter and
    buffer. It changes when any of them is replaced or changed in place (an optimizer step, ``load_state_dict``,
    ``.to()``), so results derived from the model can be cached against it."""
    module = module_of(model)
    return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device)
                 for t in (*module.parameters(), *module.buffers()))
