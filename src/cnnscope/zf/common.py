"""Small helpers shared by the Zeiler & Fergus studies: image sets, class targets, pictures, default layers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..capture import list_layers
from ..errors import CnnscopeError, ImageError, LayerError
from ..images import load_image

#: one image of a set: a picture (``uint8 [H, W, 3]``, loaded) or a model-space ``[C, H, W]`` float tensor
Item = np.ndarray | torch.Tensor


def image_set(images: object, what: str = "images") -> tuple[list[str], list[Item]]:
    """An image set as ``(names, items)``: the set form every study of :mod:`cnnscope.zf` accepts.

    Accepts anything :meth:`~cnnscope.models.LoadedModel.batch` takes (a model-space float tensor ``[B, C, H, W]``
    or ``[C, H, W]``, a list of them, pictures: paths, PIL images, ``uint8`` arrays, a stacked ``[N, H, W, 3]``
    array), and also a ``name -> image`` mapping. Pictures are loaded once at their own size (the studies fit
    them to the model with ``m.batch``); tensors are split into ``[C, H, W]`` items.

    Raises:
        ImageError: the set is empty, or an image cannot be read (the message names it).
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4:
        images = list(images)
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if isinstance(images, Mapping):
        names, raw = [str(k) for k in images], list(images.values())
    elif isinstance(images, (list, tuple)):
        raw = list(images)
        names = [str(it) if isinstance(it, str) or hasattr(it, "__fspath__") else str(k) for k, it in enumerate(raw)]
    else:
        raw, names = [images], ["0"]
    if not raw:
        raise ImageError(f"the set of {what} is empty; give at least one image")
    items: list[Item] = []
    for it in raw:
        if isinstance(it, torch.Tensor) and it.is_floating_point():
            items.append(it.detach()[0] if it.ndim == 4 and it.shape[0] == 1 else it.detach())
        else:
            items.append(load_image(it))  # type: ignore[arg-type]
    return names, items


def item_size(item: Item) -> tuple[int, int]:
    """``(H, W)`` of a picture or of a model-space tensor."""
    return tuple(item.shape[-2:]) if isinstance(item, torch.Tensor) else tuple(item.shape[:2])  # type: ignore[return-value]


def pictures(model, x: torch.Tensor) -> np.ndarray:
    """A model-space batch as the model saw it: ``uint8 [B, H, W, 3]`` (grey for one-channel models)."""
    out = model.deprocess(x)
    return out[None] if out.ndim == 3 else out


def grey(model, fill: float) -> torch.Tensor:
    """The grey level ``fill`` (in [0, 1] picture units) in the model's input space, ``[1, C, 1, 1]``."""
    if not 0.0 <= float(fill) <= 1.0:
        raise CnnscopeError(f"fill is a grey level in [0, 1], got {fill}")
    return model.to_input(torch.full((1, 3, 1, 1), float(fill), device=model.device)).to(model.dtype)


def crop_box(image, box: tuple[int, int, int, int]):
    """The ``(top, left, bottom, right)`` part of an ``[H, W, 3]`` array or of a ``[C, H, W]`` tensor."""
    top, left, bottom, right = box
    if isinstance(image, np.ndarray):
        return image[top:bottom, left:right]
    return image[..., top:bottom, left:right]


def class_index(model, target: int | str | None, fallback: int) -> int:
    """A class target as an index: an int, a label (``model.class_index``) or ``None`` (``fallback``)."""
    if target is None:
        return int(fallback)
    if isinstance(target, str):
        if target.strip().lstrip("-").isdigit():
            return int(target)
        return int(model.class_index(target))
    return int(target)


def check_class(index: int, n_classes: int) -> int:
    if not 0 <= index < n_classes:
        raise CnnscopeError(f"class index {index} is out of range: the model has {n_classes} outputs")
    return index


def _leaves(model) -> list:
    infos = list_layers(model.module, model.input_size, in_channels=len(model.mean))
    return [i for i in infos if i.leaf and i.calls > 0]


def default_layers(model) -> list[str]:
    """``[first conv layer's activation, deep feature layer]``: the pair the invariance figure compares.

    The first is the first activation module after the first convolution (its output is "layer 1"); the
    second is the leaf that feeds the last module (the penultimate features, "layer 7" in the paper).
    """
    infos = _leaves(model)
    if len(infos) < 2:
        raise LayerError("the model has fewer than two leaf modules; pass layer names explicitly")
    first = None
    for k, info in enumerate(infos):
        if info.kind == "Conv2d":
            first = info.name
            for nxt in infos[k + 1:k + 4]:
                if nxt.kind in ("ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "LeakyReLU"):
                    first = nxt.name
                    break
            break
    deep = infos[-2].name
    return [first or infos[0].name, deep]


def deep_layers(model) -> list[str]:
    """``[last layer with a spatial map, penultimate features]``: the paper's "layer 5" and "layer 7" pair."""
    infos = _leaves(model)
    spatial = [i.name for i in infos[:-1] if i.spatial is not None and i.spatial[0] * i.spatial[1] > 1]
    if len(infos) < 2 or not spatial:
        raise LayerError("cannot pick default layers for this model; pass layer names explicitly")
    out = [spatial[-1], infos[-2].name]
    return list(dict.fromkeys(out))
