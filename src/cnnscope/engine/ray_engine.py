"""The Ray engine: pieces of a job run on Ray actors that hold the model (the optional extra ``cnnscope[ray]``).

The driver serialises the model once per call (``torch.save`` of the ``LoadedModel``, the bytes put in Ray's
object store); each actor loads it once, with its first piece, onto its own device (``map_location``: the CPU,
or the GPU Ray gave the actor) and runs ``threads`` torch threads. Pieces go to free actors, one at a time per
actor, and results are yielded as they finish. Actors are kept between calls with the same model bytes (a
changed model gets new ones).

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and its task is run again
(``max_task_retries``); pieces are pure functions of ``(model, item)``, so a retried piece gives the same result.
See docs/scale.md.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from ..batching import track
from ..errors import CnnscopeError
from ..models import LoadedModel, ModelLike, as_model
from .base import Engine

try:
    import ray
except ImportError as _err:  # get_engine turns this into one line naming the extra
    raise ImportError(f"ray is not installed ({_err})") from None

T = TypeVar("T")
R = TypeVar("R")

#: how often Ray restarts a dead actor and reruns the task it held
RETRIES = 3


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def connect(address: str | None, workers: int | None = None, threads: int = 1) -> None:
    """``ray.init`` unless Ray is already initialised: a local Ray started here (``address=None``, with
    ``workers * threads`` CPUs, default every CPU) or the cluster at ``address`` (``"auto"``, ``HOST:PORT``).

    Raises:
        CnnscopeError: the cluster cannot be reached or Ray cannot start.
    """
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        kwargs["num_cpus"] = workers * threads if workers else (os.cpu_count() or 1)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        hint = ("start one with `ray start --head` and pass its address (or 'auto' on a cluster node)" if address
                else "check that this machine can run Ray (`ray start --head`)")
        raise CnnscopeError(f"cannot start or reach {where} ({_first_line(err)}); {hint}") from None


def model_bytes(m: LoadedModel) -> bytes:
    """The ``LoadedModel`` serialised for the workers (tensors are stored device-independently).

    Raises:
        CnnscopeError: the model cannot be serialised (a TorchScript module, a lambda inside the module).
    """
    import cloudpickle

    buf = io.BytesIO()
    try:
        torch.save(m, buf, pickle_module=cloudpickle)
    except Exception as err:  # noqa: BLE001 - pickling raises many kinds
        raise CnnscopeError(f"model {m.name!r} cannot be sent to Ray workers ({_first_line(err)}); use the local "
                            "engine (engine='local')") from None
    return buf.getvalue()


@ray.remote
class _Holder:
    """One worker: loads the model the first time a piece of it arrives (again after a restart), then runs
    pieces. The model travels as a reference inside a list, so Ray does not resolve it for every piece."""

    def __init__(self, threads: int) -> None:
        torch.set_num_threads(threads)
        gpus = ray.get_gpu_ids()
        self.device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")
        self.key: str | None = None
        self.model: LoadedModel | None = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, fn: Callable, item: Any, key: str, blob: list) -> Any:
        if key != self.key:
            self.model = torch.load(io.BytesIO(ray.get(blob[0])), map_location=self.device, weights_only=False)
            self.key = key
        return fn(self.model, item)


class RayEngine(Engine):
    """Pieces on Ray actors that load the model once per worker (see the module docstring).

    Args:
        address: ``None`` (a local Ray started here unless one is already initialised), ``"auto"`` (the cluster
            this machine belongs to) or ``"HOST:PORT"``.
        workers: actors (default: the CPUs Ray offers divided by ``threads``; with a CUDA model, the GPUs).
        threads: torch threads per actor (default one: processes scale better than threads on small batches).

    Raises:
        CnnscopeError: Ray cannot be reached; ``workers``/``threads`` not positive.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, *, threads: int = 1) -> None:
        for what, v in (("workers", workers), ("threads", threads)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise CnnscopeError(f"{what} must be a positive int, got {v!r}")
        connect(address, workers, threads)
        self.address, self.threads, self._workers = address, threads, workers
        self._actors: list[Any] = []
        self._key: str | None = None
        self._blob: Any = None

    @property
    def workers(self) -> int:
        if self._workers is not None:
            return self._workers
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)

    def _gpu_workers(self, m: LoadedModel) -> bool:
        return m.device.type == "cuda" and ray.cluster_resources().get("GPU", 0) >= 1

    def actors(self, model: ModelLike) -> list[Any]:
        """The actors holding ``model`` (started on first use; kept while the model's bytes stay the same)."""
        m = as_model(model)
        blob = model_bytes(m)
        key = hashlib.sha256(blob).hexdigest()
        if key != self._key:
            self.close()
            gpu = self._gpu_workers(m)
            n = self._workers or (int(ray.cluster_resources().get("GPU", 1)) if gpu else self.workers)
            options: dict[str, Any] = {"num_cpus": self.threads, "num_gpus": 1 if gpu else 0,
                                       "max_restarts": RETRIES, "max_task_retries": RETRIES}
            self._blob = ray.put(blob)
            self._actors = [_Holder.options(**options).remote(self.threads) for _ in range(n)]
            self._key = key
        return self._actors

    def pids(self) -> list[int]:
        """Process ids of the current actors (for fault tests and monitoring)."""
        return ray.get([a.pid.remote() for a in self._actors])

    def map_with_model(self, model: ModelLike, fn: Callable[[LoadedModel, T], R], items: Sequence[T], *,
                       progress: bool = False, desc: str = "pieces") -> Iterator[tuple[int, R]]:
        actors = self.actors(model)
        todo = list(range(len(items)))[::-1]
        running: dict[Any, tuple[int, Any]] = {}
        free = list(actors)

        def results() -> Iterator[tuple[int, R]]:
            while todo or running:
                while todo and free:
                    i, actor = todo.pop(), free.pop()
                    running[actor.run.remote(fn, items[i], self._key, [self._blob])] = (i, actor)
                done, _ = ray.wait(list(running), num_returns=1)
                i, actor = running.pop(done[0])
                free.append(actor)
                try:
                    value = ray.get(done[0])
                except ray.exceptions.RayTaskError as err:  # the piece itself raised: re-raise its error
                    cause = getattr(err, "cause", None)
                    raise (cause if isinstance(cause, CnnscopeError) else err.as_instanceof_cause()) from None
                except ray.exceptions.RayError as err:
                    raise CnnscopeError(f"piece {i} failed on the Ray cluster after {RETRIES} retries "
                                        f"({_first_line(err)})") from None
                yield i, value

        yield from track(results(), progress, desc, total=len(items))

    def close(self) -> None:
        """End the actors (Ray itself stays up)."""
        for a in self._actors:
            ray.kill(a)
        self._actors, self._key, self._blob = [], None, None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "address": self.address, "threads": self.threads}


__all__ = ["RayEngine", "connect", "model_bytes"]
