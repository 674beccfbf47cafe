"""The images of a build: anything :func:`cnnscope.dataset.sources.open_source` reads, or in-memory photos."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..dataset.sources import ImageSource, open_source
from ..images import load_image


class NamedArrays(ImageSource):
    """In-memory images with names (``[(name, uint8 HxWx3), ...]`` or ``{name: array}``), as an image source."""

    kind = "arrays"

    def __init__(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        self.names = [str(n) for n, _ in items]
        self.arrays = [load_image(np.asarray(a)) for _, a in items]

    def __len__(self) -> int:
        return len(self.arrays)

    def name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int) -> np.ndarray:
        return self.arrays[index]

    def describe(self) -> dict:
        return {"kind": "arrays", "images": len(self), "names": self.names[:50]}


def image_source(images: object) -> ImageSource:
    """An :class:`ImageSource` for ``images``: a source, a folder/glob/``"samples"``/paths (``open_source``),
    a ``{name: array}`` dict or a list of ``(name, array)`` pairs."""
    if isinstance(images, dict):
        return NamedArrays(list(images.items()))
    if isinstance(images, (list, tuple)) and images and all(
            isinstance(it, tuple) and len(it) == 2 and isinstance(it[1], np.ndarray) for it in images):
        return NamedArrays(list(images))
    return open_source(images)
