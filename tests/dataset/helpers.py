"""Shared pieces of the dataset tests: a tiny wrapped model, in-memory image datasets and brute-force statistics."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnscope.capture import Capture, evaluating
from cnnscope.models import wrap
from tests.models import InplaceReLUNet, ReLU6Net

SIZE = (20, 28)


class RandomImages(Dataset):
    """``n`` reproducible random uint8 photos-like images (smooth noise), as ``(image, label)`` items."""

    def __init__(self, n: int, size: tuple[int, int] = SIZE, seed: int = 0) -> None:
        g = np.random.default_rng(seed)
        low = g.integers(0, 256, size=(n, size[0] // 4 + 1, size[1] // 4 + 1, 3)).astype(np.float64)
        up = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)[:, :size[0], :size[1]]
        noise = g.integers(-30, 30, size=up.shape)
        self.images = np.clip(up + noise, 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i % 3


def tiny(kind: str = "relu6"):
    net = ReLU6Net() if kind == "relu6" else InplaceReLUNet()
    return wrap(net, input_size=SIZE, name=f"tiny-{kind}")


def brute_values(model, images: np.ndarray, layer: str, pre: bool) -> np.ndarray:
    """All values of ``layer`` for every image, ``[N, C, h, w]`` (pre-activation inputs when ``pre``)."""
    x = model.normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    with torch.no_grad(), evaluating(model.module), Capture(model.module, layer, pre_activation=pre) as cap:
        cap.run(x)
    return cap[layer].numpy()


def brute_ranking(values: np.ndarray, k: int, largest: bool = True):
    """Per channel the ``k`` best ``(value, image, y, x)`` by value (then smaller global position first).

    Shape:
        - values: ``[N, C, h, w]``; outputs ``[C, k]`` arrays.
    """
    n, c, h, w = values.shape
    flat = values.transpose(1, 0, 2, 3).reshape(c, -1)
    keys = np.arange(n * h * w)
    out = {"values": [], "ids": [], "ys": [], "xs": []}
    for ch in range(c):
        v = flat[ch]
        order = np.lexsort((keys, -v if largest else v))[:k]
        out["values"].append(v[order])
        out["ids"].append(order // (h * w))
        out["ys"].append((order % (h * w)) // w)
        out["xs"].append(order % w)
    return {key: np.stack(val) for key, val in out.items()}
