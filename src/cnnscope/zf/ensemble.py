"""Ensembles of classifiers (Zeiler & Fergus 2013, Sec. 5.1: averaging the softmax of several models): the mean of
the members' class probabilities, and the top-1 accuracy of members and ensemble on a labelled data set.

Every member reads the pictures with its own preprocessing (input size, normalisation), so checkpoints trained at
other sizes can be combined; the members must agree on the classes: the same number of outputs and, where they have
labels, the same labels in the same order.

Example:
    >>> probs = ensemble_probabilities([load_model("a.pt"), load_model("b.pt")], ["cat.jpg"])   # [1, classes]
    >>> ensemble_accuracy([m1, m2, m3], "classes:val/").ensemble
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size
from ..capture import evaluating
from ..errors import CnnscopeError, ImageError, ModelError
from ..models import ModelLike, as_model


def _members(models: Sequence[ModelLike]) -> list:
    if not models:
        raise ModelError("an ensemble needs at least one model")
    ms = [as_model(m) for m in models]
    labelled = [m for m in ms if m.labels is not None]
    if labelled and len(labelled) != len(ms):  # an unlabelled member's outputs cannot be aligned by class
        names = ", ".join(m.name for m in ms if m.labels is None)
        raise ModelError(f"the ensemble mixes models with class labels and models without ({names}): their outputs "
                         "cannot be aligned by class; give every member labels (or none)")
    if labelled and any(list(m.labels) != list(labelled[0].labels) for m in labelled[1:]):  # type: ignore[arg-type]
        names = ", ".join(m.name for m in labelled)
        raise ModelError(f"the ensemble's members ({names}) have different class labels; average only models of "
                         "the same classes")
    return ms


def _probabilities(m, images: object, batch_size: int | None) -> torch.Tensor:
    x = m.batch(images)
    out = []
    with torch.no_grad(), evaluating(m.module):
        for sl in chunks(len(x), resolve_batch_size(batch_size, m.device)):
            logits = m.module(x[sl])
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ModelError(f"model {m.name!r} does not return [B, classes] logits")
            out.append(logits.to(torch.float64).softmax(1).cpu())
    return torch.cat(out)


def member_probabilities(models: Sequence[ModelLike], images: object, *, batch_size: int | None = None
                         ) -> torch.Tensor:
    """Each member's softmax for each image, float64 on the CPU.

    Shape:
        - Output: ``[members, B, classes]``.

    Raises:
        ModelError: no models, members with different class counts or labels.
    """
    ms = _members(models)
    probs = [_probabilities(m, images, batch_size) for m in ms]
    counts = {p.shape[1] for p in probs}
    if len(counts) > 1:
        raise ModelError(f"the ensemble's members have different class counts {sorted(counts)}")
    return torch.stack(probs)


def ensemble_probabilities(models: Sequence[ModelLike], images: object, *, batch_size: int | None = None
                           ) -> torch.Tensor:
    """The ensemble's class probabilities: the mean of the members' softmax (float64, CPU, ``[B, classes]``)."""
    return member_probabilities(models, images, batch_size=batch_size).mean(0)


def top_classes(model: ModelLike, probabilities: torch.Tensor, k: int) -> list[list[tuple[int, str, float]]]:
    """Top-``k`` ``(index, label, probability)`` per row of ``probabilities``, labels from ``model``."""
    m = as_model(model)
    top = probabilities.topk(min(int(k), probabilities.shape[1]), dim=1)
    return [[(int(i), m.label(int(i)), float(p)) for p, i in zip(ps, idx)]
            for ps, idx in zip(top.values, top.indices)]


@dataclass
class EnsembleAccuracy:
    """Top-1 accuracy of each member and of the ensemble on ``images`` labelled images (``skipped``: the
    unreadable ones of a streamed source, left out)."""

    members: list[str]
    member_accuracy: list[float]
    ensemble: float
    images: int
    skipped: list = field(default_factory=list)

    def to_dict(self) -> dict:
        from ..dataset.sources import skipped_dicts

        return {"members": [{"model": n, "accuracy": a} for n, a in zip(self.members, self.member_accuracy)],
                "ensemble": self.ensemble, "images": self.images, "skipped": skipped_dicts(self.skipped)}

    def table(self) -> tuple[list[tuple], tuple[str, ...]]:
        rows = [(n, f"{a:.2%}", f"{1 - a:.2%}") for n, a in zip(self.members, self.member_accuracy)]
        if len(self.members) > 1:
            rows.append((f"ensemble of {len(self.members)}", f"{self.ensemble:.2%}", f"{1 - self.ensemble:.2%}"))
        return rows, ("model", "accuracy", "error")


def _targets(m, classes: list[str], labels: np.ndarray) -> np.ndarray:
    """The data set's labels as output indices of model ``m`` (by class name where the model has labels)."""
    if m.labels is None:
        return labels
    index = {str(lab): i for i, lab in enumerate(m.labels)}
    missing = [c for c in classes if c not in index]
    if missing:
        raise ModelError(f"classes {missing[:5]} of the data set are not classes of {m.name} "
                         f"(its labels: {', '.join(map(str, list(m.labels)[:8]))}...)")
    return np.asarray([index[classes[int(i)]] for i in labels], np.int64)


