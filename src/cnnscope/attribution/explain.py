"""``explain()``: several methods on a few images, with the prediction, ready for a panel (CLI, web, atlas).

The figure itself is :func:`cnnscope.plot.attribution.panel_figure`; this module only computes (arrays and
tensors, no files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..capture import evaluating, first_tensor, resolve_layers
from ..errors import CnnscopeError, MethodError
from ..models import LoadedModel, ModelLike, as_model
from .base import Attribution, get_method
from .display import display_options, overlay
from .targets import parse_target

DEFAULT_METHODS = ("gradcam", "guided_backprop", "integrated_gradients", "occlusion")


@dataclass
class Explanation:
    """One image explained by several methods.

    Attributes:
        name: the image's display name.
        image: ``uint8 [H, W, 3]``, the image as the model saw it (resized to its input size).
        top: the top-5 predictions ``(index, label, probability)``.
        target: text of the explained target (``"tabby (281)"``).
        target_index: the explained class (``None`` for callable/unit targets).
        target_probability: its softmax probability.
        results: method name -> :class:`Attribution` of this image (batch of one).
        skipped: method name -> why it could not run on this model (``"runs no ReLU ..."``); those methods have
            no entry in :attr:`results`.
    """

    name: str
    image: np.ndarray
    top: list[tuple[int, str, float]]
    target: str
    target_index: int | None
    target_probability: float | None
    results: dict[str, Attribution] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def predicted(self) -> tuple[int, str, float]:
        """``(index, label, probability)`` of the top-1 class."""
        return self.top[0]

    def heatmaps(self, **display: Any) -> dict[str, torch.Tensor]:
        """Method -> ``[H, W]`` display map in [0, 1] at the image's size (method defaults unless overridden)."""
        out = {}
        for name, res in self.results.items():
            opts = {k: v for k, v in display_options(name, **display).items() if k != "cmap"}
            out[name] = res.heatmap(size=self.image.shape[:2], **opts)[0]
        return out

    def overlays(self, *, alpha: float = 0.5, cmap: str | None = None, **display: Any) -> dict[str, np.ndarray]:
        """Method -> ``uint8 [H, W, 3]`` heatmap blended over :attr:`image`."""
        return {name: overlay(self.image, hm, cmap=cmap or display_options(name)["cmap"], alpha=alpha)
                for name, hm in self.heatmaps(**display).items()}

    def to_dict(self) -> dict:
        """JSON summary: prediction, target, per method its layer, options and value statistics, and the skipped
        methods with the reason."""
        methods = {}
        for name, res in self.results.items():
            v = res.values.detach().float()
            methods[name] = {"title": res.spec.get("title"), "layer": res.layer, "layer_choice":
                             res.spec.get("layer_choice"), "shape": list(v.shape), "min": float(v.min()),
                             "max": float(v.max()), "sum": float(v.sum()), "spec": res.spec}
        return {"image": self.name, "top": [{"index": i, "label": lab, "probability": p} for i, lab, p in self.top],
                "target": self.target, "target_index": self.target_index,
                "target_probability": self.target_probability, "methods": methods, "skipped": dict(self.skipped)}


def _is_tensor_batch(images: object) -> bool:
    """Model-space float tensors (one batch or a list of images), as opposed to pictures."""
    if isinstance(images, (list, tuple)):
        return bool(images) and all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in images)
    return isinstance(images, torch.Tensor) and images.is_floating_point()


