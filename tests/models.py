"""Tiny CNNs for tests: in-place ReLU, a ReLU module reused per forward, ReLU6, residual adds, non-square input.

Every model is small enough to run in milliseconds and is built deterministically from a seed.
"""

from __future__ import annotations

import torch
from torch import nn


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


class GuidedReLU(torch.autograd.Function):
    """A ReLU with the guided-backprop backward rule, written out independently of cnnscope's (for reference
    computations in tests): the gradient passes where both the input and the incoming gradient are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0)


class InplaceReLUNet(nn.Module):
    """conv-bn-relu(inplace)-maxpool-conv-relu(inplace)-gap-linear."""

    def __init__(self, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    """ResNet BasicBlock: one ``self.relu`` module applied twice, a residual add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class ResidualNet(nn.Module):
    """stem conv + ReLU, two BasicBlocks (reused ReLU), GAP, linear."""

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8)
        self.layer2 = BasicBlock(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.act(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class ReLU6Net(nn.Module):
    """Depthwise-separable style net with ReLU6 (like EfficientNet-Lite/MobileNet)."""

    def __init__(self, num_classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act1 = nn.ReLU6(inplace=True)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.act2 = nn.ReLU6(inplace=True)
        self.pw = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.dw(self.act1(self.conv1(x))))
        return self.head(self.pw(x).mean(dim=(2, 3)))


class OneReLUNet(nn.Module):
    """``y = w2 . relu(W1 x)``: closed forms for guided backprop and deconvnet rules."""

    def __init__(self, n_in: int = 6, n_hidden: int = 5, seed: int = 0, inplace: bool = False,
                 relu6: bool = False) -> None:
        super().__init__()
        seeded(seed)
        self.fc1 = nn.Linear(n_in, n_hidden, bias=False)
        self.act = nn.ReLU6(inplace=inplace) if relu6 else nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(n_hidden, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.mul_(4.0)  # spread pre-activations past 0 and (for ReLU6) past 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


class GapLinearNet(nn.Module):
    """conv features -> global average pool -> linear: Grad-CAM equals CAM (Zhou 2016) here."""

    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class FunctionalReLUNet(nn.Module):
    """A net whose ReLUs are ``torch.relu`` calls (not modules): ReLU rules must refuse it clearly."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


ALL_TINY = {
    "inplace_relu": InplaceReLUNet,
    "residual": ResidualNet,
    "relu6": ReLU6Net,
    "gap_linear": GapLinearNet,
}

#: a non-square input every tiny CNN accepts
NON_SQUARE = (2, 3, 20, 28)
