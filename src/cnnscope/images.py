"""Load and validate images; the sample photo set; conversions to and from display space.

Every loader returns an ``uint8`` array of shape ``[H, W, 3]`` (RGB). Grayscale, grayscale+alpha, RGBA,
palette, CMYK, 16-bit and float images are converted; anything that is not an image raises
:class:`~cnnscope.errors.ImageError` naming the file and the reason.

Large pictures: conversions run over blocks of rows (temporaries stay small, whatever the pixel type), and a caller
that knows the size it needs (``load_image(src, at_least=(h, w))``, as :meth:`LoadedModel.fit_image` does) gets the
picture reduced while it is read: JPEG files decode at 1/2, 1/4 or 1/8 scale (``Image.draft``), others are reduced
by whole factors (``Image.reduce``, a box average, alpha premultiplied) in their own pixel type, before any
conversion, always keeping :data:`REDUCE_GAP` times the size asked for. The final resize then sees a picture close to
its target, and its result matches a resize of the full picture up to rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: ``load_image(at_least=...)`` reduces a picture only while both sides stay this many times the size asked for, so
#: the antialiased resize that follows is (up to rounding) the resize of the full picture
REDUCE_GAP = 6

#: pixels converted per block of rows: conversions never hold more than a few such blocks besides the result
BLOCK_PIXELS = 1 << 20

#: The colour photos of ``skimage.data`` that ship inside the scikit-image wheel (no download).
SAMPLE_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry",
                "motorcycle_left", "retina")


def _pil_to_rgb(img: Image.Image, where: str, sixteen_bit: bool = False) -> np.ndarray:
    """Convert any PIL mode to an ``uint8`` RGB array; alpha is composited over white.

    ``sixteen_bit``: an ``"I"`` image that was ``"I;16"`` before it was reduced (values in [0, 65535]).
    """
    if _orientation(img) not in (None, 1):  # exif_transpose copies even an upright picture: only call it to turn one
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - broken EXIF must not make a readable image unreadable
            pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        return _array_to_rgb(arr, where, assume_range=65535.0 if mode.startswith("I;16") or sixteen_bit else None)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def _array_to_rgb(arr: np.ndarray, where: str, assume_range: float | None = None) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first input
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"{where}: expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{where}: empty image of shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8 and arr.shape[-1] == 3:  # already what every loader returns: only copy it
        return np.array(arr, dtype=np.uint8, order="C")
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
        scale = 1.0
    elif arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16 or assume_range == 65535.0:
        scale = 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        hi = float(arr.max()) if arr.size else 1.0
        scale = 255.0 if hi <= 255 else max(hi, 1.0)
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))  # NaN propagates into both
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ImageError(f"{where}: image contains NaN or infinite values")
        scale = 1.0
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            if assume_range is None and lo >= 0 and hi <= 255.0 + 1e-6:
                scale = 255.0
            else:
                raise ImageError(f"{where}: float image values must lie in [0, 1] (or [0, 255]), "
                                 f"got [{lo:.3g}, {hi:.3g}]")
    else:
        raise ImageError(f"{where}: unsupported pixel type {arr.dtype}")
    out = np.empty((*arr.shape[:2], 3), dtype=np.uint8)
    rows = max(1, BLOCK_PIXELS // arr.shape[1])
    for top in range(0, arr.shape[0], rows):
        out[top:top + rows] = _block_to_rgb(arr[top:top + rows].astype(np.float64) / scale)
    return out


def _block_to_rgb(out: np.ndarray) -> np.ndarray:
    """Values in [0, 1] with 1 to 4 channels (grey, grey + alpha, RGB, RGBA) -> ``uint8`` RGB, alpha over white."""
    c = out.shape[-1]
    if c == 1:
        out = np.repeat(out, 3, axis=-1)
    elif c == 2:  # grey + alpha
        grey, alpha = out[..., :1], out[..., 1:]
        out = np.repeat(grey * alpha + (1 - alpha), 3, axis=-1)
    elif c == 4:
        rgb, alpha = out[..., :3], out[..., 3:]
        out = rgb * alpha + (1 - alpha)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _reduction(size: tuple[float, float], at_least: tuple[int, int], swapped: bool) -> int:
    """The whole factor a ``(width, height)`` picture can be reduced by and keep ``REDUCE_GAP * at_least``."""
    h, w = at_least
    if swapped:  # EXIF rotates the stored picture by 90 degrees: its width becomes the height
        h, w = w, h
    return max(1, int(min(size[0] / (REDUCE_GAP * max(1, w)), size[1] / (REDUCE_GAP * max(1, h)))))


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag (1 = upright; 5 to 8 turn the picture by 90 degrees), ``None`` when unreadable."""
    try:
        return img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF: exif_transpose would ignore it as well
        return None


