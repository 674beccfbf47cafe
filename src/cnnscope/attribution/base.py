"""The one attribution base (docs/ARCHITECTURE.md, rule 5): ``Attribution``, the ``Method`` base class, the registry, ``attribute()``.

Every method is a small :class:`Method` subclass registered under a name; :func:`attribute` looks the name up,
checks the options, runs the method in temporary eval mode and returns an :class:`Attribution` holding the raw,
signed values. Normalising, rectifying for display, upsampling and overlays live in :mod:`.display`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ..capture import evaluating, module_device, module_dtype
from ..errors import ImageError, MethodError, unknown
from .targets import Scorer, Target, parse_target

#: Options every method takes: the memory bound, the batch of perturbation forwards on a CPU, a progress bar,
#: temporary eval mode, and ``channels_last``, which hands 4-D batches to the model in channels-last memory format
#: (1.4x-1.7x faster forward/backward on CPUs with oneDNN, results equal to float rounding; the model is not touched).
COMMON_OPTIONS: dict[str, Any] = {"max_batch": 32, "cpu_batch": 4, "progress": False, "eval_mode": True,
                                  "channels_last": True}

#: name -> Method subclass; filled by :func:`register` when the method modules are imported.
METHODS: dict[str, type[Method]] = {}


@dataclass
class Attribution:
    """The result of one attribution call.

    Attributes:
        values: raw signed attributions. Pixel methods: ``[B, C, H, W]`` like the input (RISE: ``[B, 1, H, W]``,
            the same map for every channel). CAM methods: ``[B, 1, h, w]`` at the layer's resolution.
        method: registry name (``"gradcam"``).
        layer: the layer a CAM used (chosen automatically when not given), else ``None``.
        target: the class explained for each image (``None`` for callable and unit targets).
        spec: JSON-ready description: method, options, target, layer and how it was chosen, shapes, ...
        scores: the target's score on each clean input (``Tensor[B]``).
    """

    values: torch.Tensor
    method: str
    layer: str | None
    target: list[int] | None
    spec: dict = field(default_factory=dict)
    scores: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        """``"pixel"`` (input resolution) or ``"layer"`` (a CAM at layer resolution)."""
        return self.spec.get("kind", "pixel")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the explained inputs."""
        shape = self.spec.get("input_shape") or list(self.values.shape)
        return int(shape[-2]), int(shape[-1])

    def heatmap(self, size: tuple[int, int] | None = None, **display: Any) -> torch.Tensor:
        """Display maps ``[B, H, W]`` (``size`` defaults to the input size), via :func:`.display.to_heatmap`.

        Keyword arguments override the method's display defaults (``sign``, ``reduce``, ``outlier_perc``).
        """
        from .display import to_heatmap

        opts = {**self.spec.get("display", {}), **display}
        opts.pop("cmap", None)
        return to_heatmap(self.values, size=size or self.input_size, **opts)

    def select(self, index: int) -> Attribution:
        """The attribution of image ``index`` alone (batch dimension kept)."""
        spec = dict(self.spec)
        tgt = dict(spec.get("target", {}))
        for key in ("classes", "labels", "given"):
            if isinstance(tgt.get(key), list):
                tgt[key] = [tgt[key][index]]
        spec["target"] = tgt
        return replace(self, values=self.values[index:index + 1],
                       target=None if self.target is None else [self.target[index]], spec=spec,
                       scores=None if self.scores is None else self.scores[index:index + 1])


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a :class:`Method` subclass to :data:`METHODS` under ``cls.name``."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} is empty or registered twice")
    METHODS[cls.name] = cls
    return cls


def _load_methods() -> None:
    from . import cam, gradient, perturbation  # noqa: F401 - importing registers the methods


def list_methods(kind: str | None = None) -> list[str]:
    """Registered method names (``kind="pixel"`` or ``"layer"`` to filter), in registration order."""
    _load_methods()
    return [n for n, c in METHODS.items() if kind is None or c.kind == kind]


def get_method(name: str) -> type[Method]:
    """The :class:`Method` subclass registered as ``name``.

    Raises:
        MethodError: unknown name, with close matches.
    """
    _load_methods()
    if not isinstance(name, str) or name not in METHODS:
        raise MethodError(unknown("attribution method", str(name), METHODS))
    return METHODS[name]


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else f"tensor{list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return type(value).__name__


