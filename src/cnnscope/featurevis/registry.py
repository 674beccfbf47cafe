"""The objective registry: every objective by name, and :func:`from_spec` to rebuild one from its JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import MethodError, unknown
from . import objectives as ob
from . import penalties as pe

#: name (the ``type`` of its spec) -> class of every unit objective and penalty; the constructor arguments are
#: the spec's other keys
OBJECTIVES: dict[str, Callable[..., ob.Objective]] = {
    cls.kind: cls for cls in (ob.Neuron, ob.Channel, ob.Layer, ob.Direction, ob.DirectionNeuron, ob.ClassLogit,
                              ob.Diversity, pe.L1, pe.L2, pe.TotalVariation, pe.Blur)
}


def from_spec(spec: Mapping[str, Any]) -> ob.Objective:
    """Rebuild an objective from ``objective.spec()``.

    Raises:
        MethodError: unknown ``type`` (with close matches) or a malformed spec.
    """
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise MethodError(f"an objective spec is a dict with a 'type', got {spec!r}")
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    if kind == "sum":
        return ob.Sum([from_spec(t) for t in args.get("terms", [])])
    if kind == "scale":
        return ob.Scaled(from_spec(args["term"]), float(args["factor"]))
    if kind in ob.Binary.OPS:
        a, b = args.get("terms", [None, None])
        return ob.Binary(kind, from_spec(a), from_spec(b))
    if kind not in OBJECTIVES:
        raise MethodError(unknown("objective type", str(kind), list(OBJECTIVES) + ["sum", "scale", "mul", "div"]))
    try:
        return OBJECTIVES[kind](**args)
    except TypeError as exc:
        raise MethodError(f"bad arguments for objective {kind!r}: {exc}") from None
