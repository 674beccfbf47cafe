"""The one attribution base (docs/ARCHITECTURE.md, rule 5): ``Attribution``, ``Method``, the registry, ``attribute()``.

Every method is a small :class:`Method` subclass registered by :func:`register_method`; :func:`attribute` looks the
name up, checks the options, runs the method in temporary eval mode and returns an :class:`Attribution` holding the
raw, signed values. Normalising, rectifying for display, upsampling and overlays live in :mod:`.display`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from ..batching import resolve_batch_size
from ..capture import evaluating
from ..errors import MethodError, unknown
from ..models import ModelLike, as_model
from ..registry import Registry
from .targets import Scorer, Target, parse_target

#: Options every method takes: ``batch_size`` (images per forward; ``None`` = the method's default for the model's
#: device), a progress bar, temporary eval mode, and ``channels_last``, which hands 4-D batches to the model in
#: channels-last memory format (faster forward/backward on CPUs with oneDNN, results equal to float rounding; the
#: model is not touched).
COMMON_OPTIONS: dict[str, Any] = {"batch_size": None, "progress": False, "eval_mode": True, "channels_last": True}

#: name -> Method subclass; filled by :func:`register_method` in the modules of this package.
METHODS: Registry[type[Method]] = Registry("attribution method", package="cnnscope.attribution")


@dataclass
class Attribution:
    """The result of one attribution call.

    Attributes:
        values: raw signed attributions, detached, on the model's device. Pixel methods: ``[B, C, H, W]`` like the
            input (RISE: ``[B, 1, H, W]``, the same map for every channel). CAM methods: ``[B, 1, h, w]`` at the
            layer's resolution.
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


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a :class:`Method` subclass to :data:`METHODS` under ``cls.name``.

    Raises:
        cnnscope.registry.RegistryError: the name is empty or already taken.
    """
    return METHODS.register(cls)


def list_methods(kind: str | None = None) -> list[str]:
    """Registered method names (``kind="pixel"`` or ``"layer"`` to filter), in registration order."""
    return [n for n, c in METHODS.items() if kind is None or c.kind == kind]


def get_method(name: str) -> type[Method]:
    """The :class:`Method` subclass registered as ``name``.

    Raises:
        MethodError: unknown name, with close matches.
    """
    return METHODS.get(name)


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


class Method:
    """Base class of every attribution method: options, targets, eval mode and the result live here.

    A subclass sets the class attributes and implements :meth:`compute`; it is used as
    ``Saliency(model, **options).attribute(images, target=None, layer=None)``.

    Class attributes:
        name: registry name; title: display name; reference: the paper.
        kind: ``"pixel"`` (values at input resolution) or ``"layer"`` (CAM at layer resolution).
        uses_layer: whether ``layer=`` means something (other methods ignore it).
        options: option defaults of this class (merged with its bases and :data:`COMMON_OPTIONS`).
        display: default arguments of :func:`.display.to_heatmap` (and ``cmap``) for this method.
        batch_independent: an image's result does not depend on the other images of the batch.
        default_batch_size: images per forward when ``batch_size=None``, on a CPU and on an accelerator. Batches of
            perturbed copies are small on a CPU, where many small batches run faster than few large ones (they stay
            in the caches); gradient methods override it.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    kind: ClassVar[str] = "pixel"
    uses_layer: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}
    display: ClassVar[dict[str, Any]] = {"sign": "absolute", "reduce": "max"}
    batch_independent: ClassVar[bool] = True
    default_batch_size: ClassVar[dict[str, int]] = {"cpu": 4, "gpu": 32}

    def __init__(self, model: ModelLike, **options: Any) -> None:
        self.model = as_model(model)
        self.module = self.model.module
        defaults = self.defaults()
        for key in options:
            if key not in defaults:
                raise MethodError(unknown(f"option of method {self.name!r}", key, defaults))
        self.opts: dict[str, Any] = {**defaults, **options}
        bs = self.opts["batch_size"]
        if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
            raise MethodError(f"{self.name}: batch_size (images per forward) must be a positive int or None, got "
                              f"{bs!r}")
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

    def batch_size(self, x: torch.Tensor) -> int:
        """Images per forward for batches on ``x``'s device: the ``batch_size`` option, else
        :attr:`default_batch_size` for that device."""
        d = self.default_batch_size
        return resolve_batch_size(self.opts["batch_size"], x.device, cpu=d["cpu"], gpu=d["gpu"])

    def attribute(self, images: object, *, target: object = None, layer: str | None = None) -> Attribution:
        """Explain ``target`` for each image.

        Args:
            images: anything :meth:`cnnscope.LoadedModel.batch` takes (a model-space tensor, pictures, paths).
            target: ``None``/"top", class index, label, list of those (one per image), a callable
                ``outputs -> Tensor[B]`` or a :class:`cnnscope.Unit`.
            layer: the layer of CAM methods (automatic when ``None``); ignored by pixel methods.

        Shape:
            - images: ``[B, C, H, W]``
            - values: ``[B, C, H, W]`` (pixel methods) or ``[B, 1, h, w]`` (CAMs).
        """
        x = self.model.batch(images)
        tgt = parse_target(target, x.shape[0], self.model)
        self.extra = {}
        mode = evaluating(self.module) if self.opts["eval_mode"] else nullcontext()
        with mode, Scorer(self.module, tgt, eval_mode=self.opts["eval_mode"],
                          channels_last=bool(self.opts["channels_last"])) as scorer:
            layer_name, note = self.resolve_layer(x, layer) if self.uses_layer else (None, None)
            values = self.compute(x, scorer, layer_name)
            if not tgt.bound:
                scorer.bind_clean(x, self.batch_size(x))
        return Attribution(values=values.detach(), method=self.name, layer=layer_name, target=tgt.class_list(),
                           spec=self._spec(x, values, tgt, layer_name, note), scores=tgt.clean)

    def _spec(self, x: torch.Tensor, values: torch.Tensor, tgt: Target, layer: str | None, note: str | None
              ) -> dict:
        opts = {k: v for k, v in self.opts.items() if k not in ("progress",)}
        return {"method": self.name, "title": self.title, "reference": self.reference, "kind": self.kind,
                "options": _json_safe(opts), "target": tgt.spec(), "layer": layer, "layer_choice": note,
                "input_shape": list(x.shape), "values_shape": list(values.shape),
                "eval_mode": bool(self.opts["eval_mode"]), "display": dict(self.display), **_json_safe(self.extra)}

    def resolve_layer(self, x: torch.Tensor, layer: str | None) -> tuple[str | None, str | None]:
        """``(layer name, how it was chosen)`` for methods that use a layer (overridden by CAMs)."""
        return layer, "given" if layer else None

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        """The raw attributions of the clean batch ``x`` (subclasses implement this)."""
        raise NotImplementedError