def ensemble_accuracy(models: Sequence[ModelLike], data: object, *, batch_size: int | None = None,
                      num_workers: int = 0, progress: bool = False) -> EnsembleAccuracy:
    """Top-1 accuracy of each model and of their softmax average on a labelled data set.

    Args:
        models: the members.
        data: ``"digits"``, ``samples:N`` or an :class:`~cnnscope.zf.train.ImageDataset` (in memory); or a
            labelled source, streamed through :func:`~cnnscope.dataset.sources.iterate_batches` once per member
            (so large sets such as an ImageNet validation folder work): a folder with one sub-folder per class,
            ``classes:FOLDER``, a manifest with labels, labelled shards, ``hf:PATH`` or a torch dataset. Images
            without a label, and unreadable ones (the same for every member), are left out.
        batch_size: images per forward.
        num_workers: ``DataLoader`` workers that read a streamed source.
        progress: progress bars.

    Raises:
        ModelError: the members disagree on the classes, or the data set's classes are not the models'.
        ImageError: the source has no labels.
    """
    from .train import ImageDataset, get_dataset

    ms = _members(models)
    text = str(data) if isinstance(data, (str, Path)) else None
    if isinstance(data, ImageDataset) or text == "digits" or (text or "").startswith("samples"):
        ds = get_dataset(data, max(ms[0].input_size))
        targets = torch.as_tensor(_targets(ms[0], ds.classes, ds.labels))
        probs = member_probabilities(ms, ds.images, batch_size=batch_size)
        _check_outputs(ms[0], probs.shape[2], ds.classes)
        accs = [float((p.argmax(1) == targets).double().mean()) for p in probs]
        ens = float((probs.mean(0).argmax(1) == targets).double().mean())
        return EnsembleAccuracy([m.name for m in ms], accs, ens, len(targets))
    return _streamed(ms, data, batch_size, num_workers, progress)


def _check_outputs(m, outputs: int, classes: list[str]) -> None:
    if m.labels is None and outputs != len(classes):
        raise CnnscopeError(f"the models have {outputs} outputs and no labels, the data set {len(classes)} classes; "
                            "cannot match them")


def _streamed(ms: list, data: object, batch_size: int | None, num_workers: int, progress: bool
              ) -> EnsembleAccuracy:
    """:func:`ensemble_accuracy` over a source read batch by batch (one pass per member)."""
    from ..dataset.sources import class_folders, iterate_batches, open_source

    src = class_folders(data) if isinstance(data, (str, Path)) and Path(data).is_dir() else open_source(data)
    if src.classes is None:
        raise ImageError(f"{data}: this source has no labels; give class folders, a manifest with a label column "
                         "or labelled shards")
    classes = list(src.classes)
    to_output = _targets(ms[0], classes, np.arange(len(classes)))
    total: torch.Tensor | None = None
    ids: list[int] | None = None
    correct: list[int] = []
    skipped: list = []
    for n, m in enumerate(ms):
        seen, hits, chunks_ = [], 0, []
        with torch.no_grad(), evaluating(m.module):
            for batch in iterate_batches(m, src, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                         description=m.name):
                if n == 0:
                    skipped += batch.skipped
                labelled = [k for k, i in enumerate(batch.ids.tolist()) if src.label_index(i) >= 0]
                if not labelled:
                    continue
                x = batch.tensor(m)[labelled]
                p = m.module(x).to(torch.float64).softmax(1).cpu()
                _check_outputs(m, p.shape[1], classes)
                batch_ids = [int(batch.ids[k]) for k in labelled]
                y = torch.as_tensor([int(to_output[src.label_index(i)]) for i in batch_ids])
                hits += int((p.argmax(1) == y).sum())
                seen += batch_ids
                chunks_.append(p)
        if not seen:
            raise ImageError(f"{data}: no readable labelled image")
        probs = torch.cat(chunks_)
        if ids is None:
            ids, total = seen, probs
        elif seen != ids or probs.shape != total.shape:  # type: ignore[union-attr]
            raise ModelError(f"the ensemble's members do not give one answer per image of {data} (different class "
                             "counts, or images readable for one member only)")
        else:
            total = total + probs  # type: ignore[operator]
        correct.append(hits)
    y_all = torch.as_tensor([int(to_output[src.label_index(i)]) for i in ids])  # type: ignore[union-attr]
    ens = float((total.argmax(1) == y_all).double().mean())  # type: ignore[union-attr]
    return EnsembleAccuracy([m.name for m in ms], [c / len(y_all) for c in correct], ens, len(y_all), skipped)
