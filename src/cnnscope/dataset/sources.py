"""Image sources for dataset passes: folders, globs, path lists, ``torch`` datasets and the sample photos.

Every source is indexable: image ``i`` of a source always has the same *image id* ``i``, so statistics can name
their examples by id and fetch the crop later. :func:`iterate_batches` streams a source through ``DataLoader``
workers, fits every image to the model's input size, and skips (and reports) anything unreadable.

Unreadable images follow one policy everywhere (dataset passes, ``evaluate``, atlas builds): the image is skipped,
its path and the reason are recorded as a :class:`SkippedImage`, the results carry the list (``skipped``, as
``{path, reason}`` in JSON) and the commands print it on stderr (:func:`skipped_lines`). Only when nothing at all
can be read is it an error. :func:`read_images` loads a whole (small) source into memory under that policy.

Example:
    >>> src = open_source("photos/")            # every image below photos/, recursively
    >>> src = open_source("samples:4")          # skimage photos, 4 random crops/flips each
    >>> for batch in iterate_batches(model, src, batch_size=16):
    ...     x = batch.tensor(model)              # model-space [B, C, H, W] on the model's device
"""

from __future__ import annotations

import dataclasses
import glob as globlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..batching import resolve_batch_size, track
from ..errors import CnnscopeError, ImageError
from ..images import IMAGE_SUFFIXES, SAMPLE_NAMES, load_image, sample_images, to_float
from ..models import ModelLike, as_model

GLOB_CHARS = "*?["
MAX_REPORTED = 100
#: skipped images a command lists on stderr before summing up the rest
SHOWN_SKIPPED = 5


class SkippedImage(NamedTuple):
    """An image a pass could not read: its ``path`` (the source's name for it) and the ``reason``."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def unreadable_reason(exc: BaseException) -> str:
    """The one-line reason recorded for an image that raised ``exc`` while loading."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, ImageError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def load_or_skip(source: ImageSource, index: int, fit: object = None) -> np.ndarray | SkippedImage:
    """Image ``index`` of ``source`` (fitted with ``fit.fit_image`` when given), or the :class:`SkippedImage`
    that says why it cannot be read. Interrupts (Ctrl-C) and out-of-memory errors propagate."""
    try:
        arr = source.load(index)
        return fit.fit_image(arr) if fit is not None else arr  # type: ignore[attr-defined]
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable image is reported, never fatal
        return SkippedImage(source.name(index), unreadable_reason(exc))


def as_skipped(item: tuple[str, str] | dict) -> SkippedImage:
    """A :class:`SkippedImage` from a ``(path, reason)`` pair or a ``{"path", "reason"}`` dict (as in JSON)."""
    return SkippedImage(**item) if isinstance(item, dict) else SkippedImage(*item)


def skipped_dicts(skipped: Iterable[tuple[str, str] | dict]) -> list[dict[str, str]]:
    """``[{"path": ..., "reason": ...}]``: skipped images as results' JSON lists them."""
    return [as_skipped(s).to_dict() for s in skipped]


def skipped_lines(skipped: Sequence[tuple[str, str] | dict], total: int | None = None, shown: int = SHOWN_SKIPPED
                  ) -> list[str]:
    """The lines a command prints on stderr about skipped images (pairs or dicts, see :func:`as_skipped`): the
    first ``shown`` with their reasons, then how many more (``total``: the number skipped in all, when more were
    skipped than listed)."""
    n = len(skipped) if total is None else int(total)
    lines = [f"skipped {s.path}: {s.reason}" for s in map(as_skipped, list(skipped)[:shown])]
    if n > len(lines):
        lines.append(f"... and {n - len(lines)} more unreadable images")
    return lines