def _reduced(img: Image.Image, at_least: tuple[int, int] | None, draft: bool = True) -> tuple[Image.Image, bool]:
    """``img`` loaded; when it is much larger than ``at_least``, shrunk by a whole factor ``f`` (``(image, 16-bit)``).
    32-bit integer and float pictures (modes ``I`` and ``F``) are never shrunk: their grey scale comes from their own
    range, which averaging changes.

    The shrunk picture is an antialiased bilinear resize of the whole picture to ``round(size / f)``: JPEG files are
    decoded at a reduced scale first (``draft``, only for files cnnscope opened: it changes the image object), and
    the resize reads the exact region the draft covers, so no partial block at an edge shifts the geometry.
    """
    swapped = at_least is not None and _orientation(img) in (5, 6, 7, 8)
    width, height = img.size
    factor = 1 if at_least is None else _reduction((width, height), at_least, swapped)
    if factor < 2:
        img.load()
        return img, False
    box = (0.0, 0.0, float(width), float(height))
    if draft and img.format == "JPEG":
        drafted = img.draft(None, (-(-width // factor), -(-height // factor)))  # DCT scaling: never below the request
        if drafted is not None:
            box = tuple(float(v) for v in drafted[1])  # type: ignore[assignment]
    img.load()
    if img.mode in ("I", "F"):  # 32-bit pictures are scaled by their own maximum, which a reduction would lower
        return img, False
    sixteen = img.mode.startswith("I;16")
    if sixteen:
        img = img.convert("I")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return img.resize(size, Image.BILINEAR, box=box), sixteen  # type: ignore[arg-type]


def picture_size(src: ImageLike) -> tuple[int, int] | None:
    """``(height, width)`` of the full picture :func:`load_image` would return, read without decoding it (a file's
    header, EXIF rotation included); ``None`` for what cannot be told without converting it."""
    try:
        if isinstance(src, (str, Path)):
            with Image.open(src) as img:
                w, h = img.size
                return (w, h) if _orientation(img) in (5, 6, 7, 8) else (h, w)
        if isinstance(src, Image.Image):
            w, h = src.size
            return (w, h) if _orientation(src) in (5, 6, 7, 8) else (h, w)
    except (OSError, SyntaxError, ValueError):
        return None  # load_image says what is wrong with the file
    if isinstance(src, (np.ndarray, torch.Tensor)) and src.ndim == 3 and src.shape[-1] == 3:
        return int(src.shape[0]), int(src.shape[1])
    return None


def load_image(src: ImageLike, *, at_least: tuple[int, int] | None = None) -> np.ndarray:
    """Load one image as an ``uint8`` RGB array.

    Args:
        src: a file path, a PIL image, a numpy array (HxW, HxWxC or CxHxW; uint8, uint16, bool or float in
            [0, 1]) or a tensor of the same layouts.
        at_least: ``(height, width)`` the caller will resize to: a larger picture may come back reduced by a whole
            factor (or JPEG's 1/2, 1/4, 1/8 decoding), keeping at least :data:`REDUCE_GAP` times this size and its
            aspect ratio up to rounding. ``None``: the full picture.

    Returns:
        ``np.ndarray`` of dtype ``uint8`` and shape ``[H, W, 3]``.

    Raises:
        ImageError: when the file is missing, not an image, truncated, or the array has a bad shape/range.
    """
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, not an image")
        try:
            with Image.open(path) as img:
                small, sixteen = _reduced(img, at_least)
                return _pil_to_rgb(small, str(path), sixteen_bit=sixteen)
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image file (unrecognised format)") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{path}: {exc} (Pillow's limit; raise PIL.Image.MAX_IMAGE_PIXELS for a file you trust)"
                             ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{path}: unreadable image ({exc})") from None
    if isinstance(src, Image.Image):
        if at_least is None:
            return _pil_to_rgb(src, "PIL image")
        small, sixteen = _reduced(src, at_least, draft=False)  # the caller's image object stays as it was
        return _pil_to_rgb(small, "PIL image", sixteen_bit=sixteen)
    if isinstance(src, torch.Tensor):
        src = src.detach().cpu().numpy()
    if isinstance(src, np.ndarray):
        if at_least is not None and src.dtype == np.uint8 and src.ndim == 3 and src.shape[-1] == 3:
            factor = _reduction((src.shape[1], src.shape[0]), at_least, False)
            if factor >= 2:
                return np.array(_reduced(Image.fromarray(np.ascontiguousarray(src)), at_least)[0], dtype=np.uint8)
        return _array_to_rgb(src, "array")
    raise ImageError(f"cannot load an image from an object of type {type(src).__name__}")


def sample_images(names: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
    """The real photos that ship inside scikit-image, as ``name -> uint8 [H, W, 3]``.

    Args:
        names: a subset of :data:`SAMPLE_NAMES`; all of them when ``None``.
    """
    import skimage.data

    from .errors import unknown

    chosen = list(SAMPLE_NAMES if names is None else names)
    out: dict[str, np.ndarray] = {}
    for name in chosen:
        if name not in SAMPLE_NAMES:
            raise ImageError(unknown("sample image", name, SAMPLE_NAMES))
        if name == "motorcycle_left":
            arr = skimage.data.stereo_motorcycle()[0]
        else:
            arr = getattr(skimage.data, name)()
        out[name] = load_image(np.asarray(arr))
    return out


#: ``resample=`` names of :func:`resize` (the interpolations torchvision's and timm's weights ask for)
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def resize(image: np.ndarray, size: tuple[int, int], *, resample: str = "bilinear") -> np.ndarray:
    """Resize an ``uint8`` RGB array to ``(height, width)``, antialiased, with ``resample`` filtering
    (``"bilinear"``, ``"bicubic"`` or ``"nearest"``).

    Raises:
        ImageError: another ``resample`` name.
    """
    if resample not in RESAMPLE:
        raise ImageError(f"unknown resample {resample!r}; use {', '.join(RESAMPLE)}")
    h, w = size
    return np.asarray(Image.fromarray(image).resize((int(w), int(h)), RESAMPLE[resample]), dtype=np.uint8)


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert values in [0, 1] (``[3,H,W]``, ``[H,W,3]``, ``[B,3,H,W]`` or ``[B,H,W,3]``) to ``uint8`` HWC."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu()
        if x.ndim in (3, 4) and x.shape[-3] in (1, 3) and x.shape[-1] not in (1, 3):
            x = x.movedim(-3, -1)
        x = x.numpy()
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


#: ITU-R BT.601 luma weights: how a one-channel model sees an RGB image
LUMA = (0.299, 0.587, 0.114)


def luma(x01: torch.Tensor) -> torch.Tensor:
    """RGB images ``[B, 3, H, W]`` -> luma ``[B, 1, H, W]`` (ITU-R BT.601 weights, :data:`LUMA`)."""
    if x01.ndim != 4 or x01.shape[1] != 3:
        raise ImageError(f"luma() takes [B, 3, H, W] RGB tensors, got {tuple(x01.shape)}")
    w = torch.tensor(LUMA, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    return (x01 * w).sum(1, keepdim=True)


def to_float(images: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...], device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``uint8`` pictures -> float ``[B, 3, H, W]`` in [0, 1]: the one uint8-HWC to float-BCHW conversion.

    Args:
        images: one ``[H, W, 3]`` array, a ``[B, H, W, 3]`` batch, or a list of ``[H, W, 3]`` arrays of one size.
        device, dtype: of the result (the copy to ``device`` happens before the conversion, in uint8).

    Raises:
        ImageError: wrong rank, channel count or pixel type, or arrays of different sizes.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageError("to_float() got an empty list of images")
        shapes = sorted({tuple(np.shape(a)) for a in images})
        if len(shapes) > 1:
            raise ImageError("images of different sizes in one batch: " + ", ".join("x".join(map(str, s))
                                                                                 for s in shapes))
        arr = np.stack([np.asarray(a) for a in images])
    else:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ImageError(f"to_float() takes uint8 [H, W, 3] pictures (or [B, H, W, 3]), got {arr.dtype} "
                         f"{tuple(arr.shape)}; load_image() converts other images")
    t = torch.from_numpy(arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr))
    if device is not None:
        t = t.to(device)
    return t.permute(0, 3, 1, 2).to(dtype).div_(255.0)


def save_image(image: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Write an image (``uint8`` HWC, or floats in [0, 1]) as PNG/JPEG by suffix; returns the path."""
    from .outputs import atomic_path

    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    path = Path(path)
    with atomic_path(path) as tmp:  # an interrupted write leaves no truncated picture under the real name
        Image.fromarray(arr).save(tmp)
    return path
