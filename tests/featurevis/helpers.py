"""Tiny models with known weights for the featurevis tests."""

from __future__ import annotations

import math

import torch
from torch import nn

ANGLES = (0.0, 45.0, 90.0, 135.0)


def gabor(angle_deg: float, size: int = 9, period: float = 4.0, sigma: float = 2.5) -> torch.Tensor:
    """A zero-mean oriented grating under a Gaussian envelope, ``[size, size]``."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    a = math.radians(angle_deg)
    u = xx * math.cos(a) + yy * math.sin(a)
    g = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2)) * torch.cos(2 * math.pi * u / period)
    g = g - g.mean()
    return (g / g.norm()).float()


class KnownFilterNet(nn.Module):
    """``relu(conv(x))`` whose 4 filters are gratings at 0/45/90/135 degrees (the same in every colour), then a
    second conv so the first is not the last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 9, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Conv2d(4, 2, 3)
        with torch.no_grad():
            for c, ang in enumerate(ANGLES):
                self.conv.weight[c] = gabor(ang).expand(3, -1, -1)
            torch.manual_seed(0)
            nn.init.normal_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))


class LinearConvNet(nn.Module):
    """One linear 5x5 convolution (no padding) with a fixed random filter per channel: a neuron's objective is
    ``w . patch + b``, maximised over [0, 1] pixels by ``patch = 1[w > 0]``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 3, 5)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NoPadNet(nn.Module):
    """Two unpadded 7x7 convolutions: inputs smaller than 13 pixels cannot pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 7), nn.ReLU(), nn.Conv2d(4, 4, 7), nn.ReLU(),
                                      nn.Conv2d(4, 4, 7), nn.ReLU(), nn.Conv2d(4, 4, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class FixedHeadNet(nn.Module):
    """A conv, then ``flatten`` and a ``Linear`` sized for 16 x 16 inputs only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))
