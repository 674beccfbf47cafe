"""Recipes: named bundles of parameterization + transforms + step filters + optimiser defaults.

======================  ==========================================================================================
``plain``               pixels, no regularisation, normalised gradient ascent (Erhan et al. 2009): shows the
                        high-frequency "adversarial" patterns the article explains
``gaussian_blur``       ``plain`` + Gaussian blur of the image every 4 steps, sigma annealed 1.0 -> 0.3
                        (PytorchRevelio, after Øygard 2015)
``bilateral_blur``      ``plain`` + edge-preserving bilateral blur every 4 steps (PytorchRevelio, after Tyka 2016)
``lucid``               Fourier parameterization with 1/f scaling and decorrelated colour + sigmoid, the standard
                        transforms, Adam lr 0.05 (Olah et al. 2017 / Lucid defaults)
``maco``                phase-only spectrum with a natural-image magnitude, random crops + noise, Adam
                        (Fel et al. 2023)
``class``               ``lucid`` with stronger transforms, rendered at the model's input size for 128 steps:
                        class visualizations (``class_logit``) the model itself classifies as the class
======================  ==========================================================================================

Every part can be overridden per call: ``render(..., recipe="lucid", transforms="none", lr=0.02)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import MethodError
from ..registry import Registry
from .filters import BilateralBlur, GaussianBlur, StepFilter
from .param import PARAMS, ImageParam, make_param
from .transforms import PRESETS, Pipeline, Transform, make_transforms


class NormalizedAscent(torch.optim.Optimizer):
    """Gradient steps of fixed size: each image's gradient is divided by its root mean square, then
    ``p -= lr * g / rms(g)`` (PytorchRevelio's activation-maximization update). The first dimension of every
    parameter indexes the images, so each image is normalised on its own."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.01, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                rms = g.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (g.ndim - 1)))
                p.sub_(group["lr"] * g / (rms + group["eps"]))


#: optimiser classes by name (all take ``(params, lr=...)``); ``OPTIMIZERS.register("name")(cls)`` adds one
OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer", package="cnnscope.featurevis")
for _name, _cls in (("adam", torch.optim.Adam), ("nadam", torch.optim.NAdam), ("sgd", torch.optim.SGD),
                    ("ascent", NormalizedAscent)):
    OPTIMIZERS.register(_name)(_cls)


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    cls = OPTIMIZERS.get(name)
    if not lr > 0:
        raise MethodError(f"the learning rate must be positive, got {lr}")
    return cls(params, lr=lr)


ParamSpec = str | Callable[..., ImageParam]
TransformSpec = str | Pipeline | Sequence[Transform] | None


@dataclass(frozen=True)
class Recipe:
    """A feature-visualization recipe.

    Attributes:
        name: registry name.
        param: parameterization name (see :data:`~cnnscope.featurevis.param.PARAMS`) or a factory
            ``(seeds, size, device) -> ImageParam``.
        param_options: keyword options of the parameterization.
        transforms: preset name (``"standard"``, ``"maco"``, ``"jitter"``, ``"none"``), transforms or a pipeline.
        filters: factory of the step filters (blurs applied to the image every k steps).
        optimizer: optimiser name (see :data:`OPTIMIZERS`).
        lr: learning rate.
        description: one line for docs and the CLI.
        reference: the paper or tool it follows.
        steps: the recipe's number of steps when ``render(steps=None)`` (``None``: the renderer's 512).
        size: the recipe's image size when ``render(size=None)``: pixels, ``(H, W)``, ``"input"`` (the model's
            input size) or ``None`` (the renderer's 128).
    """

    name: str
    param: ParamSpec = "fourier"
    param_options: Mapping[str, Any] = field(default_factory=dict)
    transforms: TransformSpec = "standard"
    filters: Callable[[], list[StepFilter]] = list
    optimizer: str = "adam"
    lr: float = 0.05
    description: str = ""
    reference: str = ""
    steps: int | None = None
    size: int | tuple[int, int] | str | None = None

    def override(self, **changes: Any) -> Recipe:
        """A copy with some parts replaced (``None`` values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "filters" in changes and not callable(changes["filters"]):
            fixed = list(changes["filters"])
            changes["filters"] = lambda: list(fixed)
        if changes:
            return dataclasses.replace(self, name=f"{self.name}*", **changes)
        return self

    def make_param(self, seeds: Sequence[int], size: int | Sequence[int], device: torch.device | str) -> ImageParam:
        if isinstance(self.param, str):
            return make_param(self.param, seeds, size, device=device, **dict(self.param_options))
        made = self.param(seeds, size, device, **dict(self.param_options))
        if not isinstance(made, ImageParam):
            raise MethodError(f"a param factory must return an ImageParam, got {type(made).__name__}")
        return made

    def make_transforms(self) -> Pipeline:
        return make_transforms(self.transforms)

    def make_filters(self) -> list[StepFilter]:
        filters = list(self.filters())
        bad = [type(f).__name__ for f in filters if not isinstance(f, StepFilter)]
        if bad:
            raise MethodError(f"filters must be StepFilter modules (GaussianBlur, BilateralBlur), got {bad}")
        return filters

    def make_optimizer(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, params, self.lr)

    def spec(self) -> dict[str, Any]:
        """JSON description of every part."""
        param = self.param if isinstance(self.param, str) else getattr(self.param, "__name__", repr(self.param))
        transforms = self.transforms if isinstance(self.transforms, str) else self.make_transforms().spec()
        return {"name": self.name, "param": param, "param_options": dict(self.param_options),
                "transforms": transforms, "filters": [f.spec() for f in self.make_filters()],
                "optimizer": self.optimizer, "lr": self.lr, "steps": self.steps,
                "size": list(self.size) if isinstance(self.size, tuple) else self.size}


def _revelio(name: str, filters: Callable[[], list[StepFilter]], description: str, reference: str) -> Recipe:
    return Recipe(name=name, param="pixel", param_options={"activation": "clamp"}, transforms="none",
                  filters=filters, optimizer="ascent", lr=0.01, description=description, reference=reference)


#: recipes by name (their ``name``); :func:`register_recipe` adds one
RECIPES: Registry[Recipe] = Registry("recipe", package="cnnscope.featurevis")


def register_recipe(recipe: Recipe) -> Recipe:
    """Register ``recipe`` under ``recipe.name`` (a name registered twice raises ``RegistryError``)."""
    return RECIPES.register(recipe.name)(recipe)


register_recipe(_revelio("plain", list, "pixels, no regularisation (high-frequency 'adversarial' patterns)",
                         "Erhan et al. 2009; PytorchRevelio activation_maximization"))
register_recipe(_revelio("gaussian_blur", lambda: [GaussianBlur((1.0, 0.3), every=4)],
                         "pixels + Gaussian blur of the image every 4 steps (sigma 1.0 -> 0.3)",
                         "PytorchRevelio; Øygard 2015"))
register_recipe(_revelio("bilateral_blur", lambda: [BilateralBlur((1.5, 0.7), (0.25, 0.1), every=4)],
                         "pixels + bilateral blur of the image every 4 steps (edges survive)",
                         "PytorchRevelio; Tyka 2016"))
register_recipe(Recipe("lucid", param="fourier", param_options={"decay_power": 1.0, "decorrelate": True},
                       transforms="standard", optimizer="adam", lr=0.05,
                       description="Fourier 1/f + decorrelated colour + sigmoid, standard transforms, Adam 0.05",
                       reference="Olah, Mordvintsev, Schubert 2017 (Distill); Lucid"))
register_recipe(Recipe("maco", param="maco", param_options={"magnitude": "photos"}, transforms="maco",
                       optimizer="adam", lr=0.1,
                       description="phase-only spectrum, natural-image magnitude, random crops + noise",
                       reference="Fel et al. 2023 (MACO)"))

register_recipe(Recipe("class", param="fourier", param_options={"decay_power": 1.0, "decorrelate": True},
                       transforms="strong", optimizer="adam", lr=0.05, steps=128, size="input",
                       description="lucid with stronger transforms, at the model's input size, 128 steps: class "
                                   "visualizations the model classifies as the class",
                       reference="Olah, Mordvintsev, Schubert 2017 (Distill); Lucid"))

DEFAULT_RECIPE = "lucid"
#: the default recipe of renders whose every objective is a class logit (``class_logit``)
CLASS_RECIPE = "class"


def get_recipe(recipe: str | Recipe | None) -> Recipe:
    """The recipe called ``recipe`` (``None``: :data:`DEFAULT_RECIPE`), or ``recipe`` itself."""
    if recipe is None:
        return RECIPES.get(DEFAULT_RECIPE)
    if isinstance(recipe, Recipe):
        return recipe
    return RECIPES.get(recipe)


__all__ = ["CLASS_RECIPE", "DEFAULT_RECIPE", "OPTIMIZERS", "PARAMS", "PRESETS", "RECIPES", "NormalizedAscent", "Recipe",
           "get_recipe", "make_optimizer", "register_recipe"]
