"""Objectives: what a feature visualization maximises.

Unit objectives read one layer (``neuron``, ``channel``, ``layer``, ``direction``, ``direction_neuron``,
``diversity``) or the model's output (``class_logit``); they combine with ``+ - * /``, negation and ``sum(...)``
(see :mod:`.algebra`). Each returns one value per image (``Tensor[B]``); the renderer maximises their sum.

Layer objectives read a layer's *output*; with ``pre_activation=True`` they read the *input* of an activation
module instead (pre-ReLU values, as in *Curve Detectors*); the layer must then be an activation module. Positions
follow :mod:`cnnscope.units`: ``(row, col)`` in the layer's grid, ``"center"`` = ``(H // 2, W // 2)``, ``"max"`` =
the strongest position of the channel, per image. Channels and positions are those of the layer's layout: the
renderer's :class:`~cnnscope.capture.Capture` hands objectives ``[B, C, H, W]`` views of ``[B, H, W, C]`` and token
outputs (class token dropped), so ``channel("layers.1", 27)`` of a Swin stage is feature 27, not row 27.

Reference: Olah, Mordvintsev, Schubert, *Feature Visualization*, Distill 2017 (objectives, diversity, linear
combinations of neurons).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import LayerError, MethodError
from ..units import POSITION_NAMES, Unit, check_position, grid_position, read_unit
from .algebra import INPUT, OUTPUT, Acts, Binary, Objective, Scaled, Sum, layer_key, register_objective

if TYPE_CHECKING:
    from ..models import ModelLike

__all__ = ["INPUT", "OUTPUT", "Binary", "Channel", "ClassLogit", "Direction", "DirectionNeuron", "Diversity",
           "Layer", "LayerObjective", "Neuron", "Objective", "Scaled", "Sum", "channel", "class_logit",
           "direction", "direction_neuron", "diversity", "from_unit", "layer", "neuron", "unit_objectives"]


def _check_layer(layer: object) -> str:
    if not isinstance(layer, str) or not layer:
        raise LayerError(f"layer names are non-empty dotted strings like 'blocks.4.0', got {layer!r}")
    return layer


def _check_index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LayerError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise MethodError(f"{what} is True or False, got {value!r}")
    return value


def _check_channel_range(layer: str, shape: tuple[int, ...] | None, channel: int) -> None:
    if shape is None:
        return
    n = shape[0]
    if channel >= n:
        raise LayerError(f"channel {channel} is out of range for layer {layer!r}, which has {n} channels "
                         f"(valid: 0..{n - 1})")


def _check_position_range(layer: str, shape: tuple[int, ...] | None, position: tuple[int, int] | str) -> None:
    """A fixed ``(row, col)`` must lie in the layer's ``H x W`` grid; a layer without a grid takes none."""
    if shape is None or not isinstance(position, tuple):
        return
    if len(shape) != 3:
        raise LayerError(f"layer {layer!r} has no spatial grid ({shape}); position {position} does not apply")
    h, w = shape[1:]
    if not (0 <= position[0] < h and 0 <= position[1] < w):
        raise LayerError(f"position (row={position[0]}, col={position[1]}) is outside layer {layer!r}'s {h}x{w} "
                         f"map (valid: row 0..{h - 1}, col 0..{w - 1})")


def _neuron_position(position: object) -> tuple[int, int] | str:
    if position is None:
        raise LayerError("a neuron needs a position: (row, col), 'center' or 'max' (the whole channel is "
                         "channel(layer, channel))")
    return check_position(position, allow=POSITION_NAMES)  # type: ignore[return-value]


def _json_position(position: tuple[int, int] | str) -> list[int] | str:
    return list(position) if isinstance(position, tuple) else position


def _at(values: torch.Tensor, position: tuple[int, int] | str, layer: str) -> torch.Tensor:
    """``[B]`` from per-position ``[B, H, W]`` values (``[B]`` passes through: a layer without a grid)."""
    if values.ndim == 1:
        if isinstance(position, tuple):
            raise LayerError(f"layer {layer!r} has no spatial grid; position {position} does not apply")
        return values
    return read_unit(values.unsqueeze(1), 0, position, layer)


class LayerObjective(Objective):
    """Common base of the objectives that read one layer: its output, or with ``pre_activation=True`` the input
    of an activation module (pre-activation values)."""

    def __init__(self, layer: str, *, pre_activation: bool = False) -> None:
        self.layer = _check_layer(layer)
        self.pre_activation = _check_flag(pre_activation, "pre_activation")
        #: the activation key this objective reads (see :func:`~cnnscope.featurevis.algebra.layer_key`)
        self.key = layer_key(self.layer, self.pre_activation)
        self.requires = (self.key,)

    def act(self, acts: Acts) -> torch.Tensor:
        return acts[self.key]

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "pre_activation": self.pre_activation}


