"""The occlusion study of Zeiler & Fergus (2013, Fig. 7): slide a grey square over the image and watch.

For every position of the square the model runs on the occluded image (many positions per forward batch) and
four maps are recorded, as in the paper's panels:

* (b) the total activation of the strongest feature map of a chosen layer (the channel whose largest
  activation on the unoccluded image is the largest);
* (c) that map's strongest activation projected to pixels for the unoccluded image (true deconvnet when the
  model allows it, else the backward-rule deconvnet; :attr:`OcclusionStudy.projection.method` says which);
* (d) the probability of the correct class;
* (e) the most probable class.

Example:
    >>> s = occlusion_study(model, "chelsea.png", "blocks.5", size=48, stride=16)
    >>> s.probability.shape, s.label, s.channel    # [rows, cols] of square positions
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..capture import Capture, evaluating, resolve_layers
from ..errors import CnnscopeError, LayerError
from ..images import ImageLike, load_image
from .chain import DeconvError
from .common import check_class, chunks, class_index, model_space, pixels, progress_bar
from .deconvnet import Projection, project, rule_projection


@dataclass
class OcclusionStudy:
    """Maps over the positions of the occluding square (row ``i`` = ``tops[i]``, column ``j`` = ``lefts[j]``).

    Attributes:
        image: the image as the model saw it, ``uint8 [H, W, 3]``.
        layer, channel: the feature map of panel (b).
        target, label: the correct class of panel (d).
        size, fill: side of the square in pixels and its grey level in [0, 1].
        tops, lefts: top-left corners of the square positions.
        activation: (b) total activation of ``channel`` per position, ``[rows, cols]``.
        probability: (d) probability of ``target`` per position.
        top_class, top_probability: (e) most probable class and its probability per position.
        projection: (c) the channel's strongest activation projected to pixels (unoccluded image).
        base_activation, base_probability: the same numbers without the square.
        labels: class index -> name for every class in ``top_class`` and ``target``.
    """

    image: np.ndarray = field(repr=False)
    layer: str
    channel: int
    target: int
    label: str
    size: int
    fill: float
    tops: list[int]
    lefts: list[int]
    activation: torch.Tensor
    probability: torch.Tensor
    top_class: torch.Tensor
    top_probability: torch.Tensor
    projection: Projection
    base_activation: float
    base_probability: float
    labels: dict[int, str]

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel rows and columns of the square centres (for drawing the maps over the image)."""
        half = (self.size - 1) / 2.0
        return np.asarray(self.tops, float) + half, np.asarray(self.lefts, float) + half

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "target": self.target, "label": self.label,
                "size": self.size, "fill": self.fill, "tops": self.tops, "lefts": self.lefts,
                "activation": self.activation.tolist(), "probability": self.probability.tolist(),
                "top_class": self.top_class.tolist(), "top_probability": self.top_probability.tolist(),
                "base_activation": self.base_activation, "base_probability": self.base_probability,
                "projection": {"method": self.projection.method, "position": list(self.projection.position),
                               "activation": self.projection.activation},
                "labels": {str(k): v for k, v in self.labels.items()}}


def positions(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of a window of ``size`` sliding by ``stride`` over ``length`` (the last one flush)."""
    if not 1 <= size <= length:
        raise CnnscopeError(f"the occluder size must be between 1 and the image side {length}, got {size}")
    if stride < 1:
        raise CnnscopeError(f"the stride must be at least 1, got {stride}")
    out = list(range(0, length - size + 1, stride))
    if out[-1] != length - size:
        out.append(length - size)
    return out


def occlusion_study(model, image: ImageLike, layer: str, target: int | str | None = None,
                    channel: int | None = None, size: int = 48, stride: int = 16, fill: float = 0.5,
                    batch_size: int = 32, progress: bool = False) -> OcclusionStudy:
    """Run the occlusion study of the paper's Fig. 7 on one image.

    Args:
        model: a :class:`~cnnscope.models.LoadedModel` returning ``[B, classes]`` logits (not modified).
        image: the photo (path, array, PIL image).
        layer: dotted name of a convolutional layer for panels (b) and (c).
        target: the correct class (index or label); default the model's top-1 on the unoccluded image.
        channel: the feature map of panel (b); default the strongest one on the unoccluded image.
        size, stride: the square's side and step in input pixels.
        fill: the square's grey level in [0, 1] pixel units (0.5 = mid grey, as in the paper).
        batch_size: occluded images per forward (the memory bound).
        progress: show a progress bar.

    Raises:
        LayerError: unknown layer or one without a spatial map; CnnscopeError: bad size/stride/target.
    """
    if not 0.0 <= float(fill) <= 1.0:
        raise CnnscopeError(f"fill is a grey level in [0, 1], got {fill}")
    resolve_layers(model.module, layer)
    arr = model.fit_image(load_image(image))
    h, w = arr.shape[:2]
    tops, lefts = positions(h, size, stride), positions(w, size, stride)
    dev = model.device
    base01 = pixels([arr], dev)
    module = model.module
    with torch.no_grad(), evaluating(module), Capture(module, layer, stop_early=False) as cap:
        logits = cap.run(model_space(model, base01))
        acts = cap[layer]
        if acts.ndim != 4:
            raise LayerError(f"layer {layer!r} has no spatial output (shape {tuple(acts.shape[1:])})")
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise CnnscopeError(f"model {model.name!r} does not return [B, classes] logits")
        probs = logits.float().softmax(1)[0]
        tgt = check_class(class_index(model, target, int(probs.argmax())), probs.numel())
        ch = int(acts[0].flatten(1).amax(1).argmax()) if channel is None else int(channel)
        if not 0 <= ch < acts.shape[1]:
            raise LayerError(f"channel {ch} is out of range: layer {layer!r} has {acts.shape[1]} channels")
        base_act = float(acts[0, ch].sum())
        grid = [(top, left) for top in tops for left in lefts]
        act_out, prob_out, cls_out, top_out = [], [], [], []
        bar = progress_bar(len(grid), progress, "occlusion")
        for sl in chunks(len(grid), batch_size):
            batch = base01.repeat(sl.stop - sl.start, 1, 1, 1)
            for n, (top, left) in enumerate(grid[sl]):
                batch[n, :, top:top + size, left:left + size] = float(fill)
            out = cap.run(model_space(model, batch)).float().softmax(1)
            act_out.append(cap[layer][:, ch].flatten(1).sum(1).float())
            prob_out.append(out[:, tgt])
            best = out.max(1)
            cls_out.append(best.indices)
            top_out.append(best.values)
            bar.update(sl.stop - sl.start)
        bar.close()
    shape = (len(tops), len(lefts))
    top_class = torch.cat(cls_out).view(shape)
    x = model_space(model, base01)
    try:
        proj = project(module, x, layer, ch)
    except DeconvError:
        proj = rule_projection(module, x, layer, ch)
    classes = sorted({int(c) for c in top_class.flatten().tolist()} | {tgt})
    return OcclusionStudy(image=arr, layer=layer, channel=ch, target=tgt, label=model.label(tgt), size=size,
                          fill=float(fill), tops=tops, lefts=lefts, activation=torch.cat(act_out).view(shape),
                          probability=torch.cat(prob_out).view(shape), top_class=top_class,
                          top_probability=torch.cat(top_out).view(shape), projection=proj,
                          base_activation=base_act, base_probability=float(probs[tgt]),
                          labels={c: model.label(c) for c in classes})
