"""The engine interface and the in-process engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..batching import track
from ..errors import CnnscopeError
from ..models import LoadedModel, ModelLike, as_model

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


class Engine:
    """Runs ``fn(model, item)`` for each item (see the package docstring)."""

    name = "engine"

    def map_with_model(self, model: ModelLike, fn: Callable[[LoadedModel, T], R], items: Sequence[T], *,
                       progress: bool = False, desc: str = "pieces") -> Iterator[tuple[int, R]]:
        raise NotImplementedError

    @property
    def workers(self) -> int:
        """How many pieces run at once."""
        return 1

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.workers}

    def close(self) -> None:
        """Release the engine's workers (a caller that made the engine from its name closes it when done)."""


class LocalEngine(Engine):
    """This process, one piece after another (the default)."""

    name = "local"

    def map_with_model(self, model: ModelLike, fn: Callable[[LoadedModel, T], R], items: Sequence[T], *,
                       progress: bool = False, desc: str = "pieces") -> Iterator[tuple[int, R]]:
        m = as_model(model)
        for i, item in track(enumerate(items), progress, desc, total=len(items)):
            yield i, fn(m, item)


def get_engine(engine: str | Engine | None = None, *, address: str | None = None, workers: int | None = None
               ) -> Engine:
    """An engine by name: ``None``/``"local"`` (in process) or ``"ray"`` (``address``: ``"auto"``, ``HOST:PORT`` or
    ``None`` for a local Ray started here; ``workers``: actors, default one per CPU Ray offers); an
    :class:`Engine` passes through.

    Raises:
        CnnscopeError: an unknown name, or ``"ray"`` without the extra installed.
    """
    if isinstance(engine, Engine):
        return engine
    if engine in (None, "local"):
        if address is not None:
            raise CnnscopeError("address applies to engine='ray' only")
        return LocalEngine()
    if engine == "ray":
        try:
            from .ray_engine import RayEngine
        except ImportError as err:
            raise CnnscopeError(f"engine 'ray' needs Ray: pip install 'cnnscope[ray]' ({err})") from None
        return RayEngine(address=address, workers=workers)
    raise CnnscopeError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