@register_objective
class Neuron(LayerObjective):
    """One neuron: channel ``channel`` at ``position``, ``(row, col)``, ``"center"`` (``(H // 2, W // 2)``) or
    ``"max"`` (the channel's strongest position, per image)."""

    kind = "neuron"

    def __init__(self, layer: str, channel: int, position: tuple[int, int] | str = "center", *,
                 pre_activation: bool = False) -> None:
        super().__init__(layer, pre_activation=pre_activation)
        self.channel = _check_index(channel, "channel")
        self.position = _neuron_position(position)

    def value(self, acts: Acts) -> torch.Tensor:
        a = self.act(acts)
        if a.ndim == 2:  # no grid: one neuron per channel
            return _at(a[:, self.channel], self.position, self.layer)
        return read_unit(a, self.channel, self.position, self.layer)

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get(self.key)
        _check_channel_range(self.layer, shape, self.channel)
        _check_position_range(self.layer, shape, self.position)

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "channel": self.channel, "position": _json_position(self.position),
                "pre_activation": self.pre_activation}


@register_objective
class Channel(LayerObjective):
    """Mean activation of channel ``channel`` over all positions."""

    kind = "channel"

    def __init__(self, layer: str, channel: int, *, pre_activation: bool = False) -> None:
        super().__init__(layer, pre_activation=pre_activation)
        self.channel = _check_index(channel, "channel")

    def value(self, acts: Acts) -> torch.Tensor:
        return read_unit(self.act(acts), self.channel, None, self.layer)

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_channel_range(self.layer, shapes.get(self.key), self.channel)

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "channel": self.channel, "pre_activation": self.pre_activation}


@register_objective
class Layer(LayerObjective):
    """DeepDream: mean squared activation of a whole layer."""

    kind = "layer"

    def value(self, acts: Acts) -> torch.Tensor:
        return self.act(acts).pow(2).flatten(1).mean(1)


@register_objective
class Direction(LayerObjective):
    """A direction ``vector`` in channel space: ``<a_p, v> / |v|`` averaged over positions ``p`` (a linear
    combination of channels, the article's "interaction between neurons"). With ``cossim_pow > 0`` each position's
    dot product is multiplied by ``max(cos(a_p, v), 0.1) ** cossim_pow`` (Lucid's ``direction_neuron``)."""

    kind = "direction"

    def __init__(self, layer: str, vector: Sequence[float] | torch.Tensor, *, cossim_pow: float = 0.0,
                 pre_activation: bool = False) -> None:
        super().__init__(layer, pre_activation=pre_activation)
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
        shape = shapes.get(self.key)
        if shape is not None and shape[0] != self.vector.numel():
            raise LayerError(f"the direction has {self.vector.numel()} entries but layer {self.layer!r} has "
                             f"{shape[0]} channels")

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "vector": [float(x) for x in self.vector], "cossim_pow": self.cossim_pow,
                "pre_activation": self.pre_activation}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("cossim_pow", self.cossim_pow),
                                                    ("pre_activation", self.pre_activation)) if v)
        return f"{self.kind}({self.layer!r}, <{self.vector.numel()} values>{extra})"


@register_objective
class DirectionNeuron(Direction):
    """A direction ``vector`` in channel space at one ``position`` (``(row, col)``, ``"center"`` or ``"max"``)."""

    kind = "direction_neuron"

    def __init__(self, layer: str, vector: Sequence[float] | torch.Tensor,
                 position: tuple[int, int] | str = "center", *, cossim_pow: float = 0.0,
                 pre_activation: bool = False) -> None:
        super().__init__(layer, vector, cossim_pow=cossim_pow, pre_activation=pre_activation)
        self.position = _neuron_position(position)

    def value(self, acts: Acts) -> torch.Tensor:
        a = self.act(acts)
        if a.ndim == 4 and self.position != "max":  # one fixed position: take it before the dot product
            row, col = grid_position(self.position, a, self.layer)
            return self.dot(a[:, :, row, col])
        return _at(self.dot(a), self.position, self.layer)

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().check(shapes)
        _check_position_range(self.layer, shapes.get(self.key), self.position)

    def args(self) -> dict[str, Any]:
        return {"layer": self.layer, "vector": [float(x) for x in self.vector],
                "position": _json_position(self.position), "cossim_pow": self.cossim_pow,
                "pre_activation": self.pre_activation}

    def __repr__(self) -> str:
        text = super().__repr__()
        pos = _json_position(self.position)
        return text if pos == "center" else f"{text[:-1]}, position={pos!r})"


@register_objective
class ClassLogit(Objective):
    """The model's output ``index`` (a class logit, before softmax); the forward pass then runs to the end."""

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


