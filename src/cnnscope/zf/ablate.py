"""Architecture ablations (Zeiler & Fergus 2013, Sec. 5.1, Table 2): remove or resize layers, retrain each variant
with the same seed, split and budget, and compare train and test errors.

A variant is one or several changes of :meth:`~cnnscope.zf.architecture.NetSpec.variant` joined by ``+``
(``"drop:conv3"``, ``"width:conv2=128+drop:fc1"``); the first row is always the base network. Every variant is
trained by :func:`~cnnscope.zf.train.train` on the same data set with the same seed, so every row sees the same
train/test split (the split is the seed's first draw) and the same number of epochs.

Example:
    >>> table = ablate("digits", ["drop:conv3", "width:conv2=8"], base=NetSpec(widths=(8, 16, 32)), epochs=3)
    >>> [(r.variant, r.test_error) for r in table.rows]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import CnnscopeError
from .architecture import NetSpec
from .train import evaluate_split, get_dataset, train


@dataclass
class AblationRow:
    """One trained variant: its spelling, architecture, parameter count, final errors and per-epoch history."""

    variant: str
    spec: NetSpec
    params: int
    train_error: float
    test_error: float
    history: list[dict]

    def to_dict(self) -> dict:
        return {"variant": self.variant, "architecture": self.spec.describe(), "spec": self.spec.to_dict(),
                "params": self.params, "train_error": self.train_error, "test_error": self.test_error,
                "history": self.history}


@dataclass
class Ablation:
    """The rows of an ablation (the base network first) and the shared training settings."""

    rows: list[AblationRow]
    data: str
    settings: dict

    def to_dict(self) -> dict:
        return {"data": self.data, "settings": self.settings, "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> tuple[list[tuple], tuple[str, ...]]:
        """``(rows, header)`` for printing: variant, architecture, parameters, train and test error."""
        return ([(r.variant, r.spec.describe(), f"{r.params:,}", f"{r.train_error:.2%}", f"{r.test_error:.2%}")
                 for r in self.rows], ("variant", "architecture", "params", "train error", "test error"))


def variant_spec(base: NetSpec, text: str) -> NetSpec:
    """``base`` with the ``+``-joined changes of ``text`` applied in order (``"base"`` or ``""``: unchanged)."""
    spec = base
    for part in (p.strip() for p in text.split("+")):
        if part and part != "base":
            spec = spec.variant(part)
    return spec


def ablate(data: object, variants: Sequence[str], *, base: NetSpec | None = None, epochs: int = 5,
           batch_size: int = 32, lr: float = 3e-3, test_fraction: float = 0.2, size: int | None = None,
           seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
           on_row: Callable[[AblationRow], None] | None = None) -> Ablation:
    """Train the base network and every variant with the same seed and budget; their errors as a table.

    Args:
        data: a labelled data set (see :func:`~cnnscope.zf.train.get_dataset`): loaded once, shared by every row.
        variants: changes of the base network (module docstring); the base itself is always the first row.
        base: the network the variants change (default: the small digits network).
        epochs, batch_size, lr, test_fraction, seed, device, progress: as :func:`~cnnscope.zf.train.train`,
            identical for every row.
        size: image side (default: ``base.input_size``, else 32 for digits, 64 for other sources).
        on_row: called with each row once it is trained.

    Raises:
        CnnscopeError: a variant that does not fit the base network (checked before any training).
    """
    base = base or NetSpec()
    specs = [("base", base)] + [(v, variant_spec(base, v)) for v in variants]
    seen: dict[str, str] = {}
    for name, _ in specs:
        if name in seen:
            raise CnnscopeError(f"variant {name!r} is given twice")
        seen[name] = name
    ds = get_dataset(data, size or base.input_size)
    rows = []
    for name, spec in specs:
        r = train(ds, spec=spec, epochs=epochs, batch_size=batch_size, lr=lr, test_fraction=test_fraction,
                  seed=seed, device=device, progress=progress)
        train_acc, _ = evaluate_split(r.model, ds.images[r.train_indices], ds.labels[r.train_indices])
        params = sum(p.numel() for p in r.model.module.parameters())
        row = AblationRow(name, spec, params, 1.0 - train_acc, 1.0 - r.history[-1]["test_accuracy"], r.history)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "test_fraction": test_fraction, "seed": seed,
                "images": len(ds), "classes": ds.classes}
    return Ablation(rows, ds.name, settings)
