"""The image-source protocol: indexable images with stable ids, optional class labels, an identity, and the
one policy for unreadable images (skip, record a :class:`SkippedImage`, report)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ...errors import CnnscopeError, ImageError
from ...images import load_image

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


def decode_image(data: bytes, where: str) -> np.ndarray:
    """An encoded picture held in memory (a tar member, a dataset row's bytes) as ``uint8 [H, W, 3]``.

    Raises:
        ImageError: the bytes are no picture, or a damaged one (``where`` names it).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return load_image(img)
    except UnidentifiedImageError:
        raise ImageError(f"{where}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{where}: unreadable image ({exc})") from None


def file_entry(path: str | Path, member: str = "") -> str:
    """One line of an identity: the resolved path (and member), its size and modification time in nanoseconds
    (``-`` for a file that cannot be read)."""
    p = Path(path).expanduser().resolve()
    try:
        st = os.stat(p)
        stamp = f"{st.st_size}\t{st.st_mtime_ns}"
    except OSError:
        stamp = "-\t-"
    return f"{p}{'::' + member if member else ''}\t{stamp}"


def hash_entries(entries: Iterable[str]) -> str:
    """The identity of an image set: ``sha256:`` of its member lines (:func:`file_entry`) **in image-id order**.

    Image ids are positions, so the order is part of what a result refers to: a manifest whose rows were reordered
    (or relabelled: sources add each image's class to its line) is another image set. A folder lists its images
    sorted by path, so its identity is that of the sorted list of its files.
    """
    h = hashlib.sha256()
    for line in entries:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return "sha256:" + h.hexdigest()


class ImageSource(Dataset):
    """Indexable images: ``len(src)``, ``src.name(i)``, ``src.load(i) -> uint8 [H, W, 3]``.

    Image ``i`` always has image id ``i``. Labelled sources list their ``classes`` and give ``label_index(i)``
    (``-1``: no label). ``identity()`` hashes what the images are made of (resolved paths or shard members with
    sizes and modification times); ``None`` where it cannot be known. ``problems()`` lists what was found
    unreadable while indexing (a bad manifest row, a tar member that is no image), before any image is loaded.
    ``load`` raises :class:`~cnnscope.errors.ImageError` for an unreadable image; passes skip it.
    """

    kind = "source"
    #: class names of a labelled source (``None``: no labels)
    classes: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A human-readable name of image ``index`` (a path, ``chelsea#3``, ``dataset[12]``)."""
        return f"image {index}"

    def load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def label_index(self, index: int) -> int:
        """The class index of image ``index`` in :attr:`classes`, ``-1`` when it has none."""
        return -1

    def label(self, index: int) -> str | None:
        """The class name of image ``index``, or ``None``."""
        i = self.label_index(index)
        return None if i < 0 or self.classes is None else self.classes[i]

    def identity(self) -> str | None:
        """A hash of the image set's members, or ``None`` when the source cannot tell (an in-memory dataset)."""
        return None

    def problems(self) -> list[SkippedImage]:
        """Entries found unreadable while indexing the source (they have no image id)."""
        return []

    def __getitem__(self, index: int) -> np.ndarray:
        return self.load(index)

    def describe(self) -> dict:
        """JSON-ready description (stored with statistics results and atlases): kind, size, identity, classes."""
        out: dict = {"kind": self.kind, "images": len(self)}
        ident = self.identity()
        if ident is not None:
            out["identity"] = ident
        if self.classes is not None:
            out["classes"] = len(self.classes)
        return out

    def subset(self, indices: Iterable[int]) -> ImageSource:
        """The images ``indices`` of this source; they keep their ids (so partial results merge)."""
        return Subset(self, list(indices))

    def ids(self) -> list[int]:
        """The image ids this source yields, in order (``range(len)`` except for subsets)."""
        return list(range(len(self)))


class Subset(ImageSource):
    """Some images of another source, keeping the parent's image ids, labels and identity."""

    kind = "subset"

    def __init__(self, parent: ImageSource, indices: Sequence[int]) -> None:
        n = len(parent)
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise CnnscopeError(f"subset indices {bad[:5]} are outside the source's {n} images")
        self.parent, self.indices = parent, [int(i) for i in indices]
        if len(set(self.indices)) != len(self.indices):
            raise CnnscopeError("subset indices repeat an image; statistics need every image once")
        self.classes = parent.classes

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.parent.name(index)

    def load(self, index: int) -> np.ndarray:
        return self.parent.load(index)

    def label_index(self, index: int) -> int:
        return self.parent.label_index(index)

    def ids(self) -> list[int]:
        return list(self.indices)

    def describe(self) -> dict:
        return {"kind": "subset", "images": len(self), "of": self.parent.describe()}


def identity_of(description: dict | None) -> str | None:
    """The identity of the image set behind a source description (a subset's parent's; ``None``: unknown)."""
    while isinstance(description, dict) and "of" in description:
        description = description["of"]
    return description.get("identity") if isinstance(description, dict) else None


class Labelled(ImageSource):
    """A source whose labels are known when it is indexed: ``self.targets`` (class index per image, -1: none)
    into ``self.classes``."""

    targets: list[int]

    def label_index(self, index: int) -> int:
        return int(self.targets[index])


def class_table(labels: Sequence[str | None]) -> tuple[list[str] | None, list[int]]:
    """``(classes, targets)`` for per-image label texts: sorted class names and each image's index (-1: none)."""
    names = sorted({str(lab) for lab in labels if lab is not None and str(lab) != ""})
    if names and all(n.lstrip("-").isdigit() for n in names):  # numeric labels in numeric order
        names.sort(key=int)
    if not names:
        return None, [-1] * len(labels)
    index = {n: i for i, n in enumerate(names)}
    return names, [index[str(lab)] if lab is not None and str(lab) != "" else -1 for lab in labels]
