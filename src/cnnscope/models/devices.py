"""``resolve_device``: a device spelling checked before anything is built, so a missing GPU costs no loading time."""

from __future__ import annotations

import re

import torch

from ..errors import ModelError

#: what ``device=`` / ``--device`` accept, as said in every error
DEVICE_SPELLINGS = "cpu, cuda, cuda:N, mps or auto"

_SPELLING = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The ``torch.device`` for ``device``, checked to exist on this machine.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` (the first CUDA GPU when there is one,
            else the CPU), ``None`` (the CPU) or a ``torch.device``.

    Raises:
        ModelError: an unknown spelling (listing the valid ones), or a CUDA/MPS device this machine does not have.
    """
    if device is None:
        return torch.device("cpu")
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if _cuda_count() else "cpu")
    match = _SPELLING.match(text)
    if match is None:
        raise ModelError(f"unknown device {str(device)!r}; use {DEVICE_SPELLINGS}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        count = _cuda_count()
        if count == 0:
            raise ModelError(f"device {text!r} is not available: PyTorch finds no CUDA GPU on this machine; "
                             "use device 'cpu' (or 'auto', which picks a GPU only when there is one)")
        if index is not None and int(index) >= count:
            raise ModelError(f"device {text!r} does not exist: this machine has {count} CUDA GPU"
                             f"{'s' if count > 1 else ''} (cuda:0" + (f" to cuda:{count - 1})" if count > 1 else ")"))
    if kind == "mps" and not _mps_available():
        raise ModelError(f"device {text!r} is not available: PyTorch finds no Apple MPS GPU on this machine; use "
                         "device 'cpu'")
    return torch.device(text)
