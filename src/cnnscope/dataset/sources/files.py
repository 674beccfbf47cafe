"""Sources made of image files: a folder, a glob, a list, class folders (ImageFolder layout) and manifests
(CSV / JSON lines with a ``path`` and an optional ``label`` per row)."""

from __future__ import annotations

import csv
import glob as globlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import ImageError
from ...images import IMAGE_SUFFIXES, load_image
from .base import Labelled, SkippedImage, class_table, file_entry, hash_entries

MANIFEST_SUFFIXES = (".csv", ".jsonl")


class FileSource(Labelled):
    """Image files (from a folder, a glob or an explicit list), optionally with a label per file.

    Args:
        paths: the files, in image-id order.
        origin: how they were found (``folder:/abs/path``), for descriptions.
        labels: one class name per file (``None`` entries: no label), or ``None``.
        problems: entries found unreadable while listing the files (see :meth:`ImageSource.problems`).
    """

    kind = "files"

    def __init__(self, paths: Sequence[str | Path], origin: str = "list", labels: Sequence[str | None] | None = None,
                 problems: Sequence[SkippedImage] = ()) -> None:
        self.paths = [str(p) for p in paths]
        # absolute now: a later change of the working directory changes neither the files read nor the identity
        self._absolute = [os.path.abspath(os.path.expanduser(p)) for p in self.paths]
        self.origin = origin
        self.classes, self.targets = class_table(labels) if labels is not None else (None, [-1] * len(self.paths))
        self._problems = list(problems)
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index]

    def load(self, index: int) -> np.ndarray:
        return load_image(self._absolute[index])

    def identity(self) -> str:
        """``sha256`` of the resolved paths in id order with their sizes, modification times and classes (computed
        once)."""
        if self._identity is None:
            labels = [self.classes[t] if self.classes is not None and t >= 0 else "" for t in self.targets]
            self._identity = hash_entries(f"{file_entry(p)}\t{lab}" for p, lab in zip(self._absolute, labels))
        return self._identity

    def problems(self) -> list[SkippedImage]:
        return list(self._problems)

    def describe(self) -> dict:
        return {**super().describe(), "kind": self.kind, "origin": self.origin}


def _images_below(root: Path, recursive: bool = True) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder(path: str | Path, recursive: bool = True) -> FileSource:
    """Every image file (by suffix: png, jpg, bmp, gif, tif, webp, ppm, pgm) below ``path``, sorted."""
    root = Path(path)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder")
    files = _images_below(root, recursive)
    if not files:
        raise ImageError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found"
                         + (" (searched recursively)" if recursive else ""))
    return FileSource(files, origin=f"folder:{root.resolve()}")


def glob_files(pattern: str) -> FileSource:
    """Files matching a glob (``**`` recurses), sorted; non-image suffixes are kept (and reported if unreadable)."""
    files = sorted(p for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise ImageError(f"no files match {pattern!r}")
    return FileSource(files, origin=f"glob:{Path(pattern).expanduser().absolute()}")


def class_folders(path: str | Path) -> FileSource:
    """The ImageFolder layout: every subfolder of ``path`` is a class (its name), holding that class's images
    (searched recursively). Classes are sorted by name, images by path; files directly in ``path`` belong to no
    class and are reported as skipped.

    Raises:
        ImageError: ``path`` is not a folder, has no subfolders, or no image in them.
    """
    root = Path(path)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder (classes:PATH needs a folder with one subfolder per class)")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise ImageError(f"{root}: no class subfolders (classes:PATH needs one subfolder per class)")
    files, labels = [], []
    for d in subdirs:
        found = _images_below(d)
        files += found
        labels += [d.name] * len(found)
    if not files:
        raise ImageError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders")
    loose = [SkippedImage(str(p), "not in a class subfolder") for p in _images_below(root, recursive=False)]
    out = FileSource(files, origin=f"classes:{root.resolve()}", labels=labels, problems=loose)
    out.classes = [d.name for d in subdirs]  # every subfolder is a class, also one without images
    index = {n: i for i, n in enumerate(out.classes)}
    out.targets = [index[lab] for lab in labels]
    return out


def _manifest_rows(path: Path) -> tuple[list[tuple[str, dict]], list[SkippedImage]]:
    """``[(row name, {column: text})]`` of a CSV (with a header) or JSON-lines manifest, and its unreadable rows."""
    rows, bad = [], []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"{path}: unreadable manifest ({exc})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "path" not in [f.strip() for f in reader.fieldnames]:
            raise ImageError(f"{path}: a CSV manifest needs a header row with a 'path' column (and optionally "
                             f"'label'); found {reader.fieldnames}")
        for n, row in enumerate(reader, start=2):
            rows.append((f"{path}:{n}", {str(k).strip(): v for k, v in row.items() if k is not None}))
        return rows, bad
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            bad.append(SkippedImage(f"{path}:{n}", f"not a JSON object ({exc})"))
            continue
        if not isinstance(row, dict):
            bad.append(SkippedImage(f"{path}:{n}", "not a JSON object"))
            continue
        rows.append((f"{path}:{n}", row))
    return rows, bad


def manifest(path: str | Path) -> FileSource:
    """Images listed in a manifest: ``.csv`` with a header row (``path`` column, optional ``label``) or ``.jsonl``
    (one ``{"path": ..., "label": ...}`` object a line). Relative paths are relative to the manifest's folder.
    A row without a path (or, in JSON lines, not an object) is skipped and reported; a listed file that cannot
    be read is skipped when the pass reaches it.

    Raises:
        ImageError: the manifest cannot be read, has no ``path`` column, or lists no image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such manifest file")
    rows, bad = _manifest_rows(path)
    files, labels = [], []
    for where, row in rows:
        value = row.get("path")
        if value is None or not str(value).strip():
            bad.append(SkippedImage(where, "the row has no path"))
            continue
        p = Path(str(value).strip()).expanduser()
        files.append(p if p.is_absolute() else path.parent / p)
        label = row.get("label")
        labels.append(None if label is None or str(label).strip() == "" else str(label).strip())
    if not files:
        raise ImageError(f"{path}: the manifest lists no image" + (f" ({bad[0].path}: {bad[0].reason})" if bad else ""))
    return FileSource(files, origin=f"manifest:{path.resolve()}", labels=labels, problems=bad)
