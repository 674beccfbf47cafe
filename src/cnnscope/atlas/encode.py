"""Turn arrays and figures into the bytes the atlas stores (PNG), and back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .records import Artifact


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an ``uint8`` ``[H, W, 3]`` (or ``[H, W]``) array as PNG bytes.

    Shape:
        - Input: ``[H, W, 3]`` or ``[H, W]``, dtype ``uint8``.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"png_bytes() expects uint8 [H,W] or [H,W,3], got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 88) -> bytes:
    """Encode an ``uint8`` ``[H, W, 3]`` array as JPEG bytes (whole source images and thumbnails: photos and
    renders compress 5-10x better than as PNG, and nothing reads their exact pixels back)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))).save(buf, format="JPEG",
                                                                                 quality=quality)
    return buf.getvalue()


def thumbnail_bytes(image: np.ndarray, size: int) -> bytes:
    """A ``size`` x ``size`` JPEG thumbnail of an ``uint8`` ``[H, W, 3]`` picture (Lanczos filter)."""
    img = Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))).convert("RGB")
    return jpeg_bytes(np.asarray(img.resize((size, size), Image.Resampling.LANCZOS)), quality=85)


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib ``Figure`` (Agg) to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``uint8`` array (``[H, W, 3]`` for RGB images)."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def image_artifact(kind: str, name: str, image: np.ndarray, numbers: object = None, **provenance: object
                   ) -> Artifact:
    """An :class:`Artifact` holding ``image`` as PNG with the numbers behind it."""
    return Artifact(kind=kind, name=name, mime="image/png", data=png_bytes(image), numbers=numbers,
                    provenance=dict(provenance))


def figure_artifact(kind: str, name: str, fig, numbers: object = None, **provenance: object) -> Artifact:
    """An :class:`Artifact` holding a rendered figure as PNG with the numbers behind it."""
    return Artifact(kind=kind, name=name, mime="image/png", data=figure_png(fig), numbers=numbers,
                    provenance=dict(provenance))


def numbers_artifact(kind: str, name: str, numbers: object, **provenance: object) -> Artifact:
    """An :class:`Artifact` that is only JSON numbers (no picture)."""
    return Artifact(kind=kind, name=name, mime="application/json", data=None, numbers=numbers,
                    provenance=dict(provenance))
