"""Sources that are not files of their own: a ``torch`` ``Dataset`` and scikit-image's sample photos."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import CnnscopeError, ImageError
from ...images import SAMPLE_NAMES, load_image, sample_images
from .base import ImageSource, file_entry, hash_entries


class DatasetSource(ImageSource):
    """A ``torch.utils.data.Dataset`` whose items are images or ``(image, ...)`` tuples / ``{"image": ...}``.

    Images may be PIL images, ``uint8``/float arrays or tensors (``CHW`` or ``HWC``, floats in [0, 1]). A dataset
    with ``classes`` and ``targets`` (torchvision's ``ImageFolder``, CIFAR, ...) is labelled; one with ``samples``
    (``[(path, class), ...]``, ``ImageFolder``) has the identity of those files.
    """

    kind = "dataset"

    def __init__(self, dataset: Dataset, name: str | None = None) -> None:
        self.dataset = dataset
        self.label_text = name or type(dataset).__name__
        classes, targets = getattr(dataset, "classes", None), getattr(dataset, "targets", None)
        self._targets = None
        if classes is not None and targets is not None and len(targets) == len(self):
            self.classes = [str(c) for c in classes]
            self._targets = [int(t) for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def name(self, index: int) -> str:
        return f"{self.label_text}[{index}]"

    def load(self, index: int) -> np.ndarray:
        item = self.dataset[index]
        if isinstance(item, dict):
            item = item.get("image", item.get("img"))
        elif isinstance(item, (tuple, list)):
            item = item[0] if item else None
        if item is None:
            raise ImageError(f"{self.name(index)}: the item holds no image")
        return load_image(item)

    def label_index(self, index: int) -> int:
        t = -1 if self._targets is None else self._targets[index]
        return t if self.classes is not None and 0 <= t < len(self.classes) else -1

    def identity(self) -> str | None:
        samples = getattr(self.dataset, "samples", None)
        if self._identity is None and isinstance(samples, (list, tuple)) and len(samples) == len(self):
            self._identity = hash_entries(file_entry(s[0] if isinstance(s, (tuple, list)) else s) for s in samples)
        return self._identity

    def describe(self) -> dict:
        return {**super().describe(), "dataset": self.label_text}


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

    def identity(self) -> str:
        """A hash of what defines the pictures: the photo names, crops per photo, seed and crop scale."""
        return hash_entries([f"samples\t{','.join(self.names)}\t{self.crops}\t{self.seed}\t{self.scale}"])

    def describe(self) -> dict:
        return {**super().describe(), "photos": self.names, "crops": self.crops, "seed": self.seed}

    def __getstate__(self) -> dict:  # workers reload the photos themselves
        return {**self.__dict__, "_photos": None}
