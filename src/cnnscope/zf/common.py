"""Small helpers shared by the Zeiler & Fergus studies: image sets, class targets, batching, default layers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..capture import list_layers
from ..errors import CnnscopeError, ImageError, LayerError
from ..images import ImageLike, load_image


def image_set(images: ImageLike | Sequence[ImageLike] | Mapping[str, ImageLike], what: str = "images"
              ) -> tuple[list[str], list[np.ndarray]]:
    """Normalise an image set to ``(names, uint8 arrays)``.

    Accepts one image, a sequence (paths, PIL images, arrays), a stacked ``[N, H, W, C]`` array or a
    ``name -> image`` mapping.

    Raises:
        ImageError: the set is empty, or an image cannot be read (the message names it).
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if isinstance(images, Mapping):
        names, items = [str(k) for k in images], list(images.values())
    elif isinstance(images, (list, tuple)):
        items = list(images)
        names = [str(it) if isinstance(it, str) or hasattr(it, "__fspath__") else str(k)
                 for k, it in enumerate(items)]
    else:
        items, names = [images], ["0"]
    if not items:
        raise ImageError(f"the set of {what} is empty; give at least one image")
    return names, [load_image(it) for it in items]


def crop_box(image, box: tuple[int, int, int, int]):
    """The ``(top, left, bottom, right)`` part of an ``[H, W, 3]`` array or of a ``[C, H, W]`` tensor."""
    top, left, bottom, right = box
    if isinstance(image, np.ndarray):
        return image[top:bottom, left:right]
    return image[..., top:bottom, left:right]


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` items."""
    if size < 1:
        raise CnnscopeError(f"batch size must be at least 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar (disabled unless ``enabled``)."""
    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


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


def default_layers(module: torch.nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> list[str]:
    """``[first conv layer's activation, deep feature layer]``: the pair the invariance figure compares.

    The first is the first activation module after the first convolution (its output is "layer 1"); the
    second is the leaf that feeds the last module (the penultimate features, "layer 7" in the paper).
    """
    infos = [i for i in list_layers(module, input_size, in_channels=in_channels) if i.leaf and i.calls > 0]
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


def deep_layers(module: torch.nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> list[str]:
    """``[last layer with a spatial map, penultimate features]``: the paper's "layer 5" and "layer 7" pair."""
    infos = [i for i in list_layers(module, input_size, in_channels=in_channels) if i.leaf and i.calls > 0]
    spatial = [i.name for i in infos[:-1] if i.spatial is not None and i.spatial[0] * i.spatial[1] > 1]
    if len(infos) < 2 or not spatial:
        raise LayerError("cannot pick default layers for this model; pass layer names explicitly")
    out = [spatial[-1], infos[-2].name]
    return list(dict.fromkeys(out))


def pixels(arrays: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Stack ``uint8 [H, W, 3]`` arrays into a float ``[B, 3, H, W]`` tensor in [0, 1] on ``device``."""
    x = torch.from_numpy(np.stack(arrays)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def model_space(model, x01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] ``[B, 3, H, W]`` -> the model's input (luma first for one-channel models).

    Shape:
        - x01: ``[B, 3, H, W]``; Output: ``[B, C, H, W]`` with ``C = len(model.mean)``.
    """
    if len(model.mean) == 1:
        luma = torch.tensor([0.299, 0.587, 0.114], device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        x01 = (x01 * luma).sum(1, keepdim=True)
    return model.normalize(x01)
