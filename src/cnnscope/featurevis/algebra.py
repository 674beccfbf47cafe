"""The objective base class and its algebra (docs/ARCHITECTURE.md, rule 3: objectives are data).

An objective is a small object: called on a mapping of captured activations it returns one value per image
(``Tensor[B]``). The renderer *maximises* the sum of these values (it negates once). Objectives combine with
``+ - * /``, negation and Python's ``sum(...)``; they know which layers they need (:attr:`Objective.layers`), so
the renderer captures exactly those layers and stops the forward pass at the deepest one. ``.spec()`` returns
JSON; :func:`from_spec` rebuilds the objective.

The activations mapping holds one entry per captured layer (``[B, C, H, W]`` or ``[B, C]``) under the layer's dotted
name (its output) or :func:`layer_key` ``(name, pre_activation=True)`` (the input of an activation module), the
rendered image in [0, 1] under :data:`INPUT` (untransformed, ``[B, 3, H, W]``) and the model's output under
:data:`OUTPUT`.

Every objective kind is registered in :data:`OBJECTIVES` by the :func:`register_objective` decorator on its class;
the registry imports every module of :mod:`cnnscope.featurevis` when first read, so a new objective is one decorated
class in one file (the CLI, :func:`~cnnscope.featurevis.from_spec` and the tests read the registry).

Reference: Olah, Mordvintsev, Schubert, *Feature Visualization*, Distill 2017 (objectives, diversity, linear
combinations of neurons).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..errors import LayerError, MethodError, unknown
from ..registry import Registry

#: key of the rendered image (in [0, 1], before transforms) in the activations mapping
INPUT = "<input>"
#: key of the model's output (logits) in the activations mapping
OUTPUT = "<output>"
#: prefix of the key of an activation module's *input* (pre-activation values) in the activations mapping
PRE = "<pre>"

Acts = Mapping[str, torch.Tensor]

#: every objective kind by name (the ``type`` of its spec); entries are added by :func:`register_objective`
OBJECTIVES: Registry[type[Objective]] = Registry("objective", package="cnnscope.featurevis", name_attr="kind")
#: class decorator that registers an objective under its :attr:`Objective.kind`
register_objective = OBJECTIVES.register


def layer_key(layer: str, pre_activation: bool = False) -> str:
    """Activation key of a layer's output, or with ``pre_activation`` of its input (an activation module's)."""
    return PRE + layer if pre_activation else layer


def split_key(key: str) -> tuple[str, bool]:
    """Inverse of :func:`layer_key`: ``(layer, pre_activation)``."""
    return (key[len(PRE):], True) if key.startswith(PRE) else (key, False)


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

    @classmethod
    def parse(cls, tokens: Sequence[str]) -> Objective:
        """Build from the text of ``KIND:ARG:ARG...`` (the command line's objective syntax), split at ``:``.

        The default maps the tokens in order onto the constructor's parameters and ``name=value`` tokens onto the
        parameter ``name``. A token is read as an int, a float, ``true``/``false``, ``none``, or a comma-separated
        list of those (``2,3`` for a position, ``1,0,-1`` for a vector); anything else, and every value of a
        parameter annotated ``str``, stays text. Override it for another syntax.

        Raises:
            MethodError: a token the constructor does not take.
        """
        params = constructor_parameters(cls)
        names = [n for n, p in params.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for tok in tokens:
            key, eq, text = tok.partition("=")
            if eq and key.strip() in params:
                name = key.strip()
                kwargs[name] = _text_value(text, params[name].annotation)
            else:
                if kwargs or len(args) >= len(names):
                    raise MethodError(f"objective {cls.kind!r} does not take {tok!r}; usage: {usage(cls)}")
                args.append(_text_value(tok, params[names[len(args)]].annotation))
        try:
            return cls(*args, **kwargs)
        except TypeError as exc:
            raise MethodError(f"bad arguments for objective {cls.kind!r} ({exc}); usage: {usage(cls)}") from None

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
        """``kind(required, ..., option=value)``; options left at their defaults are not shown."""
        params = constructor_parameters(type(self))
        parts = []
        for k, v in self.args().items():
            p = params.get(k)
            if p is None or p.default is inspect.Parameter.empty:
                parts.append(repr(v))
            elif not _equal(v, p.default):
                parts.append(f"{k}={v!r}")
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


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of ``cls(...)`` (without ``self`` and ``*args``/``**kwargs``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in inspect.signature(cls).parameters.items() if p.kind in kinds}


def usage(cls: type[Objective]) -> str:
    """The command-line form of an objective kind: ``neuron:LAYER:CHANNEL[:POSITION][:pre_activation=VALUE]``."""
    text = cls.kind
    for name, p in constructor_parameters(cls).items():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            text += f"[:{name}=VALUE]"
        elif p.default is inspect.Parameter.empty:
            text += f":{name.upper()}"
        else:
            text += f"[:{name.upper()}]"
    return text


def _text_value(text: str, annotation: object) -> Any:
    """A command-line token as a value (see :meth:`Objective.parse`)."""
    if annotation in ("str", str):
        return text
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if "," in text:
        return [_text_value(t, None) for t in text.split(",") if t.strip()]
    for kind in (int, float):
        try:
            return kind(low)
        except ValueError:
            pass
    return text.strip()


def _equal(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


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
