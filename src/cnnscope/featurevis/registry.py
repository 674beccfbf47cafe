"""Objectives by name: :func:`from_spec` (JSON), :func:`parse_objective` (command-line text) and
:func:`describe_objectives` (the listing), all read from :data:`~cnnscope.featurevis.algebra.OBJECTIVES`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import MethodError
from .algebra import OBJECTIVES, Binary, Objective, Scaled, Sum, usage

__all__ = ["OBJECTIVES", "describe_objectives", "from_spec", "parse_objective"]


def from_spec(spec: Mapping[str, Any]) -> Objective:
    """Rebuild an objective from ``objective.spec()``.

    Raises:
        MethodError: unknown ``type`` (with close matches) or a malformed spec.
    """
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise MethodError(f"an objective spec is a dict with a 'type', got {spec!r}")
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    if kind == "sum":
        return Sum([from_spec(t) for t in args.get("terms", [])])
    if kind == "scale":
        return Scaled(from_spec(args["term"]), float(args["factor"]))
    if kind in Binary.OPS:
        a, b = args.get("terms", [None, None])
        return Binary(kind, from_spec(a), from_spec(b))
    cls = OBJECTIVES.get(kind)
    try:
        return cls(**args)
    except TypeError as exc:
        raise MethodError(f"bad arguments for objective {kind!r}: {exc}") from None


def parse_objective(text: str) -> Objective:
    """``KIND:ARG[:ARG...]`` -> the registered objective ``KIND`` built by its :meth:`~Objective.parse`.

    Examples: ``channel:blocks.4.0:3``, ``neuron:blocks.4.0:3:2,5`` (row 2, col 5), ``neuron:blocks.4.0:3:max``,
    ``channel:blocks.4.0.act:3:pre_activation=true``, ``layer:blocks.3``, ``class_logit:281``,
    ``direction:blocks.4.0:1,0,-1``.

    Raises:
        MethodError: an unknown kind (with close matches) or arguments its constructor does not take.
    """
    if not isinstance(text, str) or not text.strip():
        raise MethodError(f"an objective is written KIND:ARG:..., got {text!r}")
    kind, *tokens = text.strip().split(":")
    tokens = [t for t in tokens if t.strip()]
    return OBJECTIVES.get(kind.strip()).parse(tokens)


def describe_objectives() -> list[dict[str, str]]:
    """One row per registered objective: ``name``, command-line ``usage`` and ``summary`` (its docstring's first
    paragraph), in registration order."""
    rows = []
    for name, cls in OBJECTIVES.items():
        doc = inspect.getdoc(cls) or ""
        summary = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
        rows.append({"name": name, "usage": usage(cls), "summary": summary})
    return rows
