"""Shared pieces of the capture layer: layer lookup, temporary eval mode, activation types."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
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


#: module -> ``{alias: dotted name}`` (weak: an alias table never keeps a model alive)
_ALIASES: weakref.WeakKeyDictionary[nn.Module, dict[str, str]] = weakref.WeakKeyDictionary()


def set_layer_aliases(model: ModelLike, aliases: Mapping[str, str]) -> None:
    """Give layers of ``model`` other names (``{"mixed3b": "inception3b"}``), accepted by :func:`resolve_layers` and
    so everywhere a layer name is. An alias also stands for the start of a dotted name (``"mixed3b.branch2"``).

    Raises:
        LayerError: an alias that names no layer, or one that is itself a layer name of another module.
    """
    module = module_of(model)
    table = dict(module.named_modules())
    for alias, name in aliases.items():
        if name not in table or not name:
            raise LayerError(f"alias {alias!r} names {name!r}, which is not a layer of {type(module).__name__}")
        if alias in table and table[alias] is not table[name]:
            raise LayerError(f"alias {alias!r} is already the name of another layer")
    _ALIASES[module] = {**_ALIASES.get(module, {}), **dict(aliases)}


def layer_aliases(model: ModelLike) -> dict[str, str]:
    """``{alias: dotted name}`` of ``model``'s layers (empty when it has none)."""
    return dict(_ALIASES.get(module_of(model), {}))


def canonical_layer(model: ModelLike, name: str) -> str:
    """The dotted ``named_modules()`` name that ``name`` stands for: itself, or what an alias (or an alias followed by
    ``.child``) names. Unknown names are returned unchanged (:func:`resolve_layers` reports them)."""
    aliases = _ALIASES.get(module_of(model))
    if not aliases or not isinstance(name, str):
        return name
    if name in aliases:
        return aliases[name]
    head, dot, rest = name.partition(".")
    return f"{aliases[head]}.{rest}" if dot and head in aliases else name


def check_hookable(model: ModelLike, name: str | None = None) -> None:
    """Raise when ``model`` is TorchScript, which runs no Python hooks (so no layer can be read inside it).

    Raises:
        LayerError: naming the model and how to load its weights into the Python architecture instead.
    """
    module = module_of(model)
    if isinstance(module, torch.jit.ScriptModule):
        what = name or getattr(module, "original_name", None) or type(module).__name__
        raise LayerError(f"{what} is a TorchScript module: PyTorch runs no Python hooks inside it; load its weights "
                         "into the Python architecture (MODEL=NAME --weights FILE) for layer analyses")


def resolve_layers(model: ModelLike, names: str | Iterable[str]) -> dict[str, nn.Module]:
    """Map layer names to submodules; unknown names raise :class:`LayerError` with close matches.

    A name is a dotted ``named_modules()`` name or an alias of one (:func:`set_layer_aliases`); the result is keyed
    by the names as given, so a caller finds its own names again.

    Raises:
        LayerError: an unknown or empty name, or a TorchScript model (:func:`check_hookable`).
    """
    module = module_of(model)
    check_hookable(module)
    wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    if not wanted:
        raise LayerError("no layer names given")
    table = dict(module.named_modules())
    out: dict[str, nn.Module] = {}
    for name in wanted:
        if not isinstance(name, str) or not name:
            raise LayerError(f"layer names are non-empty dotted strings like 'blocks.4.0', got {name!r}")
        real = canonical_layer(module, name)
        if real not in table or not real:
            raise LayerError(unknown("layer", name, [n for n in table if n] + list(_ALIASES.get(module, {}))))
        out[name] = table[real]
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
