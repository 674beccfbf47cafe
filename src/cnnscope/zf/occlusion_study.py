"""The occlusion study of Zeiler & Fergus (2013, Fig. 7): slide a grey square over the image and watch.

For every position of the square the model runs on the occluded image (many positions per forward batch) and
four maps are recorded, as in the paper's panels:

* (b) the total activation of the strongest feature map of a chosen layer (the channel whose largest
  activation on the unoccluded image is the largest);
* (c) that map's strongest activation projected to pixels for the unoccluded image (``method="auto"``: the true
  deconvnet where the path is a chain it inverts with max-pooling, else guided backprop, else, on a model without
  ReLUs, the plain gradient; :mod:`cnnscope.zf.projection_choice`; ``projection.method`` and ``.reason`` say
  which and why; computed before the occlusion loop);
* (d) the probability of the correct class;
* (e) the most probable class.

The study is about one image (its maps are over that image's square positions): ``images`` must hold exactly
one; run it once per image for several.

Example:
    >>> s = occlusion_study(model, "chelsea.png", "blocks.5", size=48, stride=16)
    >>> s.probability.shape, s.label, s.channel    # [rows, cols] of square positions
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture, evaluating, resolve_layers
from ..errors import CnnscopeError, ImageError, LayerError
from ..models import ModelLike, as_model
from .common import check_class, class_index, grey, pictures
from .deconvnet import Projection
from .projection_choice import project_unit
from .rule_projector import check_method


@dataclass
class OcclusionStudy:
    """Maps over the positions of the occluding square (row ``i`` = ``tops[i]``, column ``j`` = ``lefts[j]``).

    Attributes:
        image: the image as the model saw it, ``uint8 [H, W, 3]``.
        layer, channel: the feature map of panel (b).
        target, label: the correct class of panel (d).
        size, fill: side of the square in pixels and its grey level in [0, 1].
        tops, lefts: top-left corners of the square positions.
        activation: (b) total activation of ``channel`` per position, ``[rows, cols]`` (on the model's device, as
            are the other maps).
        probability: (d) probability of ``target`` per position.
        top_class, top_probability: (e) most probable class and its probability per position.
        projection: (c) the channel's strongest activation projected to pixels (unoccluded image).
        pre_activation: whether (b) and (c) read the input of ``layer``.
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
    pre_activation: bool = False

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
                "pre_activation": self.pre_activation,
                "projection": {"method": self.projection.method, "reason": self.projection.reason,
                               "position": list(self.projection.positions[0]),
                               "activation": float(self.projection.activations[0])},
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


def occlusion_study(model: ModelLike, images: object, layer: str, *, target: int | str | None = None,
                    channel: int | None = None, size: int = 48, stride: int = 16, fill: float = 0.5,
                    pre_activation: bool = False, method: str = "auto", batch_size: int | None = None,
                    progress: bool = False) -> OcclusionStudy:
    """Run the occlusion study of the paper's Fig. 7 on one image.

    Args:
        model: a model returning ``[B, classes]`` logits (not modified).
        images: exactly one image: a path, a picture, or a model-space ``[C, H, W]`` / ``[1, C, H, W]`` tensor.
        layer: dotted name of a convolutional layer for panels (b) and (c).
        target: the correct class (index or label); default the model's top-1 on the unoccluded image.
        channel: the feature map of panel (b); default the strongest one on the unoccluded image.
        size, stride: the square's side and step in input pixels.
        fill: the square's grey level in [0, 1] picture units (0.5 = mid grey, as in the paper), converted to
            the model's input space.
        pre_activation: panels (b) and (c) read the input of ``layer`` (an activation module).
        method: panel (c)'s projection: ``"auto"``, ``"deconvnet"``, ``"rule"``, ``"guided"`` or ``"gradient"``
            (:func:`~cnnscope.zf.projection_choice.choose_projector`).
        batch_size: occluded images per forward (default by device).
        progress: show a progress bar.

    Raises:
        ImageError: not exactly one image; LayerError: unknown layer or one without a spatial map;
        CnnscopeError: bad size/stride/fill/target; MethodError: unknown method.
    """
    check_method(method)
    m = as_model(model)
    module = m.module
    fill_value = grey(m, fill)
    resolve_layers(module, layer)
    x = m.batch(images)
    if len(x) != 1:
        raise ImageError(f"the occlusion study maps one image, got {len(x)}; run it once per image")
    h, w = x.shape[-2:]
    tops, lefts = positions(h, size, stride), positions(w, size, stride)
    with torch.no_grad(), evaluating(module), \
            Capture(module, layer, stop_early=False, pre_activation=pre_activation) as cap:
        logits = cap.run(x)
        acts = cap[layer]
        if acts.ndim != 4:
            raise LayerError(f"layer {layer!r} has no spatial output (shape {tuple(acts.shape[1:])})")
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise CnnscopeError(f"model {m.name!r} does not return [B, classes] logits")
        probs = logits.float().softmax(1)[0]
        tgt = check_class(class_index(m, target, int(probs.argmax())), probs.numel())
        ch = int(acts[0].flatten(1).amax(1).argmax()) if channel is None else int(channel)
        if not 0 <= ch < acts.shape[1]:
            raise LayerError(f"channel {ch} is outside layer {layer!r} ({acts.shape[1]} channels)")
        base_act = float(acts[0, ch].sum())
    # before the loop: a failure costs nothing
    proj = project_unit(m, x, layer, channel=ch, pre_activation=pre_activation, method=method)
    with torch.no_grad(), evaluating(module), \
            Capture(module, layer, stop_early=False, pre_activation=pre_activation) as cap:
        grid = [(top, left) for top in tops for left in lefts]
        act_out, prob_out, cls_out, top_out = [], [], [], []
        bs = resolve_batch_size(batch_size, m.device)
        for sl in track(chunks(len(grid), bs), progress, "occlusion", total=-(-len(grid) // bs)):
            batch = x.repeat(sl.stop - sl.start, 1, 1, 1)
            for n, (top, left) in enumerate(grid[sl]):
                batch[n, :, top:top + size, left:left + size] = fill_value[0]
            out = cap.run(batch).float().softmax(1)
            act_out.append(cap[layer][:, ch].flatten(1).sum(1).float())
            prob_out.append(out[:, tgt])
            best = out.max(1)
            cls_out.append(best.indices)
            top_out.append(best.values)
    shape = (len(tops), len(lefts))
    top_class = torch.cat(cls_out).view(shape)
    classes = sorted({int(c) for c in top_class.flatten().tolist()} | {tgt})
    return OcclusionStudy(image=pictures(m, x)[0], layer=layer, channel=ch, target=tgt, label=m.label(tgt),
                          size=size, fill=float(fill), tops=tops, lefts=lefts,
                          activation=torch.cat(act_out).view(shape), probability=torch.cat(prob_out).view(shape),
                          top_class=top_class, top_probability=torch.cat(top_out).view(shape), projection=proj,
                          base_activation=base_act, base_probability=float(probs[tgt]),
                          labels={c: m.label(c) for c in classes}, pre_activation=bool(pre_activation))

