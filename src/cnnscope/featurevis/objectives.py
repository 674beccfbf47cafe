"""Objectives: what a feature visualization maximises (DESIGN rule 3: objectives are data).

An objective is a small object: called on a mapping of captured activations it returns one value per image
(``Tensor[B]``). The renderer *maximises* the sum of these values (it negates once). Objectives combine with
``+ - * /``, negation and Python's ``sum(...)``; they know which layers they need (:attr:`Objective.layers`), so
the renderer captures exactly those layers and stops the forward pass at the deepest one. ``.spec()`` returns
JSON; :func:`from_spec` rebuilds the objective.

The activations mapping holds one entry per captured layer (``[B, C, H, W]`` or ``[B, C]``), the rendered image
in [0, 1] under :data:`INPUT` (untransformed, ``[B, 3, H, W]``) and the model's output under :data:`OUTPUT`.

Reference: Olah, Mordvintsev, Schubert, *Feature Visualization*, Distill 2017 (objectives, diversity, linear
combinations of neurons).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..errors import LayerError, MethodError, unknown

#: key of the rendered image (in [0, 1], before transforms) in the activations mapping
INPUT = "<input>"
#: key of the model's output (logits) in the activations mapping
OUTPUT = "<output>"

Acts = Mapping[str, torch.Tensor]


class Objective:
    """Base class: ``objective(acts) -> Tensor[B]``, maximised by the renderer.

    Subclasses set :attr:`kind`, implement :meth:`value`, :meth:`args` (the JSON arguments of the spec) and,
    when they read a layer, :attr:`requires`.
    """

    kind: str = "objective"
    #: activation keys read: layer names, :data:`INPUT`, :data:`OUTPUT`
    requires: tuple[str, ...] = ()

    # -- evaluation --------------------------------------------------------------------------------
    def __call__(self, acts: Acts) -> torch.Tensor:
        missing = [k for k in self.requires if k not in acts or acts[k] is None]
        if missing:
            raise LayerError(f"{self!r} needs {', '.join(missing)}, which the activations do not hold")
        out = self.value(acts)
        if out.ndim != 1:
            raise MethodError(f"{self!r} returned shape {tuple(out.shape)}; objectives return one value per image")
        return out

    def value(self, acts: Acts) -> torch.Tensor:
        raise NotImplementedError

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise :class:`LayerError` when an index does not fit the captured shapes (without batch dim)."""

    def args(self) -> dict[str, Any]:
        return {}

    def children(self) -> tuple[Objective, ...]:
        return ()

    # -- introspection -----------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[str, ...]:
        """Model layers this objective reads (dotted names, without :data:`INPUT`/:data:`OUTPUT`)."""
        return tuple(k for k in self.keys() if k not in (INPUT, OUTPUT))

    @property
    def needs_output(self) -> bool:
        """Whether the model's output is read (then the forward pass cannot stop early)."""
        return OUTPUT in self.keys()

    def keys(self) -> tuple[str, ...]:
        """Every activation key read by this objective and its children, in first-use order."""
        out = list(self.requires)
        for child in self.children():
            out += child.keys()
        return tuple(dict.fromkeys(out))

    def spec(self) -> dict[str, Any]:
        """JSON description; ``from_spec(obj.spec())`` rebuilds an equal objective."""
        return {"type": self.kind, **self.args()}

    def __repr__(self) -> str:
        parts = [repr(v) for v in self.args().values()]
        return f"{self.kind}({', '.join(parts)})"

    # -- algebra -----------------------------------------------------------------------------------
    def __add__(self, other: object) -> Objective:
        if isinstance(other, Objective):
            return Sum([self, other])
        return NotImplemented

    def __radd__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts from 0
            return self
        if isinstance(other, Objective):
            return Sum([other, self])
        return NotImplemented

    def __sub__(self, other: object) -> Objective:
        if isinstance(other, Objective):
            return Sum([self, -other])
        return NotImplemented

    def __neg__(self) -> Objective:
        return Scaled(self, -1.0)

    def __mul__(self, other: object) -> Objective:
        if isinstance(other, Objective):
            return Binary("mul", self, other)
        if _is_number(other):
            return Scaled(self, float(other))  # type: ignore[arg-type]
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Objective:
        if isinstance(other, Objective):
            return Binary("div", self, other)
        if _is_number(other):
            if float(other) == 0.0:  # type: ignore[arg-type]
                raise ZeroDivisionError("objective divided by zero")
            return Scaled(self, 1.0 / float(other))  # type: ignore[arg-type]
        return NotImplemented

    @staticmethod
    def sum(objectives: Iterable[Objective]) -> Objective:
        """Sum of several objectives (same as Python's ``sum``)."""
        items = list(objectives)
        if not items:
            raise MethodError("Objective.sum() needs at least one objective")
        return items[0] if len(items) == 1 else Sum(items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Objective) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self))


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


