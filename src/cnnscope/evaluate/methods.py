"""Explainers: the attribution methods of :mod:`cnnscope.attribution` (and reference baselines) as callables
``explainer(model, images, targets) -> maps`` for the metrics (``model`` a ``LoadedModel``, ``images`` a
model-space batch ``[B, C, H, W]``, ``targets`` a ``LongTensor[B]``).

An attribution method's map is its display convention (``Attribution.spec["display"]``: e.g. ``max_c |grad|``
for saliency, the positive part for Grad-CAM) *without* the display's outlier clipping, so pixel rankings are
exact. :meth:`MethodExplainer.both` also returns the signed map (same channel reduction, sign kept) for the
sanity checks' signed Spearman correlation.

Baselines (not attribution methods; their maps do not depend on the model):

* ``random``: uniform noise on a 7x7 grid, upsampled bilinearly like a CAM (a smooth random map: it removes
  contiguous regions as real maps do; the reference every method must beat);
* ``random_pixel``: i.i.d. uniform noise per pixel. Deleting scattered pixels is far out of the training
  distribution and collapses the score fast, so this baseline gets deceptively good deletion AUCs (the
  artefact ROAD's imputation was designed against);
* ``center``: a centred Gaussian (sigma = a quarter of the image side), the photographer's bias.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import MethodError, unknown
from ..models import ModelLike
from .common import Explainer, draw, make_generator


class MethodExplainer:
    """An attribution method by registry name, with fixed layer and options.

    Args:
        method: a name of :data:`cnnscope.attribution.METHODS`.
        layer: the CAM layer (automatic when ``None``).
        sign, reduce: override the method's display ``sign``/``reduce`` for the maps.
        **options: method options (``batch_size``, ``n_steps``, ...).

    Raises:
        MethodError: an option the method does not take (checked here, not deep inside a metric).
    """

    def __init__(self, method: str, *, layer: str | None = None, sign: str | None = None,
                 reduce: str | None = None, **options: Any) -> None:
        from ..attribution import METHODS

        cls = METHODS.get(method)
        defaults = cls.defaults()
        for key in options:
            if key not in defaults:
                raise MethodError(unknown(f"option of method {method!r}", key, defaults))
        self.method, self.layer, self.sign, self.reduce, self.options = method, layer, sign, reduce, options

    def __repr__(self) -> str:
        return f"MethodExplainer({self.method!r}, layer={self.layer!r})"

    def attribution(self, model: ModelLike, images: torch.Tensor, targets: torch.Tensor) -> Any:
        from ..attribution import attribute

        return attribute(model, images, self.method, target=[int(t) for t in targets], layer=self.layer,
                         **self.options)

    def _map(self, values: torch.Tensor, display: dict, sign: str | None) -> torch.Tensor:
        from ..attribution import to_heatmap

        raw = to_heatmap(values, sign=sign or self.sign or display.get("sign", "absolute"),
                         reduce=self.reduce or display.get("reduce", "sum"), size=None, outlier_perc=0.0)
        return raw.unsqueeze(1) if raw.ndim == 3 else raw

    def __call__(self, model: ModelLike, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Display-convention maps ``[B, 1, h, w]`` (the metrics upsample them)."""
        a = self.attribution(model, images, targets)
        return self._map(a.values, a.spec.get("display", {}), None)

    def both(self, model: ModelLike, images: torch.Tensor, targets: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(display maps, signed maps)`` from one attribution call."""
        a = self.attribution(model, images, targets)
        display = a.spec.get("display", {})
        return self._map(a.values, display, None), self._map(a.values, display, "all")


class RandomMap:
    """Uniform random maps from a generator seeded once per explainer (reproducible across runs).

    Args:
        seed: the generator's seed.
        cells: grid size of the random values (``[B, cells, cells]``, upsampled by the metrics); ``None`` for
            one value per pixel.
    """

    def __init__(self, seed: int = 0, cells: int | None = 7) -> None:
        self.seed = int(seed)
        self.cells = cells
        self.generator: torch.Generator | None = None

    def __call__(self, model: ModelLike | None, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.generator = self.generator or make_generator(images.device, self.seed)
        h, w = (images.shape[-2], images.shape[-1]) if self.cells is None else (self.cells, self.cells)
        return draw((images.shape[0], h, w), self.generator, images.device, kind="uniform")


class CenterMap:
    """A centred Gaussian, sigma a quarter of each side (the same map for every image)."""

    def __call__(self, model: ModelLike | None, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        ys = (torch.arange(h, device=images.device, dtype=torch.float32) - (h - 1) / 2) / (h / 4)
        xs = (torch.arange(w, device=images.device, dtype=torch.float32) - (w - 1) / 2) / (w / 4)
        g = torch.exp(-0.5 * (ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2))
        return g.expand(images.shape[0], h, w).clone()


#: name -> factory ``(seed) -> explainer`` of the baselines
BASELINES: dict[str, Callable[[int], Explainer]] = {
    "random": lambda seed: RandomMap(seed),
    "random_pixel": lambda seed: RandomMap(seed, cells=None),
    "center": lambda seed: CenterMap(),
}


def available_methods() -> list[str]:
    """Every name :func:`explainer` accepts: the attribution methods, then the baselines."""
    from ..attribution import METHODS

    return list(METHODS) + list(BASELINES)


def explainer(name: str, *, layer: str | None = None, seed: int = 0, **options: Any) -> Explainer:
    """An explainer by name: an attribution method (with ``layer``/options) or a baseline.

    Raises:
        MethodError: unknown name (with close matches) or option.
    """
    if name in BASELINES:
        if options:
            raise MethodError(f"baseline {name!r} takes no options, got {', '.join(options)}")
        return BASELINES[name](seed)
    names = available_methods()
    if name not in names:
        raise MethodError(unknown("method", name, names))
    return MethodExplainer(name, layer=layer, **options)


def explainers(methods: Sequence[str] | Mapping[str, Explainer], *, layer: str | None = None, seed: int = 0,
               options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Explainer]:
    """``name -> explainer`` for method names (``options[name]`` holds per-method options), or a mapping of
    explainers as given."""
    if isinstance(methods, Mapping):
        return dict(methods)
    options = options or {}
    return {n: explainer(n, layer=layer, seed=seed, **options.get(n, {})) for n in dict.fromkeys(methods)}