class ImageSource(Dataset):
    """Indexable images: ``len(src)``, ``src.name(i)``, ``src.load(i) -> uint8 [H, W, 3]``.

    ``load`` raises :class:`~cnnscope.errors.ImageError` for an unreadable image; passes skip it.
    """

    kind = "source"

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A human-readable name of image ``index`` (a path, ``chelsea#3``, ``dataset[12]``)."""
        return f"image {index}"

    def load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        return self.load(index)

    def describe(self) -> dict:
        """JSON-ready description (stored with statistics results)."""
        return {"kind": self.kind, "images": len(self)}

    def subset(self, indices: Iterable[int]) -> ImageSource:
        """The images ``indices`` of this source; they keep their ids (so partial results merge)."""
        return Subset(self, list(indices))

    def ids(self) -> list[int]:
        """The image ids this source yields, in order (``range(len)`` except for subsets)."""
        return list(range(len(self)))


class Subset(ImageSource):
    """Some images of another source, keeping the parent's image ids."""

    kind = "subset"

    def __init__(self, parent: ImageSource, indices: Sequence[int]) -> None:
        n = len(parent)
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise CnnscopeError(f"subset indices {bad[:5]} are outside the source's {n} images")
        self.parent, self.indices = parent, [int(i) for i in indices]
        if len(set(self.indices)) != len(self.indices):
            raise CnnscopeError("subset indices repeat an image; statistics need every image once")

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.parent.name(index)

    def load(self, index: int) -> np.ndarray:
        return self.parent.load(index)

    def ids(self) -> list[int]:
        return list(self.indices)

    def describe(self) -> dict:
        return {"kind": "subset", "images": len(self), "of": self.parent.describe()}


class FileSource(ImageSource):
    """Image files (from a folder, a glob or an explicit list)."""

    kind = "files"

    def __init__(self, paths: Sequence[str | Path], origin: str = "list") -> None:
        self.paths = [str(p) for p in paths]
        self.origin = origin

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index]

    def load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])

    def describe(self) -> dict:
        return {"kind": "files", "images": len(self), "origin": self.origin}


class DatasetSource(ImageSource):
    """A ``torch.utils.data.Dataset`` whose items are images or ``(image, ...)`` tuples / ``{"image": ...}``.

    Images may be PIL images, ``uint8``/float arrays or tensors (``CHW`` or ``HWC``, floats in [0, 1]).
    """

    kind = "dataset"

    def __init__(self, dataset: Dataset, name: str | None = None) -> None:
        self.dataset = dataset
        self.label = name or type(dataset).__name__

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def name(self, index: int) -> str:
        return f"{self.label}[{index}]"

    def load(self, index: int) -> np.ndarray:
        item = self.dataset[index]
        if isinstance(item, dict):
            item = item.get("image", item.get("img"))
        elif isinstance(item, (tuple, list)):
            item = item[0] if item else None
        if item is None:
            raise ImageError(f"{self.name(index)}: the item holds no image")
        return load_image(item)

    def describe(self) -> dict:
        return {"kind": "dataset", "images": len(self), "dataset": self.label}


class SampleSource(ImageSource):
    """The photos shipped with scikit-image, optionally as ``crops`` random square crops/flips per photo.

    Crop ``r`` of photo ``p`` (image id ``p * crops + r``) is drawn from a ``torch.Generator`` seeded with
    ``(seed, id)``, so the same id always gives the same pixels.
    """

    kind = "samples"

    def __init__(self, names: Sequence[str] | None = None, crops: int = 0, seed: int = 0,
                 scale: tuple[float, float] = (0.3, 1.0)) -> None:
        self.names = list(names or SAMPLE_NAMES)
        if crops < 0:
            raise CnnscopeError(f"crops must be >= 0, got {crops}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise CnnscopeError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
        unknown_names = [n for n in self.names if n not in SAMPLE_NAMES]
        if unknown_names:
            sample_images(unknown_names)  # raises ImageError with close matches
        self.crops, self.seed, self.scale = crops, seed, scale
        self._photos: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.names) * max(1, self.crops)

    def _split(self, index: int) -> tuple[str, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        per = max(1, self.crops)
        return self.names[index // per], index % per

    def name(self, index: int) -> str:
        photo, r = self._split(index)
        return photo if self.crops == 0 else f"{photo}#{r}"

    def load(self, index: int) -> np.ndarray:
        if self._photos is None:
            self._photos = sample_images(self.names)
        photo, _ = self._split(index)
        arr = self._photos[photo]
        if self.crops == 0:
            return arr
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        h, w = arr.shape[:2]
        u = torch.rand(4, generator=gen).tolist()
        side = max(8, int(round(min(h, w) * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0]))))
        top, left = int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1))
        crop = arr[top:top + side, left:left + side]
        return np.ascontiguousarray(crop[:, ::-1] if u[3] < 0.5 else crop)

    def describe(self) -> dict:
        return {"kind": "samples", "images": len(self), "photos": self.names, "crops": self.crops,
                "seed": self.seed}

    def __getstate__(self) -> dict:  # workers reload the photos themselves
        return {**self.__dict__, "_photos": None}