def prepare_inputs(inputs: object, module: nn.Module, model: object = None) -> torch.Tensor:
    """Bring inputs to one ``[B, C, H, W]`` float batch on the module's device (detached).

    Args:
        inputs: a ``[B, C, H, W]`` or ``[C, H, W]`` tensor in the model's input space, a list of ``[C, H, W]``
            tensors of one size, or (with a ``LoadedModel``) images/paths that ``preprocess`` resizes to the
            model's input size.
        module: the model (for its device and dtype).
        model: the ``LoadedModel`` when one was given.

    Raises:
        ImageError: images of different sizes in one batch, wrong rank or a non-float tensor.
    """
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        items = [t[0] if t.ndim == 4 and t.shape[0] == 1 else t for t in inputs]
        sizes = sorted({tuple(t.shape) for t in items})
        if any(t.ndim != 3 for t in items):
            raise ImageError(f"a list of tensors must hold [C, H, W] images, got shapes {sizes}")
        if len(sizes) > 1:
            raise ImageError("images of different sizes in one batch: " + ", ".join(
                "x".join(map(str, s)) for s in sizes) + "; resize them to one size first (LoadedModel.preprocess "
                "does), or pass the images themselves together with a LoadedModel")
        inputs = torch.stack(items)
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach()
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4:
            raise ImageError(f"attribution takes a [B, C, H, W] batch (or one [C, H, W] image), got shape "
                             f"{tuple(x.shape)}")
        if not x.is_floating_point():
            raise ImageError(f"attribution takes float tensors in the model's input space, got {x.dtype}; use "
                             "LoadedModel.preprocess() for uint8 images")
        if x.shape[0] == 0:
            raise ImageError("attribution got an empty batch")
        return x.to(device=module_device(module), dtype=module_dtype(module))
    if model is not None and hasattr(model, "preprocess"):
        return model.preprocess(inputs).detach()
    raise ImageError(f"cannot attribute {type(inputs).__name__} inputs with a bare module: pass a [B, C, H, W] "
                     "tensor, or a LoadedModel (load_model/wrap) to give images or paths")