def explain(model: ModelLike, images: object, *, methods: Sequence[str] = DEFAULT_METHODS, target: object = None,
            layer: str | None = None, names: Sequence[str] | None = None,
            options: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int | None = None,
            progress: bool = False) -> list[Explanation]:
    """Explain each image with every method in ``methods``.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module`` (images are resized to its input size; labels name the
            classes).
        images: one picture or a list (paths, PIL, uint8 arrays; see :func:`cnnscope.images.load_image`), shown
            at the model's input size; or model-space float tensors (anything :meth:`~cnnscope.LoadedModel.batch`
            takes), shown as :meth:`~cnnscope.LoadedModel.deprocess` renders them.
        methods: registered method names.
        target: as for :func:`~cnnscope.attribution.attribute` (one for all, or one per image).
        layer: CAM layer (automatic when ``None``).
        names: display names of the images (default ``image0``, ``image1``, ...).
        options: per-method options, ``{"integrated_gradients": {"n_steps": 32}}``.
        batch_size: images per forward, passed to every method (unless its options set one; ``None``: each
            method's default for the model's device).
        progress: progress bars.

    A method that cannot apply to the model (it raises a :class:`~cnnscope.errors.CnnscopeError` while it runs:
    guided backprop on a network without ReLUs, a CAM on a model without a spatial layer) is skipped, with the
    reason in :attr:`Explanation.skipped`, and the others run. Mistakes in the arguments (unknown method or
    option, a bad target or layer name, bad images) raise before any method runs; any other exception propagates.

    Returns:
        One :class:`Explanation` per image.

    Raises:
        MethodError: unknown method or option, or no method could run (the message gives each reason; when every
            method failed for the same reason, that error itself is raised).
        TargetError, LayerError, ImageError: a bad target, layer name or images.
    """
    m = as_model(model)
    if not methods:
        raise MethodError("explain() needs at least one method")
    for name in methods:
        get_method(name)
    if _is_tensor_batch(images):
        x = m.batch(images)
        shown = list(m.deprocess(x).reshape(x.shape[0], x.shape[2], x.shape[3], 3))
    else:
        shown = [m.fit_image(it) for it in (images if isinstance(images, (list, tuple)) else [images])]
        x = m.fitted_batch(shown)  # fitted once: the maps are drawn on exactly what the model saw
    names = list(names) if names is not None else [f"image{i}" for i in range(len(shown))]
    if len(names) != len(shown):
        raise CnnscopeError(f"got {len(names)} names for {len(shown)} images")
    with torch.no_grad(), evaluating(m.module):
        logits = first_tensor(m.module(x))
    probs = logits.float().softmax(dim=1) if logits is not None and logits.ndim == 2 else None
    runners = {name: get_method(name)(m, **{"batch_size": batch_size, "progress": progress,
                                            **dict((options or {}).get(name, {}))})
               for name in methods}  # every option is checked before the first method runs
    _check_target_and_layer(m, target, layer, len(shown), logits)
    results: dict[str, Attribution] = {}
    failures: dict[str, CnnscopeError] = {}
    for name, run in runners.items():
        try:
            results[name] = run.attribute(x, target=target, layer=layer)
        except CnnscopeError as err:  # the method cannot apply to this model: skip it, say why
            failures[name] = err
    if not results:
        reasons = {str(e) for e in failures.values()}
        if len(reasons) == 1:
            raise next(iter(failures.values()))
        raise MethodError("no method could explain these images: "
                          + "; ".join(f"{k}: {e}" for k, e in failures.items()))
    skipped = {k: str(e) for k, e in failures.items()}
    out = []
    for i, (name, img) in enumerate(zip(names, shown)):
        top: list[tuple[int, str, float]] = []
        if probs is not None:
            vals, idx = probs[i].topk(min(5, probs.shape[1]))
            top = [(int(k), m.label(int(k)), float(p)) for p, k in zip(vals.cpu(), idx.cpu())]
        first = next(iter(results.values()))
        cls = None if first.target is None else first.target[i]
        tdesc = first.spec["target"].get("labels", [None] * len(shown))
        text = tdesc[i] if tdesc else None
        if text is None:
            t = first.spec["target"]
            text = f"unit {t['layer']} channel {t['channel']}" if t.get("kind") == "unit" else str(t.get("name"))
        out.append(Explanation(name=name, image=img, top=top, target=text, target_index=cls,
                               target_probability=None if cls is None or probs is None else float(probs[i, cls]),
                               results={meth: r.select(i) for meth, r in results.items()}, skipped=dict(skipped)))
    return out


def _check_target_and_layer(m: LoadedModel, target: object, layer: str | None, n: int, logits: object) -> None:
    """Raise the argument errors every method would raise (so they stop the call rather than skip each method)."""
    if layer is not None:
        resolve_layers(m.module, layer)
    tgt = parse_target(target, n, m)
    if tgt.kind == "class":
        tgt.bind(logits, {})
    elif tgt.kind == "unit":
        resolve_layers(m.module, tgt.unit.layer)