# -- composite nodes -------------------------------------------------------------------------------
class Sum(Objective):
    """``a + b + ...`` (nested sums are flattened)."""

    kind = "sum"

    def __init__(self, terms: Sequence[Objective]) -> None:
        flat: list[Objective] = []
        for t in terms:
            if not isinstance(t, Objective):
                raise MethodError(f"can only add objectives, got {type(t).__name__}")
            flat += list(t.terms) if isinstance(t, Sum) else [t]
        self.terms = tuple(flat)

    def value(self, acts: Acts) -> torch.Tensor:
        out = self.terms[0](acts)
        for t in self.terms[1:]:
            out = out + t(acts)
        return out

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        for t in self.terms:
            t.check(shapes)

    def children(self) -> tuple[Objective, ...]:
        return self.terms

    def spec(self) -> dict[str, Any]:
        return {"type": "sum", "terms": [t.spec() for t in self.terms]}

    def __repr__(self) -> str:
        text = repr(self.terms[0])
        for t in self.terms[1:]:
            if isinstance(t, Scaled) and t.factor < 0:
                text += " - " + repr(Scaled(t.term, -t.factor))
            else:
                text += " + " + repr(t)
        return text


class Scaled(Objective):
    """``factor * term``."""

    kind = "scale"

    def __init__(self, term: Objective, factor: float) -> None:
        if isinstance(term, Scaled):
            term, factor = term.term, term.factor * factor
        self.term, self.factor = term, float(factor)

    def value(self, acts: Acts) -> torch.Tensor:
        return self.factor * self.term(acts)

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.term.check(shapes)

    def children(self) -> tuple[Objective, ...]:
        return (self.term,)

    def spec(self) -> dict[str, Any]:
        return {"type": "scale", "factor": self.factor, "term": self.term.spec()}

    def __repr__(self) -> str:
        inner = repr(self.term)
        if isinstance(self.term, (Sum, Binary)):
            inner = f"({inner})"
        if self.factor == -1.0:
            return f"-{inner}"
        return f"{self.factor:g} * {inner}"


class Binary(Objective):
    """``a * b`` or ``a / b`` of two objectives (elementwise per image)."""

    kind = "binary"
    OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "mul": torch.mul, "div": torch.div}

    def __init__(self, op: str, a: Objective, b: Objective) -> None:
        if op not in self.OPS:
            raise MethodError(unknown("objective operator", op, self.OPS))
        self.op, self.a, self.b = op, a, b

    def value(self, acts: Acts) -> torch.Tensor:
        return self.OPS[self.op](self.a(acts), self.b(acts))

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.a.check(shapes)
        self.b.check(shapes)

    def children(self) -> tuple[Objective, ...]:
        return (self.a, self.b)

    def spec(self) -> dict[str, Any]:
        return {"type": self.op, "terms": [self.a.spec(), self.b.spec()]}

    def __repr__(self) -> str:
        sym = "*" if self.op == "mul" else "/"
        return f"{_wrapped(self.a)} {sym} {_wrapped(self.b)}"


def _wrapped(o: Objective) -> str:
    return f"({o!r})" if isinstance(o, (Sum, Binary)) else repr(o)


# -- unit objectives -------------------------------------------------------------------------------
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
