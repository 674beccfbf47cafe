"""Synthetic models with closed-form answers for the evaluation tests."""

from __future__ import annotations

import torch
from torch import nn


class RegionSumNet(nn.Module):
    """Two logits: ``scale * sum(x * weight) - offset`` and 0, with ``weight = region`` (times ``pattern``).

    The class-0 probability depends on the region's pixels only, so the perfect saliency map is the region's
    indicator. With a +-1 checkerboard ``pattern`` the model is a matched filter that a blur silences.
    """

    def __init__(self, region: torch.Tensor, scale: float = 0.1, offset: float = 0.0,
                 pattern: torch.Tensor | None = None) -> None:
        super().__init__()
        weight = region.float() * (1.0 if pattern is None else pattern.float())
        self.register_buffer("weight", weight)
        self.scale, self.offset = scale, offset
        self.dummy = nn.Parameter(torch.zeros(1))  # a parameter, so device and state checks have something

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).sum(dim=(1, 2, 3)) * self.scale - self.offset + 0 * self.dummy
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def checker(size: int = 16) -> torch.Tensor:
    """A +-1 checkerboard ``[size, size]``."""
    i = torch.arange(size)
    return 1.0 - 2.0 * ((i.view(-1, 1) + i.view(1, -1)) % 2).float()


class ConstantNet(nn.Module):
    """Logits that ignore the input: the curve of any map is the constant softmax probability."""

    def __init__(self, logits: tuple[float, ...] = (1.0, 0.0, -0.5)) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.sum(dim=(1, 2, 3), keepdim=False).unsqueeze(1)


def square_region(size: int = 16, top: int = 4, left: int = 4, side: int = 8) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[top:top + side, left:left + side] = 1
    return m
