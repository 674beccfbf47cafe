"""Explainers: the attribution methods of :mod:`cnnscope.attribution` (and two reference baselines) as
callables ``explainer(module, x, targets) -> maps [B, H, W]`` for the metrics.

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

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import MethodError, unknown
from .common import draw, make_generator


class MethodExplainer:
    """An attribution method by registry name, with fixed layer and options.

    Args:
        method: a name of :func:`cnnscope.attribution.list_methods`.
        layer: the CAM layer (automatic when ``None``).
        sign, reduce: override the method's display ``sign``/``reduce`` for the maps.
        **options: method options (``max_batch``, ``n_steps``, ...).
    """

    def __init__(self, method: str, layer: str | None = None, sign: str | None = None, reduce: str | None = None,
                 **options: Any) -> None:
        from ..attribution import get_method

        self.cls = get_method(method)
        self.method, self.layer, self.sign, self.reduce, self.options = method, layer, sign, reduce, options
        self.cls(nn.Identity(), **options)  # unknown options fail now, not deep inside a metric

    def __repr__(self) -> str:
        return f"MethodExplainer({self.method!r}, layer={self.layer!r})"

    def attribution(self, module: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> Any:
        from ..attribution import attribute

        return attribute(module, x, self.method, target=[int(t) for t in targets], layer=self.layer,
                         **self.options)

    def _map(self, values: torch.Tensor, display: dict, sign: str | None) -> torch.Tensor:
        from ..attribution import to_heatmap

        raw = to_heatmap(values, sign=sign or self.sign or display.get("sign", "absolute"),
                         reduce=self.reduce or display.get("reduce", "sum"), size=None, outlier_perc=0.0)
        return raw.unsqueeze(1) if raw.ndim == 3 else raw

    def __call__(self, module: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Display-convention maps ``[B, 1, h, w]`` (the metrics upsample them)."""
        a = self.attribution(module, x, targets)
        return self._map(a.values, a.spec.get("display", {}), None)

    def both(self, module: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(display maps, signed maps)`` from one attribution call."""
        a = self.attribution(module, x, targets)
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

    def __call__(self, module: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.generator = self.generator or make_generator(x.device, self.seed, None)
        h, w = (x.shape[-2], x.shape[-1]) if self.cells is None else (self.cells, self.cells)
        return draw((x.shape[0], h, w), self.generator, x.device, kind="uniform")


class CenterMap:
    """A centred Gaussian, sigma a quarter of each side (the same map for every image)."""

    def __call__(self, module: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ys = (torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2) / (h / 4)
        xs = (torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2) / (w / 4)
        g = torch.exp(-0.5 * (ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2))
        return g.expand(x.shape[0], h, w).clone()


#: name -> factory ``(seed) -> explainer`` of the baselines
BASELINES: dict[str, Callable[[int], Callable]] = {
    "random": lambda seed: RandomMap(seed),
    "random_pixel": lambda seed: RandomMap(seed, cells=None),
    "center": lambda seed: CenterMap(),
}


def available_methods() -> list[str]:
    """Every name :func:`explainer` accepts: the attribution methods, then the baselines."""
    from ..attribution import list_methods

    return list(list_methods()) + list(BASELINES)


def explainer(name: str, layer: str | None = None, seed: int = 0, **options: Any) -> Callable:
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


def explainers(names: Sequence[str], layer: str | None = None, seed: int = 0,
               options: dict[str, dict[str, Any]] | None = None) -> dict[str, Callable]:
    """``name -> explainer`` for several names; ``options[name]`` holds per-method options."""
    options = options or {}
    return {n: explainer(n, layer=layer, seed=seed, **options.get(n, {})) for n in names}
