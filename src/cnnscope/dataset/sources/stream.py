"""Streaming a source through ``DataLoader`` workers (fitted batches, unreadable images skipped and named), and
reading a small source into memory under the same policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...batching import resolve_batch_size, track
from ...errors import ImageError
from ...images import to_float
from ...models import ModelLike, as_model
from .base import ImageSource, SkippedImage, load_or_skip


@dataclass
class Batch:
    """Images of one loader step, fitted to the model's input size.

    Attributes:
        ids: image ids, ``int64 [B]``.
        images: the fitted pictures, ``uint8 [B, H, W, 3]``.
        skipped: :class:`SkippedImage` ``(path, reason)`` of the images of this step that could not be read (the
            first batch also carries the entries the source found unreadable while it was indexed).
    """

    ids: torch.Tensor
    images: np.ndarray
    skipped: list[SkippedImage] = field(default_factory=list)

    def tensor(self, model: ModelLike) -> torch.Tensor:
        """The pictures in the model's input space: ``[B, C, H, W]`` on its device, in its dtype."""
        m = as_model(model)
        return m.to_input(to_float(self.images, device=m.device)).to(m.dtype)


class _Fitted(Dataset):
    """Worker-side dataset: load image ``ids[k]`` and fit it; unreadable images become ``(id, None, reason)``."""

    def __init__(self, source: ImageSource, ids: list[int], fitter) -> None:
        self.source, self.ids, self.fitter = source, ids, fitter

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int):
        i = self.ids[k]
        got = load_or_skip(self.source, i, self.fitter)
        return (i, None, got.reason) if isinstance(got, SkippedImage) else (i, got, None)


class _Collate:
    """Stack the readable images of a step; name the unreadable ones (a class, so workers can pickle it)."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __call__(self, items: list) -> Batch:
        ok = [(i, a) for i, a, _ in items if a is not None]
        skipped = [SkippedImage(self.source.name(i), r) for i, a, r in items if a is None]
        if not ok:
            return Batch(torch.zeros(0, dtype=torch.int64), np.zeros((0, 1, 1, 3), np.uint8), skipped)
        ids = torch.tensor([i for i, _ in ok], dtype=torch.int64)
        return Batch(ids, np.stack([a for _, a in ok]), skipped)


def fitter_of(model: ModelLike) -> object:
    """A light, picklable copy of a model's ``LoadedModel`` that only fits images (for ``DataLoader`` workers)."""
    # no aliases or study layers: they name layers of the model, and an Identity has none
    return dataclasses.replace(as_model(model), module=nn.Identity(), labels=None, extra={}, aliases={},
                               study_layers=[], notes=[])


def iterate_batches(model: ModelLike, source: object, *, batch_size: int | None = None, num_workers: int = 0,
                    progress: bool = False, description: str = "images") -> Iterator[Batch]:
    """Stream a source in batches of pictures fitted to the model's input size.

    Args:
        model: the model whose ``input_size``/``resize_mode`` the images are fitted to (``Batch.tensor`` then
            brings a batch into its input space).
        source: anything :func:`~cnnscope.dataset.sources.open_source` accepts.
        batch_size: images per batch (``None``: a default for the model's device).
        num_workers: ``DataLoader`` worker processes that read and resize images.
        progress: show a tqdm bar.

    Yields:
        :class:`Batch` objects in source order (a batch may be smaller when images were skipped; what the source
        found unreadable while indexing comes with the first batch).
    """
    from . import open_source

    m = as_model(model)
    src = open_source(source)
    size = resolve_batch_size(batch_size, m.device)
    # a generator of its own: a DataLoader otherwise draws its base seed from the global torch RNG
    loader = DataLoader(_Fitted(src, src.ids(), fitter_of(m)), batch_size=size, shuffle=False,
                        num_workers=num_workers, collate_fn=_Collate(src), persistent_workers=False,
                        generator=torch.Generator().manual_seed(0))
    pending = src.problems()
    for batch in track(loader, progress, description, total=len(loader), unit="batch"):
        if pending:
            batch.skipped, pending = pending + batch.skipped, []
        yield batch
    if pending:  # a source with no image to yield
        yield Batch(torch.zeros(0, dtype=torch.int64), np.zeros((0, 1, 1, 3), np.uint8), pending)


@dataclass
class ImageSet:
    """A source's readable images in memory (what :func:`read_images` returns).

    Attributes:
        names: the source's name of each image (a path, ``chelsea``, ``dataset[3]``).
        images: ``uint8 [H, W, 3]`` arrays at their own size, one per name.
        skipped: the images that could not be read (:class:`SkippedImage`).
    """

    names: list[str]
    images: list[np.ndarray]
    skipped: list[SkippedImage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def extend(self, other: ImageSet) -> ImageSet:
        """This set followed by ``other`` (in place; returns ``self``)."""
        self.names += other.names
        self.images += other.images
        self.skipped += other.skipped
        return self


def read_images(spec: object, *, progress: bool = False, allow_empty: bool = False) -> ImageSet:
    """Every readable image of a source, loaded into memory at its own size; unreadable ones are skipped and
    listed (for small sets such as ``evaluate``'s images; passes over many images stream with
    :func:`iterate_batches`).

    Args:
        spec: anything :func:`~cnnscope.dataset.sources.open_source` accepts.
        progress: show a tqdm bar.
        allow_empty: return a set without images (only skipped ones) instead of raising, for callers that
            gather several sources and check the total.

    Raises:
        ImageError: ``spec`` names nothing, or none of its images can be read (the first reason is given).
    """
    from . import open_source

    src = open_source(spec)
    out = ImageSet([], [], src.problems())
    for i in track(src.ids(), progress, "images", total=len(src), unit="image"):
        got = load_or_skip(src, i)
        if isinstance(got, SkippedImage):
            out.skipped.append(got)
        else:
            out.names.append(src.name(i))
            out.images.append(got)
    if not out.images and not allow_empty:
        first = f"; first problem: {out.skipped[0].path}: {out.skipped[0].reason}" if out.skipped else ""
        raise ImageError(f"no readable image in {spec}{first}")
    return out
