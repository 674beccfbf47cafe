"""The same labelled photos written as class folders, a CSV and a JSON-lines manifest, two WebDataset shards and a
saved Hugging Face dataset (built in a temporary folder from the skimage sample photos)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cnnscope.images import resize, sample_images

#: photo -> class; the class-folder order (class, then file name) is the order every layout lists them in
PHOTOS = {"chelsea": "cat", "coffee": "cup", "astronaut": "person", "rocket": "space", "hubble_deep_field": "space",
          "motorcycle_left": "vehicle"}
SIZE = (40, 56)


def labelled_photos() -> list[tuple[str, str, np.ndarray]]:
    """``[(file stem, class, uint8 image)]`` in class-folder order."""
    photos = sample_images(list(PHOTOS))
    rows = [(name, PHOTOS[name], resize(photos[name], SIZE)) for name in PHOTOS]
    return sorted(rows, key=lambda r: (r[1], r[0]))


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_class_folders(root: Path) -> Path:
    for stem, cls, img in labelled_photos():
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / cls / f"{stem}.png")
    return root


def write_manifests(root: Path, images: Path) -> tuple[Path, Path]:
    """A CSV and a JSON-lines manifest of the class-folder tree ``images`` (relative paths)."""
    rows = [(f"{images.name}/{cls}/{stem}.png", cls) for stem, cls, _ in labelled_photos()]
    csv_path, jsonl_path = root / "list.csv", root / "list.jsonl"
    csv_path.write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows))
    jsonl_path.write_text("".join(json.dumps({"path": p, "label": c}) + "\n" for p, c in rows))
    return csv_path, jsonl_path


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_700_000_000
    tf.addfile(info, io.BytesIO(data))


def write_shards(root: Path, n_shards: int = 2) -> str:
    """The photos as ``train-0000.tar`` .. in ``root`` (``KEY.png`` + ``KEY.cls``); returns the brace pattern."""
    rows = labelled_photos()
    per = -(-len(rows) // n_shards)
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(root / f"train-{s:04d}.tar", "w") as tf:
            for stem, cls, img in rows[s * per:(s + 1) * per]:
                add_member(tf, f"{cls}_{stem}.png", png_bytes(img))
                add_member(tf, f"{cls}_{stem}.cls", cls.encode())
    return str(root / f"train-{{0000..{n_shards - 1:04d}}}.tar")


def write_hf(root: Path) -> Path:
    """A ``save_to_disk`` folder with an ``Image`` column (PNG bytes) and a ``ClassLabel``."""
    import datasets

    rows = labelled_photos()
    names = sorted({cls for _, cls, _ in rows})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": png_bytes(img), "path": None} for _, _, img in rows],
                                     "label": [names.index(cls) for _, cls, _ in rows]}, features=features)
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(root))
    finally:
        if was:
            datasets.enable_progress_bars()
    return root
