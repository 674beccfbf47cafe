"""Step filters of the renderer: Gaussian and bilateral blur applied to the image every ``every`` steps.

PytorchRevelio's activation-maximization variants blur the image being optimised after gradient steps (Gaussian
blur after Audun Øygard 2015, bilateral blur after Mike Tyka 2016), with the filter width annealed from a start to
an end value over the run. :class:`GaussianBlur` and :class:`BilateralBlur` do this for the renderer (the image
parameterization applies them); the filters themselves are :mod:`cnnscope.filters`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import MethodError
from ..filters import bilateral_blur, gaussian_blur


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
