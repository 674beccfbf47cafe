"""``as_model``: the one adapter every public entry point applies to its ``model`` argument.

A :class:`~cnnscope.models.LoadedModel` passes through unchanged. A plain ``nn.Module`` is wrapped (the same
wrapper is handed out while it is in use; it never keeps the module alive) with what can be read off the module,
and ImageNet defaults otherwise:

* input size: ``input_size=`` when given, else the module's own ``pretrained_cfg``/``default_cfg`` (timm) or an
  ``input_size`` attribute, else 224 x 224;
* normalisation: timm's ``mean``/``std`` when the module carries them, ImageNet's for 3-channel inputs, and the
  identity (pictures in [0, 1]) for any other channel count;
* labels: ImageNet's when the last ``Linear``/``Conv2d`` has 1000 outputs.

What was assumed is kept in :attr:`LoadedModel.assumed` and said once per module, as an :class:`AssumptionWarning`,
the first time pictures are turned into inputs with it. Tensors given in the model's input space never depend on it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import nn

from ..errors import ModelError
from .loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel

ModelLike: TypeAlias = "LoadedModel | nn.Module"

#: module -> a weak reference to its wrapper: the wrapper is shared while anyone holds it, and neither keeps the
#: module alive (a strong value would, since the wrapper holds the module)
_WRAPPED: weakref.WeakKeyDictionary[nn.Module, weakref.ref[LoadedModel]] = weakref.WeakKeyDictionary()


def _last_outputs(module: nn.Module) -> int | None:
    """Outputs of the last ``Linear``/``Conv2d`` (also inside a TorchScript module, by its ``original_name``)."""
    last = None
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) or getattr(m, "original_name", None) in ("Linear", "Conv2d"):
            last = m
    weight = getattr(last, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim >= 1 else None


def _read_size(module: nn.Module) -> tuple[int, int] | None:
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)) and len(cfg["input_size"]) == 3:
        return int(cfg["input_size"][1]), int(cfg["input_size"][2])
    size = getattr(module, "input_size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    return None


def wrap_plain(module: nn.Module, input_size: int | tuple[int, int] | None, *, name: str | None = None
               ) -> LoadedModel:
    """A new wrapper of a plain module with what can be read off it (see the module docstring)."""
    from ..capture import input_channels
    from .labels import imagenet_labels

    notes = []
    size = (input_size, input_size) if isinstance(input_size, int) else input_size
    if size is None:
        size = _read_size(module)
    if size is None:
        size = (224, 224)
        notes.append("input size 224x224")
    channels = input_channels(module)
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    mean: Sequence[float]
    std: Sequence[float]
    if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg and len(cfg["mean"]) == channels:
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    elif channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        notes.append("ImageNet mean/std")
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
        notes.append(f"{channels}-channel pictures in [0, 1] without normalisation")
    labels = list(imagenet_labels()) if _last_outputs(module) == 1000 else None
    assumed = None
    if notes:
        assumed = (f"{name or type(module).__name__} is a plain nn.Module: cnnscope assumed " + " and ".join(notes)
                   + "; use cnnscope.wrap(module, input_size=..., mean=..., std=...) to say otherwise")
    return LoadedModel(module=module, name=name or type(module).__name__, input_size=tuple(size),  # type: ignore[arg-type]
                       mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std), labels=labels,
                       pretrained=True, weights="user module", source="user", assumed=assumed)


def as_model(model: ModelLike, *, input_size: int | tuple[int, int] | None = None) -> LoadedModel:
    """A :class:`LoadedModel` for ``model`` (itself when it is one; a remembered wrapper of a plain module).

    Args:
        model: a ``LoadedModel`` or any ``nn.Module`` that takes images.
        input_size: for a plain module whose input size cannot be read off it (a new wrapper is built, not
            remembered). Ignored for a ``LoadedModel``.

    Raises:
        ModelError: ``model`` is neither.
    """
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a LoadedModel (cnnscope.load_model / cnnscope.wrap) or a torch.nn.Module, got "
                         f"{type(model).__name__}")
    if input_size is not None:
        return wrap_plain(model, input_size)
    ref = _WRAPPED.get(model)
    found = ref() if ref is not None else None
    if found is None:
        found = wrap_plain(model, None)
        _WRAPPED[model] = weakref.ref(found)
    return found
