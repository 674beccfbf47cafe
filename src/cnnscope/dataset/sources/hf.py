"""Hugging Face datasets on disk (``hf:PATH``; the optional extra ``hf``: ``pip install 'cnnscope[hf]'``).

``PATH`` is, decided by what is there and never guessed from the images:

- a folder written by ``Dataset.save_to_disk`` (it holds ``state.json``) or one split of a ``DatasetDict``'s
  folder (``hf:PATH/train``); a ``DatasetDict`` folder itself (``dataset_dict.json``) is accepted when it has a
  single split;
- a ``.parquet`` file or a glob of them (``hf:data/train-*.parquet``);
- any other folder: Hugging Face's ``imagefolder`` loader (class subfolders become a ``ClassLabel``; a
  ``metadata.csv``/``metadata.jsonl`` beside the images adds columns).

The image column is the first ``Image`` feature (else a column ``image`` or ``img``), the label the first
``ClassLabel`` feature (its names are the classes, in their order), else a column ``label`` or ``labels``. Images are
decoded here, one row at a time, so an undecodable row is skipped and reported like an unreadable file.
"""

from __future__ import annotations

import glob as globlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...errors import ImageError
from ...images import load_image
from .base import Labelled, class_table, decode_image, file_entry, hash_entries

EXTRA = "pip install 'cnnscope[hf]'"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ImageError(f"hf:PATH sources need the Hugging Face 'datasets' package: {EXTRA}") from None
    return datasets


@contextmanager
def _quiet(datasets):
    """No progress bars from ``datasets`` while a source opens (library code prints nothing)."""
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _open(path: str):
    """``(dataset, files)``: the ``datasets.Dataset`` at ``path`` and the files it is read from."""
    datasets = _datasets()
    p = Path(path).expanduser()
    with _quiet(datasets):
        try:
            if path.endswith(".parquet"):
                files = sorted(globlib.glob(str(p))) if any(c in path for c in "*?[") else [str(p)]
                missing = [f for f in files if not Path(f).is_file()]
                if not files or missing:
                    raise ImageError(f"hf:{path}: no such parquet file" + (f" ({missing[0]})" if missing else ""))
                return datasets.Dataset.from_parquet(files), files
            if not p.is_dir():
                raise ImageError(f"hf:{path}: no such folder or .parquet file")
            files = [str(f) for f in sorted(p.rglob("*")) if f.is_file() and not f.name.endswith(".lock")]
            if (p / "dataset_dict.json").is_file():
                splits = sorted(d.name for d in p.iterdir() if (d / "state.json").is_file())
                if len(splits) != 1:
                    raise ImageError(f"hf:{path} holds the splits {splits}; name one: "
                                     f"hf:{p / (splits or ['SPLIT'])[0]}")
                return datasets.load_from_disk(str(p / splits[0])), files
            if (p / "state.json").is_file():
                return datasets.load_from_disk(str(p)), files
            return datasets.load_dataset("imagefolder", data_dir=str(p), split="train"), files
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever datasets raises for a folder it cannot read
            raise ImageError(f"hf:{path}: cannot open as a Hugging Face dataset ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


class HFSource(Labelled):
    """The images (and labels) of a Hugging Face dataset on disk; see the module docstring for ``path``.

    Raises:
        ImageError: ``datasets`` is missing, ``path`` cannot be opened, or the dataset has no image column.
    """

    kind = "hf"

    def __init__(self, path: str) -> None:
        datasets = _datasets()
        self.path = str(path)
        ds, self.files = _open(self.path)
        feats = ds.features
        image_cols = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
        image_cols += [c for c in ("image", "img") if c in feats and c not in image_cols]
        if not image_cols:
            raise ImageError(f"hf:{path}: no image column (columns: {', '.join(feats)})")
        self.column = image_cols[0]
        label_cols = [c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        label_cols += [c for c in ("label", "labels") if c in feats and c not in label_cols]
        self.label_column = label_cols[0] if label_cols else None
        if isinstance(feats[self.column], datasets.Image):
            ds = ds.cast_column(self.column, datasets.Image(decode=False))
        self.dataset = ds.select_columns([self.column])
        self.classes, self.targets = None, [-1] * len(ds)
        if self.label_column is not None:
            values = list(ds.with_format(None)[self.label_column])
            feat = feats[self.label_column]
            if isinstance(feat, datasets.ClassLabel):
                self.classes = list(feat.names)
                self.targets = [int(v) if v is not None and 0 <= int(v) < len(feat.names) else -1 for v in values]
            else:
                self.classes, self.targets = class_table([None if v is None else str(v) for v in values])
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"hf:{self.path}[{index}]"

    def load(self, index: int) -> np.ndarray:
        item = self.dataset[int(index)][self.column]
        where = self.name(index)
        if isinstance(item, dict):
            if item.get("bytes"):
                return decode_image(item["bytes"], where)
            if item.get("path"):
                return load_image(item["path"])
            raise ImageError(f"{where}: the row holds no image")
        if item is None:
            raise ImageError(f"{where}: the row holds no image")
        return load_image(item)

    def identity(self) -> str:
        """``sha256`` of the files the dataset is read from (resolved paths, sizes, modification times)."""
        if self._identity is None:
            self._identity = hash_entries(file_entry(f) for f in self.files)
        return self._identity

    def describe(self) -> dict:
        return {**super().describe(), "origin": f"hf:{Path(self.path).expanduser().absolute()}",
                "column": self.column, "label_column": self.label_column}