def attribute(model: ModelLike, images: object, method: str, *, target: object = None, layer: str | None = None,
              **options: Any) -> Attribution:
    """Explain ``target`` for ``images`` with the method registered as ``method``.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module`` (wrapped by :func:`cnnscope.as_model`: ImageNet labels for
            1000 outputs).
        images: anything :meth:`cnnscope.LoadedModel.batch` takes: a ``[B, C, H, W]`` tensor in the model's input
            space, or pictures/paths (resized to the model's input size).
        method: a name from :func:`list_methods` (``"gradcam"``, ``"integrated_gradients"``, ...).
        target: ``None`` (top-1), class index, label, one per image, callable or a :class:`cnnscope.Unit`.
        layer: the CAM layer (automatic when ``None``).
        **options: the method's options (see ``get_method(name).defaults()``), e.g. ``batch_size``.

    Returns:
        An :class:`Attribution` with raw signed values.

    Raises:
        MethodError: unknown method or option (with close matches).
        TargetError: class out of range or negative, unknown label, wrong number of targets.
        LayerError: unknown layer, one a CAM cannot use, or a unit outside its layer.
        ImageError: images of different sizes, of the wrong shape, or not finite.
    """
    m = as_model(model)
    return get_method(method)(m, **options).attribute(images, target=target, layer=layer)
