"""The objective base class and its algebra (docs/ARCHITECTURE.md, rule 3: objectives are data).

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
