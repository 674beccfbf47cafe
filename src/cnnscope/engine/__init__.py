"""Engines: where the pieces of a large job (image shards of a dataset pass, chunks of units to render) run.

An engine maps a picklable function over items, each call getting the model as its first argument:
``engine.map_with_model(model, fn, items)`` yields ``(index, fn(model, items[index]))`` as the calls finish (in any
order). The in-process engine (:class:`LocalEngine`, the default, needs nothing) runs them one after another in
this process; the Ray engine (``"ray"``, the optional extra ``cnnscope[ray]``) runs them on actors that hold the
model, loaded once per worker (docs/scale.md). Results do not depend on the engine: a piece computes the same
numbers wherever it runs, and the caller merges them in item order.
"""

from __future__ import annotations

from .base import Engine, LocalEngine, get_engine

__all__ = ["Engine", "LocalEngine", "get_engine"]
