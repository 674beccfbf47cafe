"""Objectives: what a feature visualization maximises.

Unit objectives read one layer (``neuron``, ``channel``, ``layer``, ``direction``, ``direction_neuron``,
``diversity``) or the model's output (``class_logit``); they combine with ``+ - * /``, negation and ``sum(...)``
(see :mod:`.algebra`). Each returns one value per image (``Tensor[B]``); the renderer maximises their sum.

Reference: Olah, Mordvintsev, Schubert, *Feature Visualization*, Distill 2017 (objectives, diversity, linear
combinations of neurons).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import LayerError, MethodError
from .algebra import INPUT, OUTPUT, Acts, Binary, Objective, Scaled, Sum

__all__ = ["INPUT", "OUTPUT", "Binary", "Channel", "ClassLogit", "Direction", "DirectionNeuron", "Diversity",
           "Layer", "LayerObjective", "Neuron", "Objective", "Scaled", "Sum", "channel", "class_logit",
           "direction", "direction_neuron", "diversity", "layer", "neuron"]


def _check_layer(layer: object) -> str:
    if not isinstance(layer, str) or not layer:
        raise LayerError(f"layer names are non-empty dotted strings like 'blocks.4.0', got {layer!r}")
    return layer


def _check_index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LayerError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_channel_range(layer: str, shape: tuple[int, ...] | None, channel: int) -> None:
    if shape is None:
        return
    n = shape[0]
    if channel >= n:
        raise LayerError(f"channel {channel} is out of range for layer {layer!r}, which has {n} channels "
                         f"(valid: 0..{n - 1})")


def _centre(a: torch.Tensor, x: int | None, y: int | None, layer: str) -> tuple[int, int]:
    """Position ``(y, x)`` in a ``[B, C, H, W]`` map; ``None`` means the centre of that axis."""
    h, w = a.shape[-2], a.shape[-1]
    yy = h // 2 if y is None else y
    xx = w // 2 if x is None else x
    if not (0 <= yy < h and 0 <= xx < w):
        raise LayerError(f"position x={xx}, y={yy} is outside layer {layer!r}'s {h}x{w} map "
                         f"(valid: x 0..{w - 1}, y 0..{h - 1})")
    return yy, xx


class LayerObjective(Objective):
    """Common base of the objectives that read one layer."""

    def __init__(self, layer: str) -> None:
        self.layer = _check_layer(layer)
        self.requires = (self.layer,)

    def act(self, acts: Acts) -> torch.Tensor:
        return acts[self.layer]


class Neuron(LayerObjective):
    """One unit: channel ``channel`` at position ``(x, y)`` (default: the centre of the map, for each axis)."""

    kind = "neuron"

    def __init__(self, layer: str, channel: int, x: int | None = None, y: int | None = None) -> None:
        super().__init__(layer)
        self.channel = _check_index(channel, "channel")
        self.x = None if x is None else _check_index(x, "x")
        self.y = None if y is None else _check_index(y, "y")

    def value(self, acts: Acts) -> torch.Tensor:
        a = self.act(acts)
        if a.ndim == 2:
            return a[:, self.channel]
        yy, xx = _centre(a, self.x, self.y, self.layer)
        return a[:, self.channel, yy, xx]

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get(self.layer)
        _check_channel_range(self.layer, shape, self.channel)
        if shape is not None and len(shape) == 3:
            _centre(torch.empty(shape, device="meta"), self.x, self.y, self.layer)

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "channel": self.channel, "x": self.x, "y": self.y}

    def __repr__(self) -> str:
        pos = "" if self.x is None and self.y is None else f", x={self.x}, y={self.y}"
        return f"neuron({self.layer!r}, {self.channel}{pos})"


class Channel(LayerObjective):
    """Mean activation of one channel over all positions."""

    kind = "channel"

    def __init__(self, layer: str, channel: int) -> None:
        super().__init__(layer)
        self.channel = _check_index(channel, "channel")

    def value(self, acts: Acts) -> torch.Tensor:
        a = self.act(acts)[:, self.channel]
        return a.flatten(1).mean(1) if a.ndim > 1 else a

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_channel_range(self.layer, shapes.get(self.layer), self.channel)

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "channel": self.channel}


class Layer(LayerObjective):
    """DeepDream: mean squared activation of a whole layer."""

    kind = "layer"

    def value(self, acts: Acts) -> torch.Tensor:
        return self.act(acts).pow(2).flatten(1).mean(1)

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer}


class Direction(LayerObjective):
    """A direction in channel space: ``<a_p, v> / |v|`` averaged over positions ``p`` (a linear combination of
    channels, as in the article's "interaction between neurons"). With ``cossim_pow > 0`` each position's dot
    product is multiplied by ``max(cos(a_p, v), 0.1) ** cossim_pow`` (Lucid's ``direction_neuron``)."""

    kind = "direction"

    def __init__(self, layer: str, vector: Sequence[float] | torch.Tensor, cossim_pow: float = 0.0) -> None:
        super().__init__(layer)
        v = torch.as_tensor(vector, dtype=torch.float32).detach().flatten().cpu()
        if v.numel() == 0 or not torch.isfinite(v).all() or float(v.norm()) == 0.0:
            raise MethodError("a direction needs a non-zero, finite vector")
        self.vector = v
        self.cossim_pow = float(cossim_pow)

    def dot(self, a: torch.Tensor) -> torch.Tensor:
        """Per-position score ``[B, ...]`` of ``a`` (``[B, C, ...]``) along the direction."""
        v = self.vector.to(device=a.device, dtype=a.dtype)
        v = v.view(1, -1, *([1] * (a.ndim - 2)))
        d = (a * v).sum(1) / v.norm()
        if self.cossim_pow:
            cos = d / a.norm(dim=1).clamp_min(1e-8)
            d = d * cos.clamp_min(0.1).pow(self.cossim_pow)
        return d

    def value(self, acts: Acts) -> torch.Tensor:
        d = self.dot(self.act(acts))
        return d.flatten(1).mean(1) if d.ndim > 1 else d

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get(self.layer)
        if shape is not None and shape[0] != self.vector.numel():
            raise LayerError(f"the direction has {self.vector.numel()} entries but layer {self.layer!r} has "
                             f"{shape[0]} channels")

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "vector": [float(x) for x in self.vector], "cossim_pow": self.cossim_pow}

    def __repr__(self) -> str:
        return f"{self.kind}({self.layer!r}, <{self.vector.numel()} values>)"


class DirectionNeuron(Direction):
    """A direction in channel space at one position (default: the centre of the map)."""

    kind = "direction_neuron"

    def __init__(self, layer: str, vector: Sequence[float] | torch.Tensor, x: int | None = None,
                 y: int | None = None, cossim_pow: float = 0.0) -> None:
        super().__init__(layer, vector, cossim_pow)
        self.x = None if x is None else _check_index(x, "x")
        self.y = None if y is None else _check_index(y, "y")

    def value(self, acts: Acts) -> torch.Tensor:
        a = self.act(acts)
        if a.ndim == 4:
            yy, xx = _centre(a, self.x, self.y, self.layer)
            a = a[:, :, yy, xx]
        return self.dot(a)

    def args(self) -> dict[str, Any]:
        return {**super().args(), "x": self.x, "y": self.y}


class ClassLogit(Objective):
    """The model's output ``i`` (a class logit, before softmax); the forward pass then runs to the end."""

    kind = "class_logit"
    requires = (OUTPUT,)

    def __init__(self, index: int) -> None:
        self.index = _check_index(index, "class index")

    def value(self, acts: Acts) -> torch.Tensor:
        out = acts[OUTPUT]
        if out.ndim != 2:
            raise LayerError(f"class_logit needs [batch, classes] outputs, but the model returns shape "
                             f"{tuple(out.shape)}")
        return out[:, self.index]

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get(OUTPUT)
        if shape is not None and len(shape) == 1 and self.index >= shape[0]:
            raise LayerError(f"class index {self.index} is out of range: the model has {shape[0]} outputs "
                             f"(valid: 0..{shape[0] - 1})")

    def args(self) -> dict[str, Any]:
        return {"index": self.index}


class Diversity(LayerObjective):
    """Similarity of the images of one group, to be *subtracted* (Olah et al. 2017, "Diversity").

    For each image ``i`` the Gram matrix ``G_i = A_i A_i^T`` of the layer's activations (channels x channels,
    summed over positions) is flattened and L2-normalised; the value of image ``i`` is
    ``sum_{j != i} <G_i, G_j> / B`` (the pairwise cosine similarity of the Gram matrices). Its sum over the
    batch is Lucid's ``diversity``. Use ``objective - w * diversity(layer)``; a batch of one scores 0.
    """

    kind = "diversity"

    def value(self, acts: Acts) -> torch.Tensor:
        a = self.act(acts)
        b = a.shape[0]
        flat = a.flatten(2) if a.ndim > 2 else a.unsqueeze(-1)
        grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        sims = grams @ grams.T
        return (sims.sum(1) - sims.diagonal()) / b

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer}


