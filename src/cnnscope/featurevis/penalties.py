"""Penalties on the rendered image: ``l1``, ``l2``, ``total_variation``, ``blur``.

Each returns a *positive* magnitude per image, to be subtracted: ``channel(...) - 1.0 * total_variation()``.
They read the untransformed image in [0, 1] (:data:`~cnnscope.featurevis.objectives.INPUT`). These are the
"frequency penalization" family of the article (Olah et al. 2017): they suppress high-frequency patterns, and also
real sharp edges.

Normalisation (so that a weight of order 1 acts, at every image size): every penalty is a *mean over pixels* of a
distance measured in 8-bit grey levels (the image times :data:`LEVELS` = 255), and a first-order one (absolute
differences, or the root of a mean square). For ``l1`` and ``total_variation`` the gradient at a pixel is at most a
few ``LEVELS / (H * W)`` whatever the image holds; a unit objective (a channel's mean over its positions) has a
gradient per pixel that also falls as ``1 / (H * W)``, so the balance between the two, and the meaning of a weight,
is the same at every size. The root-mean-square forms (``l2``, ``blur``) keep it for spread-out deviations; on a
deviation confined to a few pixels their gradient there is up to ``LEVELS / sqrt(H * W)`` (docs/featurevis.md).
:data:`DEFAULT_WEIGHT` (1) visibly lowers the high-frequency share of EfficientNet-Lite0 renders at 64 and 128 px.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import MethodError
from ..filters import gaussian_blur
from .algebra import INPUT, Acts, Objective, register_objective

#: penalties measure the image in 8-bit grey levels: values in [0, 1] times this
LEVELS = 255.0
#: the documented weight of a penalty (``channel(...) - DEFAULT_WEIGHT * total_variation()``)
DEFAULT_WEIGHT = 1.0


class ImagePenalty(Objective):
    """Base of penalties that read the rendered image."""

    requires = (INPUT,)

    def image(self, acts: Acts) -> torch.Tensor:
        """The rendered image in grey levels (``[0, LEVELS]``)."""
        return acts[INPUT] * LEVELS


@register_objective
class L1(ImagePenalty):
    """Mean absolute deviation of the pixels from ``constant`` (in [0, 1]), in grey levels."""

    kind = "l1"

    def __init__(self, constant: float = 0.5) -> None:
        self.constant = float(constant)

    def value(self, acts: Acts) -> torch.Tensor:
        return (self.image(acts) - LEVELS * self.constant).abs().flatten(1).mean(1)

    def args(self) -> dict[str, Any]:
        return {"constant": self.constant}


@register_objective
class L2(ImagePenalty):
    """Root mean squared deviation of the pixels from ``constant`` (in [0, 1]), in grey levels."""

    kind = "l2"

    def __init__(self, constant: float = 0.5, epsilon: float = 1e-6) -> None:
        self.constant, self.epsilon = float(constant), float(epsilon)

    def value(self, acts: Acts) -> torch.Tensor:
        return ((self.image(acts) - LEVELS * self.constant) ** 2).flatten(1).mean(1).add(self.epsilon).sqrt()

    def args(self) -> dict[str, Any]:
        return {"constant": self.constant, "epsilon": self.epsilon}


@register_objective
class TotalVariation(ImagePenalty):
    """Anisotropic total variation: mean ``|dx|`` plus mean ``|dy|`` of neighbouring pixels, in grey levels."""

    kind = "total_variation"

    def value(self, acts: Acts) -> torch.Tensor:
        x = self.image(acts)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
        return dx + dy


@register_objective
class Blur(ImagePenalty):
    """Root mean square of ``x - blur(x)`` in grey levels, the blurred image held fixed: its gradient pulls each
    pixel towards its Gaussian-blurred neighbourhood (Lucid's ``blur_input_each_step``, as a penalty)."""

    kind = "blur"

    def __init__(self, sigma: float = 1.0) -> None:
        if sigma <= 0:
            raise MethodError(f"blur sigma must be positive, got {sigma}")
        self.sigma = float(sigma)

    def value(self, acts: Acts) -> torch.Tensor:
        x = self.image(acts)
        with torch.no_grad():
            target = gaussian_blur(x, self.sigma)
        return ((x - target) ** 2).flatten(1).mean(1).add(1e-6).sqrt()

    def args(self) -> dict[str, Any]:
        return {"sigma": self.sigma}


def l1(constant: float = 0.5) -> Objective:
    """Mean ``|x - constant|`` of the image in grey levels (subtract it; weights of order 1)."""
    return L1(constant)


def l2(constant: float = 0.5, epsilon: float = 1e-6) -> Objective:
    """Root mean squared ``x - constant`` of the image in grey levels (subtract it; weights of order 1)."""
    return L2(constant, epsilon)


def total_variation() -> Objective:
    """Total variation of the image in grey levels per pixel (subtract it; weights of order 1)."""
    return TotalVariation()


def blur(sigma: float = 1.0) -> Objective:
    """RMS distance of the image to its blurred self in grey levels (subtract it; weights of order 1)."""
    return Blur(sigma)