@register_objective
class Diversity(LayerObjective):
    """Similarity of the images of one group, **to subtract** (Olah et al. 2017, "Diversity").

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


def neuron(layer: str, channel: int, position: tuple[int, int] | str = "center", *,
           pre_activation: bool = False) -> Objective:
    """One neuron of ``layer``: channel ``channel`` at ``position`` (``(row, col)``, ``"center"``, ``"max"``)."""
    return Neuron(layer, channel, position, pre_activation=pre_activation)


def channel(layer: str, channel: int, *, pre_activation: bool = False) -> Objective:
    """Mean activation of channel ``channel`` of ``layer``."""
    return Channel(layer, channel, pre_activation=pre_activation)


def layer(layer: str, *, pre_activation: bool = False) -> Objective:
    """DeepDream objective: mean squared activation of ``layer``."""
    return Layer(layer, pre_activation=pre_activation)


def direction(layer: str, vector: Sequence[float] | torch.Tensor, *, cossim_pow: float = 0.0,
              pre_activation: bool = False) -> Objective:
    """Activation along ``vector`` in ``layer``'s channel space, averaged over positions."""
    return Direction(layer, vector, cossim_pow=cossim_pow, pre_activation=pre_activation)


def direction_neuron(layer: str, vector: Sequence[float] | torch.Tensor, position: tuple[int, int] | str = "center",
                     *, cossim_pow: float = 0.0, pre_activation: bool = False) -> Objective:
    """Activation along ``vector`` at one ``position`` of ``layer`` (``(row, col)``, ``"center"``, ``"max"``)."""
    return DirectionNeuron(layer, vector, position, cossim_pow=cossim_pow, pre_activation=pre_activation)


def class_logit(index: int) -> Objective:
    """Logit ``index`` of the model's output."""
    return ClassLogit(index)


def diversity(layer: str, *, pre_activation: bool = False) -> Objective:
    """Gram-matrix cosine similarity between the images of a group (subtract it to get diverse images)."""
    return Diversity(layer, pre_activation=pre_activation)


def from_unit(unit: Unit, *, pre_activation: bool = False) -> Objective:
    """The objective of a :class:`cnnscope.Unit`: its channel's mean (``position=None``), else its neuron."""
    if not isinstance(unit, Unit):
        raise MethodError(f"from_unit() takes a cnnscope.Unit (cnnscope.unit(layer, channel, position)), got "
                          f"{type(unit).__name__}")
    if unit.position is None:
        return Channel(unit.layer, unit.channel, pre_activation=pre_activation)
    return Neuron(unit.layer, unit.channel, unit.position, pre_activation=pre_activation)


def unit_objectives(model: ModelLike, layer: str, *, channels: str | int | Sequence[int] | None = None,
                    position: tuple[int, int] | str | None = None, pre_activation: bool = False,
                    layout: str | None = None) -> list[Objective]:
    """One objective per selected channel of ``layer``: the channel's mean (``position=None``), else its neuron.

    Channels are counted in the layer's layout (:mod:`cnnscope.capture.layout`): the last dimension of a
    ``[B, H, W, C]`` or token output, and the objectives read the same channels, since the renderer's
    :class:`~cnnscope.capture.Capture` hands them ``[B, C, H, W]`` views.

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module`` (one probe forward at its input size counts the
            layer's channels).
        layer: dotted layer name.
        channels: ``None`` (all), an int, a list, or ``"0,4,8-11"`` (:func:`cnnscope.parse_channels`).
        position: ``None``, ``(row, col)``, ``"center"`` or ``"max"``.
        pre_activation: read the input of ``layer``, an activation module.
        layout: the layer's layout where it cannot be detected (``"nchw"``, ``"nhwc"``, ``"tokens"``,
            ``"tokens+cls"``).

    Raises:
        LayerError: an unknown layer (with close matches) or one without channels.
        CnnscopeError: a malformed channel selection or one outside the layer.
    """
    from ..capture import list_layers, resolve_layers
    from ..models import as_model
    from ..units import parse_channels, unit

    m = as_model(model)
    resolve_layers(m, layer)  # unknown names: LayerError with close matches
    info = {i.name: i for i in list_layers(m, layout={layer: layout} if layout else None)}.get(layer)
    if info is None or info.output_shape is None:
        raise LayerError(f"layer {layer!r} produced no tensor in a probe forward at {m.input_size[0]}x"
                         f"{m.input_size[1]}; name its objectives one by one")
    if info.channels is None:
        raise LayerError(f"the layout of layer {layer!r} (output {list(info.output_shape)}) cannot be determined, "
                         f"so its channels are unknown; pass layout='nchw', 'nhwc', 'tokens' or 'tokens+cls'")
    return [from_unit(unit(layer, c, position), pre_activation=pre_activation)
            for c in parse_channels(channels, int(info.channels))]
