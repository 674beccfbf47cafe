"""Images per forward pass: the one meaning of ``batch_size``, its device defaults, and chunked iteration.

``batch_size`` is always *images per forward pass* (docs/CONVENTIONS.md). ``None`` picks a default by the
model's device: a CPU runs small batches faster per image (they stay in the caches), a GPU wants large ones.
Each area states its own defaults with :func:`resolve_batch_size`; every loop over a batch uses :func:`chunks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from .errors import CnnscopeError

T = TypeVar("T")

#: images per forward when an area states no default of its own
DEFAULT_CPU = 16
DEFAULT_GPU = 64


def resolve_batch_size(batch_size: int | None, device: torch.device | str, *, cpu: int = DEFAULT_CPU,
                       gpu: int = DEFAULT_GPU) -> int:
    """``batch_size`` when given (checked), else ``cpu`` on a CPU and ``gpu`` on any accelerator.

    Raises:
        CnnscopeError: ``batch_size`` is not a positive int.
    """
    if batch_size is None:
        return cpu if torch.device(device).type == "cpu" else gpu
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnscopeError(f"batch_size is the number of images per forward pass, a positive int; got "
                            f"{batch_size!r}")
    return batch_size


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Slices ``[0, b)``, ``[b, 2b)``, ... covering ``range(n)``."""
    step = max(1, int(batch_size))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def track(items: Iterable[T], progress: bool, desc: str, total: int | None = None, unit: str = "it"
          ) -> Iterable[T]:
    """``items`` wrapped in a tqdm progress bar when ``progress`` is true (library code never prints otherwise)."""
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, leave=False)
