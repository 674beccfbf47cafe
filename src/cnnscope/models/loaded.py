"""``LoadedModel``: a module plus everything needed to feed it images and read its answers."""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import CnnscopeError, ImageError, ModelError
from ..images import ImageLike, load_image, luma, picture_size, resize, to_float

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AssumptionWarning(UserWarning):
    """cnnscope had to assume something about a plain ``nn.Module`` (its normalisation or input size)."""


#: modules whose assumptions were already said (weak: a module is not kept alive by having been warned about)
_WARNED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@dataclass
class LoadedModel:
    """A model ready for cnnscope.

    Attributes:
        module: the ``nn.Module`` (eval mode when cnnscope built it; a wrapped user module is left as it was).
        name: registry name or a user-chosen name.
        input_size: ``(height, width)`` the model was trained at.
        mean, std: per-channel normalisation applied by :meth:`preprocess` (images in [0, 1]).
        labels: class names by output index, or ``None``.
        pretrained: ``True`` when real trained weights were loaded; ``False`` means random initialisation.
        weights: where the weights came from (a path, ``"embedded"`` or ``None`` for random).
        resize_mode: ``"resize"`` (whole image squashed to ``input_size``, so maps align with the full photo) or
            ``"center_crop"`` (shorter side to :attr:`resize_size`, then a centre crop of ``input_size``, the
            ImageNet protocol).
        resize_size: the shorter side before the centre crop (torchvision's ``resize_size``, timm's
            ``input_size / crop_pct``); ``None``: the larger side of ``input_size`` / 0.875.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``: how pictures are resized (from the weights'
            metadata where they say it).
        notes: what was set or read on the user's behalf while loading (a class count read off a checkpoint, ...);
            the CLI prints each as a ``note:`` line.
        study_layers: the layers worth studying (a preset's list; the default of commands that need layers and
            were given none), empty when nobody chose them.
        aliases: other names for layers, ``{alias: dotted name}`` (the Lucid/Microscope names of InceptionV1);
            accepted everywhere a layer name is (:func:`cnnscope.capture.resolve_layers`).

    Raises:
        ModelError: (when built) ``mean`` and ``std`` of different lengths, non-finite values or a ``std`` that is
            not positive.
    """

    module: nn.Module
    name: str
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: Sequence[str] | None = None
    pretrained: bool = False
    weights: str | None = None
    resize_mode: str = "resize"
    source: str = "user"
    extra: dict = field(default_factory=dict)
    #: what cnnscope assumed about a plain module (see :func:`~cnnscope.models.as_model`), or ``None``
    assumed: str | None = None
    notes: list[str] = field(default_factory=list)
    resize_size: int | None = None
    interpolation: str = "bilinear"
    study_layers: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_normalization(self.mean, self.std)
        if self.aliases:  # a copy around another module (dataclasses.replace) keeps only the aliases that fit it
            from ..capture import set_layer_aliases
            from ..errors import LayerError

            table = dict(self.module.named_modules())
            try:
                set_layer_aliases(self.module, {a: n for a, n in self.aliases.items() if n in table and n})
            except LayerError:
                pass

    @property
    def is_script(self) -> bool:
        """Whether the module is TorchScript (it runs no Python hooks: predictions only, no layer analyses)."""
        return isinstance(self.module, torch.jit.ScriptModule)

    def _note_assumption(self) -> None:
        """Warn once per module, the first time an assumed normalisation turns pictures into inputs or back."""
        if self.assumed and self.module not in _WARNED:
            import warnings

            _WARNED.add(self.module)
            warnings.warn(self.assumed, AssumptionWarning, stacklevel=3)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the module's first floating parameter or buffer (float32 when it has none)."""
        from ..capture import module_dtype

        return module_dtype(self.module)

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter or buffer (CPU for a parameter-free module)."""
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def weights_note(self) -> str:
        """Human-readable provenance of the weights ("pretrained ..." or "RANDOM weights ...")."""
        if self.pretrained:
            return f"pretrained ({self.weights})"
        if self.weights:
            return f"weights from {self.weights}"
        return "RANDOM weights (untrained; pass weights=PATH, or weights='DEFAULT' for the library's pretrained ones)"

    # -- images <-> tensors -------------------------------------------------------------------------
    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (``[B,C,H,W]`` with the model's channel count) to the model's input space."""
        self._note_assumption()
        mean = torch.tensor(self.mean, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: model-space tensors back to [0, 1] (not clamped)."""
        self._note_assumption()
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return x * std + mean

    def fit_needs(self, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(height, width)`` that :meth:`fit_image` resizes a picture to before any crop (for ``load_image``'s
        ``at_least``): ``size`` (default ``input_size``), or for ``"center_crop"`` a square of the shorter side it is
        resized to (:meth:`crop_side`).
        """
        h, w = size or self.input_size
        if self.resize_mode == "center_crop":
            side = math.ceil(self.crop_side(size))
            return side, side
        return h, w

    def crop_side(self, size: tuple[int, int] | None = None) -> float:
        """The shorter side a picture is resized to before the centre crop to ``size`` (default ``input_size``):
        :attr:`resize_size` scaled with ``size``, or the larger side of ``size`` / 0.875."""
        h, w = size or self.input_size
        if self.resize_size is None:
            return max(h, w) / 0.875
        return max(h, w, self.resize_size * max(h, w) / max(self.input_size))

    def fit_image(self, image: ImageLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """Load ``image`` and bring it to ``size`` (default ``input_size``) by :attr:`resize_mode`.

        A large picture is reduced while it is read (``load_image(image, at_least=fit_needs(size))``: whole factors
        in ``uint8`` that keep it several times larger than the result), so memory stays a small multiple of the
        decoded picture and the result matches a resize of the full picture up to rounding.
        """
        arr = load_image(image, at_least=self.fit_needs(size))
        h, w = size or self.input_size
        if self.resize_mode == "center_crop":  # planned on the full picture's size, so a reduction changes nothing
            full = picture_size(image) or arr.shape[:2]
            side = self.crop_side(size)
            if self.resize_size is None:
                scale = side / min(full)
                nh, nw = max(h, round(full[0] * scale)), max(w, round(full[1] * scale))
                top, left = (nh - h) // 2, (nw - w) // 2
            else:  # torchvision's Resize(int) and CenterCrop, to the pixel
                short = int(round(side))
                long = int(short * max(full) / min(full))
                nh, nw = (short, long) if full[0] <= full[1] else (long, short)
                nh, nw = max(h, nh), max(w, nw)
                top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
            arr = resize(arr, (nh, nw), resample=self.interpolation)
            return np.ascontiguousarray(arr[top:top + h, left:left + w])
        if self.resize_mode != "resize":
            raise CnnscopeError(f"unknown resize_mode {self.resize_mode!r}; use 'resize' or 'center_crop'")
        return arr if arr.shape[:2] == (h, w) else resize(arr, (h, w), resample=self.interpolation)

    def to_input(self, x01: torch.Tensor) -> torch.Tensor:
        """RGB pictures in [0, 1] ``[B, 3, H, W]`` -> the model's input (luma first for one-channel models), on the
        model's device and in its dtype (normalised in ``x01``'s dtype first, so half-precision models lose nothing
        more than the final rounding). Differentiable.

        Shape:
            - x01: ``[B, 3, H, W]`` (or already ``[B, C, H, W]`` with the model's ``C``); Output: ``[B, C, H, W]``.
        """
        if len(self.mean) == 1 and x01.shape[1] == 3:
            x01 = luma(x01)
        return self.normalize(x01).to(device=self.device, dtype=self.dtype)

    def preprocess(self, image: ImageLike | Sequence[ImageLike], size: tuple[int, int] | None = None
                   ) -> torch.Tensor:
        """Image(s) -> normalised ``Tensor[B,C,H,W]`` on the model's device (``B=1`` for one image).

        Shape:
            - Output: ``[B, C, H, W]`` with ``(H, W) = size or input_size``.
        """
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            raise ImageError("preprocess() takes images (paths, PIL, uint8 arrays), not a batch tensor; "
                             "use normalize() for tensors in [0, 1]")
        if isinstance(image, np.ndarray) and image.ndim == 4:
            items: list = list(image)
        else:
            items = list(image) if isinstance(image, (list, tuple)) else [image]
        if not items:
            raise ImageError("preprocess() got an empty list of images")
        return self.to_input(to_float([self.fit_image(it, size) for it in items], device=self.device))

    def fitted_batch(self, pictures: Sequence[np.ndarray]) -> torch.Tensor:
        """Pictures already brought to the input size by :meth:`fit_image` -> the model's input ``[B, C, H, W]``,
        without fitting them again (:meth:`batch` would: a ``center_crop`` model would crop the crop, zooming in).
        """
        return self.to_input(to_float(list(pictures), device=self.device))

    def batch(self, images: object, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The one input check: ``images`` -> a detached model-space ``[B, C, H, W]`` batch on the model's device.

        Args:
            images: a float tensor in the model's input space (``[B, C, H, W]`` or one ``[C, H, W]``), a list of
                such tensors of one size (a tensor is never a picture), or pictures: anything
                :func:`~cnnscope.images.load_image` takes, a ``uint8 [B, H, W, 3]`` array or a list of those (resized
                to ``size`` or :attr:`input_size`).
            size: ``(H, W)`` for pictures (default :attr:`input_size`); tensors keep their size.

        Raises:
            ImageError: wrong rank or channel count, a non-float tensor, an empty batch, tensors of different sizes,
                NaN or infinite values, or an unreadable picture (naming the file and the reason).
        """
        if isinstance(images, (list, tuple)) and images and all(isinstance(t, torch.Tensor) and t.is_floating_point()
                                                                for t in images):
            items = [t[0] if t.ndim == 4 and t.shape[0] == 1 else t for t in images]
            shapes = sorted({tuple(t.shape) for t in items})
            if any(t.ndim != 3 for t in items) or len(shapes) > 1:
                raise ImageError("a list of tensors must hold [C, H, W] images of one size, got shapes "
                                 + ", ".join("x".join(map(str, s)) for s in shapes)
                                 + "; pass the pictures themselves to have them resized")
            images = torch.stack(items)
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            x = images.detach()
            if x.ndim == 3:
                x = x.unsqueeze(0)
            x = self.check_input(x)
            if x.shape[0] == 0:
                raise ImageError(f"{self.name} got an empty batch")
            if not bool(torch.isfinite(x).all()):
                raise ImageError(f"{self.name}: the input batch contains NaN or infinite values")
            return x.to(device=self.device, dtype=self.dtype)
        if isinstance(images, torch.Tensor):
            raise ImageError(f"{self.name} takes float tensors in its input space, got a {images.dtype} tensor; pass "
                             "pictures as uint8 numpy arrays, PIL images or paths")
        return self.preprocess(images, size).detach()  # type: ignore[arg-type]

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a model-space batch: ``[B, C, H, W]`` float with ``C`` = the model's channel count.

        Raises:
            ImageError: with the expected and the received shape.
        """
        c = len(self.mean)
        if not isinstance(x, torch.Tensor):
            raise ImageError(f"expected a tensor [B,{c},H,W], got {type(x).__name__}; use preprocess() for images")
        if x.ndim != 4 or x.shape[1] != c:
            hint = " (a single image? add a batch dimension)" if x.ndim == 3 else ""
            raise ImageError(f"{self.name} takes [B,{c},H,W] tensors, got shape {tuple(x.shape)}{hint}")
        if not x.is_floating_point():
            raise ImageError(f"{self.name} takes float tensors, got {x.dtype}; use preprocess() for uint8 images")
        return x

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """Model-space ``[3,H,W]`` or ``[1,3,H,W]`` tensor -> ``uint8 [H,W,3]`` (``[B,H,W,3]`` for a batch)."""
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != len(self.mean):
            raise ImageError(f"deprocess() expects [{len(self.mean)},H,W] or [B,{len(self.mean)},H,W], "
                             f"got {tuple(x.shape)}")
        y = self.denormalize(x.detach().float()).clamp(0, 1)
        y = y.expand(-1, 3, -1, -1) if y.shape[1] == 1 else y
        y = y.permute(0, 2, 3, 1)
        out = (y * 255.0).round().to(torch.uint8).cpu().numpy()
        return out[0] if out.shape[0] == 1 else out

    def label(self, index: int) -> str:
        """Class name of output ``index`` (``"class 7"`` when the model has no labels)."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def class_index(self, label: str) -> int:
        """Output index of a class name (case-insensitive; unique prefixes allowed)."""
        from ..errors import unknown

        if self.labels is None:
            raise CnnscopeError(f"model {self.name!r} has no class labels; give a class index instead")
        low = [lab.lower() for lab in self.labels]
        key = label.strip().lower()
        if key in low:
            return low.index(key)
        hits = [i for i, lab in enumerate(low) if lab.startswith(key)]
        if len(hits) == 1:
            return hits[0]
        raise CnnscopeError(unknown("class label", label, self.labels))

    @torch.no_grad()
    def predict(self, images: ImageLike | Sequence[ImageLike], k: int = 5) -> list[list[tuple[int, str, float]]]:
        """Top-``k`` ``(index, label, probability)`` per image (softmax of the model's logits, in float32 or the
        model's float64).

        Args:
            images: pictures (see :meth:`batch`).
            k: classes per image, 1 or more; a ``k`` above the model's class count returns every class.

        Raises:
            CnnscopeError: ``k`` is not a positive integer, or the model does not return ``[B, classes]`` logits.
        """
        from ..capture import evaluating

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CnnscopeError(f"k (classes per image) must be a positive integer, got {k!r}")
        x = self.preprocess(images)
        with evaluating(self.module):
            logits = self.module(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise CnnscopeError(f"model {self.name!r} does not return [B, classes] logits")
        probs = logits.softmax(dim=1, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
        top = probs.topk(min(int(k), probs.shape[1]), dim=1)
        return [[(int(i), self.label(int(i)), float(p)) for p, i in zip(ps, idx)]
                for ps, idx in zip(top.values.cpu(), top.indices.cpu())]

    def describe(self) -> dict:
        """JSON-ready description (used by the CLI and the atlas)."""
        n_params = sum(p.numel() for p in self.module.parameters())
        return {"name": self.name, "source": self.source, "input_size": list(self.input_size),
                "mean": list(self.mean), "std": list(self.std), "pretrained": self.pretrained,
                "weights": self.weights, "weights_note": self.weights_note, "parameters": n_params,
                "num_labels": len(self.labels) if self.labels is not None else None, "notes": list(self.notes),
                "resize_mode": self.resize_mode, "resize_size": self.resize_size, "interpolation": self.interpolation,
                "study_layers": list(self.study_layers), "aliases": dict(self.aliases)}


def check_normalization(mean: Sequence[float], std: Sequence[float]) -> None:
    """``mean``/``std`` of one length (at least 1), finite, with every ``std`` positive.

    Raises:
        ModelError: naming the bad value (a zero ``std`` would make every input infinite and every output NaN).
    """
    mean, std = tuple(mean), tuple(std)
    if not mean or len(mean) != len(std):
        raise ModelError(f"mean has {len(mean)} channel(s) but std has {len(std)}; give one value per input channel")
    try:
        values = [float(v) for v in (*mean, *std)]
    except (TypeError, ValueError):
        raise ModelError(f"mean and std must be numbers, got mean={mean!r}, std={std!r}") from None
    if not all(np.isfinite(values)):
        raise ModelError(f"mean and std must be finite, got mean={mean!r}, std={std!r}")
    if min(float(v) for v in std) <= 0:
        raise ModelError(f"std must be positive in every channel, got std={std!r}")


def _check_channels(module: nn.Module, channels: int, size: tuple[int, int], name: str) -> None:
    """Raise when ``module`` cannot take ``channels``-channel inputs (mean/std of the wrong length).

    The first convolution's ``in_channels`` decides; only when it disagrees does one probe forward (no gradients,
    temporary eval mode) settle it, so a model that converts its input itself is still accepted.
    """
    from ..capture import evaluating, input_channels, module_device, module_dtype

    first = input_channels(module, default=channels)
    if first == channels:
        return
    try:
        with torch.no_grad(), evaluating(module):
            module(torch.zeros(1, channels, *size, device=module_device(module), dtype=module_dtype(module)))
    except Exception:  # noqa: BLE001 - the probe failed: the channel count is wrong (the common case)
        raise ModelError(f"mean/std have {channels} value(s) but {name}'s first convolution takes {first} input "
                         f"channels; give {first} values (ImageNet RGB: mean={list(IMAGENET_MEAN)}, "
                         f"std={list(IMAGENET_STD)})") from None


def wrap(module: nn.Module, input_size: int | tuple[int, int] = 224, mean: Sequence[float] = IMAGENET_MEAN,
         std: Sequence[float] = IMAGENET_STD, labels: Sequence[str] | None = None, name: str | None = None,
         pretrained: bool = True, resize_mode: str = "resize") -> LoadedModel:
    """Use your own ``nn.Module`` with cnnscope.

    The module is not modified: not moved, not switched to eval mode (cnnscope's operations switch to eval
    temporarily and restore every ``training`` flag afterwards).

    Args:
        module: any module that takes ``[B, C, H, W]`` images.
        input_size: ``H`` (square) or ``(H, W)``.
        mean, std: per-channel normalisation of images in [0, 1]; their length sets the channel count and must
            match what the module takes; every ``std`` positive.
        labels: class names by output index, or ``None``.
        name: display name (default: the class name).
        pretrained: whether the weights are trained (only affects what cnnscope reports).

    Raises:
        ModelError: ``mean``/``std`` of different lengths, non-finite, a ``std`` that is not positive, or a channel
            count the module does not take.
    """
    if not isinstance(module, nn.Module):
        raise CnnscopeError(f"wrap() needs a torch.nn.Module, got {type(module).__name__}")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise CnnscopeError(f"input_size must be an int or (height, width), got {input_size!r}")
    check_normalization(mean, std)
    _check_channels(module, len(mean), size, name or type(module).__name__)  # type: ignore[arg-type]
    return LoadedModel(module=module, name=name or type(module).__name__, input_size=size,  # type: ignore[arg-type]
                       mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                       labels=list(labels) if labels is not None else None, pretrained=pretrained,
                       weights="user module", resize_mode=resize_mode, source="user")