def neuron(layer: str, channel: int, x: int | None = None, y: int | None = None) -> Objective:
    """One unit of ``layer``: channel ``channel`` at ``(x, y)`` (default: the map's centre on each axis)."""
    return Neuron(layer, channel, x, y)


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel ``c`` of ``layer``."""
    return Channel(layer, c)


def layer(layer: str) -> Objective:
    """DeepDream objective: mean squared activation of ``layer``."""
    return Layer(layer)


def direction(layer: str, vector: Sequence[float] | torch.Tensor, cossim_pow: float = 0.0) -> Objective:
    """Activation along ``vector`` in ``layer``'s channel space, averaged over positions."""
    return Direction(layer, vector, cossim_pow)


def direction_neuron(layer: str, vector: Sequence[float] | torch.Tensor, x: int | None = None,
                     y: int | None = None, cossim_pow: float = 0.0) -> Objective:
    """Activation along ``vector`` at one position of ``layer`` (default: the centre)."""
    return DirectionNeuron(layer, vector, x, y, cossim_pow)


def class_logit(i: int) -> Objective:
    """Logit ``i`` of the model's output."""
    return ClassLogit(i)


def diversity(layer: str) -> Objective:
    """Gram-matrix cosine similarity between the images of a group (subtract it to get diverse images)."""
    return Diversity(layer)