def folder(path: str | Path, recursive: bool = True) -> FileSource:
    """Every image file (by suffix: png, jpg, bmp, gif, tif, webp, ppm, pgm) below ``path``, sorted."""
    root = Path(path)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found"
                         + (" (searched recursively)" if recursive else ""))
    return FileSource(files, origin=f"folder:{root}")


def glob_files(pattern: str) -> FileSource:
    """Files matching a glob (``**`` recurses), sorted; non-image suffixes are kept (and reported if unreadable)."""
    files = sorted(p for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise ImageError(f"no files match {pattern!r}")
    return FileSource(files, origin=f"glob:{pattern}")


def open_source(spec: object, *, crops: int | None = None, seed: int = 0) -> ImageSource:
    """Turn what a user gave into an :class:`ImageSource`.

    Args:
        spec: an ``ImageSource``; a ``torch`` ``Dataset``; a folder (searched recursively); a glob
            (``"data/**/*.jpg"``); one image file; a list of paths; ``"samples"`` (the skimage photos),
            ``"samples:N"`` (N random crops/flips per photo) or ``"sample:chelsea,coffee"``.
        crops: random crops per photo for the sample set (overrides ``samples:N``).
        seed: seed of the sample crops.

    Raises:
        ImageError: nothing readable can be found there.
    """
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, Dataset):
        return DatasetSource(spec)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ImageError("empty list of images")
        return FileSource(list(spec))  # type: ignore[arg-type]
    if not isinstance(spec, (str, Path)):
        raise ImageError(f"cannot read images from an object of type {type(spec).__name__}; give a folder, a glob, "
                         "a list of paths, a torch Dataset or 'samples'")
    text = str(spec)
    if text == "samples" or text.startswith("samples:"):
        n = int(text.split(":", 1)[1]) if ":" in text else 0
        return SampleSource(crops=n if crops is None else crops, seed=seed)
    if text.startswith("sample:"):
        return SampleSource(names=text.split(":", 1)[1].split(","), crops=crops or 0, seed=seed)
    path = Path(text)
    if path.is_dir():
        return folder(path)
    if path.is_file():
        return FileSource([path], origin=f"file:{path}")
    if any(ch in text for ch in GLOB_CHARS):
        return glob_files(text)
    raise ImageError(f"{text}: no such file or folder (give a folder, a glob, an image file or 'samples')")


# -- streaming -----------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Images of one loader step, fitted to the model's input size.

    Attributes:
        ids: image ids, ``int64 [B]``.
        images: the fitted pictures, ``uint8 [B, H, W, 3]``.
        skipped: :class:`SkippedImage` ``(path, reason)`` of the images of this step that could not be read.
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
    return dataclasses.replace(as_model(model), module=nn.Identity(), labels=None, extra={})


def iterate_batches(model: ModelLike, source: object, *, batch_size: int | None = None, num_workers: int = 0,
                    progress: bool = False, description: str = "images") -> Iterator[Batch]:
    """Stream a source in batches of pictures fitted to the model's input size.

    Args:
        model: the model whose ``input_size``/``resize_mode`` the images are fitted to (``Batch.tensor`` then
            brings a batch into its input space).
        source: anything :func:`open_source` accepts.
        batch_size: images per batch (``None``: a default for the model's device).
        num_workers: ``DataLoader`` worker processes that read and resize images.
        progress: show a tqdm bar.

    Yields:
        :class:`Batch` objects in source order (a batch may be smaller when images were skipped).
    """
    m = as_model(model)
    src = open_source(source)
    size = resolve_batch_size(batch_size, m.device)
    # a generator of its own: a DataLoader otherwise draws its base seed from the global torch RNG
    loader = DataLoader(_Fitted(src, src.ids(), fitter_of(m)), batch_size=size, shuffle=False,
                        num_workers=num_workers, collate_fn=_Collate(src), persistent_workers=False,
                        generator=torch.Generator().manual_seed(0))
    yield from track(loader, progress, description, total=len(loader), unit="batch")


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
        spec: anything :func:`open_source` accepts.
        progress: show a tqdm bar.
        allow_empty: return a set without images (only skipped ones) instead of raising, for callers that
            gather several sources and check the total.

    Raises:
        ImageError: ``spec`` names nothing, or none of its images can be read (the first reason is given).
    """
    src = open_source(spec)
    out = ImageSet([], [], [])
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
