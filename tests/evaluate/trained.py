"""A small CNN trained in a second on a synthetic task (which colour is the bright square?), for the sanity checks."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def square_data(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with one bright 5x5 square at a random place; the label is the square's colour channel."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    corners = torch.randint(0, size - 5, (n, 2), generator=g)
    for i in range(n):
        top, left = (int(v) for v in corners[i])
        x[i, int(y[i]), top:top + 5, left:left + 5] += 2.0
    return x, y


def train_small_cnn(steps: int = 60, seed: int = 0) -> tuple[SmallCNN, float]:
    """Returns the trained model (eval mode) and its accuracy on fresh data (one thread: tiny ops)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(steps: int, seed: int) -> tuple[SmallCNN, float]:
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = square_data(256, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (32,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    xt, yt = square_data(256, seed=seed + 1)
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return model, acc
