"""Image filters: Gaussian and bilateral blur, as pure functions and as every-k-steps modules.

PytorchRevelio's activation-maximization variants blur the image being optimised after gradient steps (Gaussian
blur after Audun Øygard 2015, bilateral blur after Mike Tyka 2016), with the filter width annealed from a start to
an end value over the run. :class:`GaussianBlur` and :class:`BilateralBlur` do this for the renderer: every
``every`` steps the image is replaced by its filtered version (the image parameterization applies it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MethodError


def _check_image(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MethodError(f"{name} expects images of shape [B, C, H, W], got {shape}")


def gaussian_kernel1d(sigma: float, radius: int | None = None, *, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``[2r+1]`` (``r = ceil(3 sigma)`` unless given)."""
    r = max(1, math.ceil(3.0 * sigma)) if radius is None else int(radius)
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of each channel, with reflect padding (so borders are not darkened).

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, H, W]``
    """
    _check_image(x, "gaussian_blur")
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, radius, device=x.device, dtype=x.dtype)
    r = (k.numel() - 1) // 2
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r < 1:
        return x
    k = k[(k.numel() - 1) // 2 - r:(k.numel() - 1) // 2 + r + 1]
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def bilateral_blur(x: torch.Tensor, sigma_space: float, sigma_color: float, radius: int | None = None
                   ) -> torch.Tensor:
    """Edge-preserving bilateral filter (Tomasi & Manduchi 1998): each pixel becomes the average of its
    ``(2r+1)^2`` neighbours weighted by ``exp(-d^2 / 2 sigma_space^2) * exp(-|I_p - I_q|^2 / 2 sigma_color^2)``,
    with the colour distance taken over all channels jointly. Borders are reflect-padded.

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, H, W]``
    """
    _check_image(x, "bilateral_blur")
    if sigma_space <= 0 or sigma_color <= 0:
        return x
    r = max(1, math.ceil(2.0 * sigma_space)) if radius is None else int(radius)
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r < 1:
        return x
    b, c, h, w = x.shape
    k = 2 * r + 1
    patches = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), k).view(b, c, k * k, h, w)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    space = torch.exp(-(t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) / (2 * sigma_space ** 2)).view(1, k * k, 1, 1)
    color = torch.exp(-((patches - x.unsqueeze(2)) ** 2).sum(1) / (2 * sigma_color ** 2))
    weights = space * color
    return (patches * weights.unsqueeze(1)).sum(2) / weights.sum(1, keepdim=True)


def _schedule(value: float | Sequence[float], name: str) -> tuple[float, float]:
    pair = (float(value), float(value)) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(pair) != 2 or min(pair) < 0:
        raise MethodError(f"{name} must be a non-negative number or a (start, end) pair, got {value!r}")
    return pair  # type: ignore[return-value]


class StepFilter(nn.Module):
    """Base of filters the renderer applies to the image every ``every`` steps (widths annealed linearly).

    Subclasses implement :meth:`apply(x, t)` with ``t`` in [0, 1] the progress of the run.
    """

    def __init__(self, every: int = 1) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise MethodError(f"'every' must be a positive number of steps, got {every!r}")
        self.every = every

    def due(self, step: int) -> bool:
        """Whether the filter runs after 0-based step ``step``."""
        return (step + 1) % self.every == 0

    @staticmethod
    def lerp(pair: tuple[float, float], t: float) -> float:
        return pair[0] + (pair[1] - pair[0]) * t

    def apply(self, x: torch.Tensor, t: float) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, step: int, steps: int) -> torch.Tensor:
        """Filtered ``x`` after 0-based ``step`` of ``steps`` (``x`` itself when not due)."""
        if not self.due(step):
            return x
        return self.apply(x, step / max(1, steps - 1))

    def spec(self) -> dict:
        raise NotImplementedError


class GaussianBlur(StepFilter):
    """Gaussian blur of the image every ``every`` steps; ``sigma`` is a number or a ``(start, end)`` pair."""

    def __init__(self, sigma: float | Sequence[float] = (1.0, 0.3), every: int = 4) -> None:
        super().__init__(every)
        self.sigma = _schedule(sigma, "sigma")

    def apply(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return gaussian_blur(x, self.lerp(self.sigma, t))

    def spec(self) -> dict:
        return {"type": "gaussian_blur", "sigma": list(self.sigma), "every": self.every}


class BilateralBlur(StepFilter):
    """Bilateral blur of the image every ``every`` steps (edges survive, flat regions are smoothed)."""

    def __init__(self, sigma_space: float | Sequence[float] = (1.5, 0.7),
                 sigma_color: float | Sequence[float] = (0.25, 0.1), every: int = 4, radius: int | None = None
                 ) -> None:
        super().__init__(every)
        self.sigma_space = _schedule(sigma_space, "sigma_space")
        self.sigma_color = _schedule(sigma_color, "sigma_color")
        self.radius = radius

    def apply(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return bilateral_blur(x, self.lerp(self.sigma_space, t), self.lerp(self.sigma_color, t), self.radius)

    def spec(self) -> dict:
        return {"type": "bilateral_blur", "sigma_space": list(self.sigma_space),
                "sigma_color": list(self.sigma_color), "every": self.every, "radius": self.radius}
