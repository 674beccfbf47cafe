"""Penalties on the rendered image: ``l1``, ``l2``, ``total_variation``, ``blur``.

Each returns a *positive* magnitude per image, to be subtracted: ``channel(...) - 0.05 * total_variation()``.
They read the untransformed image in [0, 1] (:data:`~cnnscope.featurevis.objectives.INPUT`) and average over
pixels, so a weight means the same at every image size. These are the "frequency penalization" family of the
article (Olah et al. 2017): they suppress high-frequency patterns, and also real sharp edges.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import MethodError
from ..filters import gaussian_blur
from .algebra import INPUT, Acts, Objective, register_objective


class ImagePenalty(Objective):
    """Base of penalties that read the rendered image."""

    requires = (INPUT,)

    def image(self, acts: Acts) -> torch.Tensor:
        return acts[INPUT]


@register_objective
class L1(ImagePenalty):
    """Mean absolute deviation of the pixels from ``constant``."""

    kind = "l1"

    def __init__(self, constant: float = 0.5) -> None:
        self.constant = float(constant)

    def value(self, acts: Acts) -> torch.Tensor:
        return (self.image(acts) - self.constant).abs().flatten(1).mean(1)

    def args(self) -> dict[str, Any]:
        return {"constant": self.constant}


@register_objective
class L2(ImagePenalty):
    """Root mean squared deviation of the pixels from ``constant``."""

    kind = "l2"

    def __init__(self, constant: float = 0.5, epsilon: float = 1e-6) -> None:
        self.constant, self.epsilon = float(constant), float(epsilon)

    def value(self, acts: Acts) -> torch.Tensor:
        return ((self.image(acts) - self.constant) ** 2).flatten(1).mean(1).add(self.epsilon).sqrt()

    def args(self) -> dict[str, Any]:
        return {"constant": self.constant, "epsilon": self.epsilon}


@register_objective
class TotalVariation(ImagePenalty):
    """Anisotropic total variation: mean ``|dx|`` plus mean ``|dy|`` of neighbouring pixels."""

    kind = "total_variation"

    def value(self, acts: Acts) -> torch.Tensor:
        x = self.image(acts)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
        return dx + dy


@register_objective
class Blur(ImagePenalty):
    """``0.5 * mean (x - blur(x))^2`` with the blurred image held fixed: its gradient pulls each pixel towards
    its Gaussian-blurred neighbourhood (Lucid's ``blur_input_each_step``, as a penalty)."""

    kind = "blur"

    def __init__(self, sigma: float = 1.0) -> None:
        if sigma <= 0:
            raise MethodError(f"blur sigma must be positive, got {sigma}")
        self.sigma = float(sigma)

    def value(self, acts: Acts) -> torch.Tensor:
        x = self.image(acts)
        with torch.no_grad():
            target = gaussian_blur(x, self.sigma)
        return 0.5 * ((x - target) ** 2).flatten(1).mean(1)

    def args(self) -> dict[str, Any]:
        return {"sigma": self.sigma}


def l1(constant: float = 0.5) -> Objective:
    """Mean ``|x - constant|`` of the image (subtract it)."""
    return L1(constant)


def l2(constant: float = 0.5, epsilon: float = 1e-6) -> Objective:
    """Root mean squared ``x - constant`` of the image (subtract it)."""
    return L2(constant, epsilon)


def total_variation() -> Objective:
    """Total variation of the image (subtract it)."""
    return TotalVariation()


def blur(sigma: float = 1.0) -> Objective:
    """Distance of the image to its blurred self (subtract it)."""
    return Blur(sigma)