class Method:
    """Base class of every attribution method: options, targets, eval mode and the result live here.

    A subclass sets the class attributes and implements :meth:`compute`; it is used as
    ``Saliency(model, **options).attribute(inputs, target=None, layer=None)``.

    Class attributes:
        name: registry name; title: display name; reference: the paper.
        kind: ``"pixel"`` (values at input resolution) or ``"layer"`` (CAM at layer resolution).
        uses_layer: whether ``layer=`` means something (other methods ignore it).
        options: option defaults of this class (merged with its bases and :data:`COMMON_OPTIONS`).
        display: default arguments of :func:`.display.to_heatmap` (and ``cmap``) for this method.
        batch_independent: an image's result does not depend on the other images of the batch.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    kind: ClassVar[str] = "pixel"
    uses_layer: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}
    display: ClassVar[dict[str, Any]] = {"sign": "absolute", "reduce": "max"}
    batch_independent: ClassVar[bool] = True

    def __init__(self, model: nn.Module | Any, **options: Any) -> None:
        module = getattr(model, "module", model)
        if not isinstance(module, nn.Module):
            raise MethodError(f"{self.name}: expected an nn.Module or a LoadedModel, got {type(model).__name__}")
        self.module = module
        self.model = model if module is not model else None
        self.labels: Sequence[str] | None = getattr(model, "labels", None)
        defaults = self.defaults()
        for key in options:
            if key not in defaults:
                raise MethodError(unknown(f"option of method {self.name!r}", key, defaults))
        self.opts: dict[str, Any] = {**defaults, **options}
        for key in ("max_batch", "cpu_batch"):
            v = self.opts[key]
            if (v is not None or key == "max_batch") and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise MethodError(f"{self.name}: {key} must be a positive int, got {v!r}")
        self.extra: dict[str, Any] = {}
        self.check_options()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """All option defaults of this method (common ones included)."""
        out = dict(COMMON_OPTIONS)
        for klass in reversed(cls.__mro__):
            out.update(getattr(klass, "options", {}) if "options" in vars(klass) else {})
        return out

    def check_options(self) -> None:
        """Validate :attr:`opts` (subclasses raise :class:`~cnnscope.errors.MethodError` on bad values)."""

    def attribute(self, inputs: object, target: object = None, layer: str | None = None) -> Attribution:
        """Explain ``target`` for each input.

        Args:
            inputs: see :func:`prepare_inputs`.
            target: ``None``/"top", class index, label, list of those (one per image), a callable
                ``outputs -> Tensor[B]`` or :func:`~cnnscope.attribution.unit`.
            layer: the layer of CAM methods (automatic when ``None``); ignored by pixel methods.

        Shape:
            - inputs: ``[B, C, H, W]``
            - values: ``[B, C, H, W]`` (pixel methods) or ``[B, 1, h, w]`` (CAMs).
        """
        x = prepare_inputs(inputs, self.module, self.model)
        labels = self.labels
        if labels is None and isinstance(target, (str, list, tuple)):
            labels = _imagenet_labels_if_1000(self.module, x)
        tgt = parse_target(target, x.shape[0], labels)
        self.extra = {}
        mode = evaluating(self.module) if self.opts["eval_mode"] else nullcontext()
        with mode, Scorer(self.module, tgt, eval_mode=self.opts["eval_mode"],
                                 channels_last=bool(self.opts["channels_last"])) as scorer:
            layer_name, note = self.resolve_layer(x, layer) if self.uses_layer else (None, None)
            values = self.compute(x, scorer, layer_name)
            if not tgt.bound:
                scorer.bind_clean(x, self.opts["max_batch"])
        return Attribution(values=values.detach(), method=self.name, layer=layer_name, target=tgt.class_list(),
                           spec=self._spec(x, values, tgt, layer_name, note), scores=tgt.clean)

    def _spec(self, x: torch.Tensor, values: torch.Tensor, tgt: Target, layer: str | None, note: str | None
              ) -> dict:
        opts = {k: v for k, v in self.opts.items() if k not in ("progress",)}
        return {"method": self.name, "title": self.title, "reference": self.reference, "kind": self.kind,
                "options": _json_safe(opts), "target": tgt.spec(), "layer": layer, "layer_choice": note,
                "input_shape": list(x.shape), "values_shape": list(values.shape),
                "eval_mode": bool(self.opts["eval_mode"]), "display": dict(self.display), **_json_safe(self.extra)}

    def forward_batch(self, x: torch.Tensor) -> int:
        """Images per forward for batches of perturbed copies: ``max_batch``, or ``cpu_batch`` on a CPU.

        Many small batches run faster than few large ones on a CPU (they stay in the caches); ``max_batch``
        remains the memory bound everywhere.
        """
        mb, cb = self.opts["max_batch"], self.opts["cpu_batch"]
        return min(mb, cb) if cb is not None and x.device.type == "cpu" else mb

    def resolve_layer(self, x: torch.Tensor, layer: str | None) -> tuple[str | None, str | None]:
        """``(layer name, how it was chosen)`` for methods that use a layer (overridden by CAMs)."""
        return layer, "given" if layer else None

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        """The raw attributions of the clean batch ``x`` (subclasses implement this)."""
        raise NotImplementedError


def _imagenet_labels_if_1000(module: nn.Module, x: torch.Tensor) -> Sequence[str] | None:
    """ImageNet class names for a bare module whose last layer has 1000 outputs (label targets need names)."""
    last = None
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    n = getattr(last, "out_features", None) or getattr(last, "out_channels", None)
    if n == 1000:
        from ..models import imagenet_labels

        return imagenet_labels()
    return None


def attribute(module: nn.Module | Any, inputs: object, method: str, target: object = None,
              layer: str | None = None, **options: Any) -> Attribution:
    """Explain ``target`` for ``inputs`` with the method registered as ``method``.

    Args:
        module: an ``nn.Module`` or a ``LoadedModel`` (which adds class labels and image preprocessing).
        inputs: ``[B, C, H, W]`` tensor in the model's input space (or images, with a ``LoadedModel``).
        method: a name from :func:`list_methods` (``"gradcam"``, ``"integrated_gradients"``, ...).
        target: ``None`` (top-1), class index, label, one per image, callable or ``unit(...)``.
        layer: the CAM layer (automatic when ``None``).
        **options: the method's options (see ``get_method(name).defaults()``), e.g. ``max_batch``.

    Returns:
        An :class:`Attribution` with raw signed values.

    Raises:
        MethodError: unknown method or option (with close matches).
        TargetError: class out of range, unknown label, wrong number of targets.
        LayerError: unknown layer or one a CAM cannot use.
        ImageError: inputs of different sizes or of the wrong shape.
    """
    return get_method(method)(module, **options).attribute(inputs, target=target, layer=layer)
