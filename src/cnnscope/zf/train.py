"""Train a small ZF-style CNN and keep checkpoints, for the feature-evolution figure (Zeiler & Fergus 2013, Fig. 4).

The network is a plain feature stack (conv/ReLU/max-pool) followed by global average pooling and a linear
classifier, so the true deconvnet can project every one of its feature maps. Data come from scikit-learn's
``digits`` (8x8 handwritten digits shipped inside the package, upscaled; nothing is downloaded) or from an image
folder with one sub-folder per class. Everything random (initialisation, split, shuffling) is drawn from
``torch.Generator``\\ s seeded by ``seed``, so a run is reproducible.

Checkpoints are ``.pt`` files holding the architecture, the weights, the epoch, the history so far and the
preprocessing; :func:`load_checkpoint` turns one back into a :class:`~cnnscope.models.LoadedModel`.

Example:
    >>> result = train("digits", epochs=4, checkpoint_epochs=[0, 1, 4], out="runs/digits")
    >>> result.history[-1]["test_accuracy"], result.checkpoints
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batching import chunks, resolve_batch_size, track
from ..capture import evaluating
from ..errors import CnnscopeError, ImageError, ModelError
from ..images import IMAGE_SUFFIXES, load_image, resize, to_float
from ..models import LoadedModel, ModelLike, as_model, wrap
from ..models.registry import read_checkpoint
from ..outputs import atomic_path

FORMAT = "cnnscope-zf-smallconvnet-1"


class SmallConvNet(nn.Module):
    """A ZF-style convnet: ``features`` (conv-ReLU-maxpool blocks) -> 4x4 average pool -> linear.

    Args:
        in_channels: image channels (1 for digits, 3 for colour folders).
        num_classes: outputs.
        widths: output channels of the conv layers; the first uses a 5x5 kernel, the others 3x3, and every
            conv is followed by a ReLU and a 2x2 max-pool.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for k, w in enumerate(widths):
            ksize = 5 if k == 0 else 3
            layers += [nn.Conv2d(c, w, ksize, padding=ksize // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c * 16, num_classes)
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "widths": list(widths)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-uniform weights and zero biases, drawn from ``generator``."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=generator)
                nn.init.zeros_(m.bias)


@dataclass
class ImageDataset:
    """Images as ``uint8 [N, H, W, 3]`` with integer labels and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    channels: int
    name: str

    def __len__(self) -> int:
        return len(self.labels)


def digits_dataset(size: int = 32) -> ImageDataset:
    """scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), upscaled to ``size`` pixels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = np.clip(np.round(d.images / 16.0 * 255.0), 0, 255).astype(np.uint8)
    imgs = np.stack([resize(np.repeat(g[:, :, None], 3, axis=2), (size, size)) for g in grey])
    return ImageDataset(imgs, d.target.astype(np.int64), [str(i) for i in range(10)], 1, "digits")


def folder_dataset(root: str | Path, size: int = 64) -> ImageDataset:
    """Images from ``root/<class>/*.png|jpg|...`` resized to ``size`` pixels (colour)."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder (expected one sub-folder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    imgs, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                imgs.append(resize(load_image(f), (size, size)))
                labels.append(k)
    if len(classes) < 2 or not imgs:
        raise ImageError(f"{root}: needs at least two class sub-folders with images, found {len(classes)} "
                         f"classes and {len(imgs)} images")
    return ImageDataset(np.stack(imgs), np.asarray(labels, np.int64), classes, 3, root.name)


def get_dataset(source: str | Path | ImageDataset, size: int | None = None) -> ImageDataset:
    """``"digits"``, a folder path, or an :class:`ImageDataset`."""
    if isinstance(source, ImageDataset):
        return source
    if str(source) == "digits":
        return digits_dataset(size or 32)
    return folder_dataset(source, size or 64)


@dataclass
class TrainResult:
    """What :func:`train` produced: the model, per-epoch numbers and the checkpoint files."""

    model: LoadedModel
    history: list[dict]
    checkpoints: dict[int, Path] = field(default_factory=dict)
    test_indices: np.ndarray | None = None


def _loaded(net: SmallConvNet, data: ImageDataset, mean: tuple, std: tuple) -> LoadedModel:
    size = data.images.shape[1]
    m = wrap(net, (size, size), mean, std, labels=data.classes, name=f"smallconvnet-{data.name}")
    return m


def _inputs(model: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """Pictures already at the model's size (``uint8 [B, H, W, 3]``) -> a model-space batch."""
    return model.to_input(to_float(images, device=model.device, dtype=model.dtype))


def accuracy(model: ModelLike, images: np.ndarray, labels: np.ndarray, *, batch_size: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``uint8 [N, H, W, 3]`` images at its input size (eval mode, restored)."""
    m = as_model(model)
    correct = 0
    with torch.no_grad(), evaluating(m.module):
        for sl in chunks(len(labels), resolve_batch_size(batch_size, m.device)):
            logits = m.module(_inputs(m, images[sl]))
            correct += int((logits.argmax(1).cpu().numpy() == labels[sl]).sum())
    return correct / max(1, len(labels))


def train(data: str | Path | ImageDataset = "digits", *, epochs: int = 5, checkpoint_epochs: Sequence[int] = (),
          out: str | Path | None = None, batch_size: int = 32, lr: float = 3e-3, test_fraction: float = 0.2,
          widths: Sequence[int] = (16, 32, 64), size: int | None = None, seed: int = 0,
          device: str | torch.device = "cpu", progress: bool = False,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a :class:`SmallConvNet` with Adam, saving checkpoints at chosen epochs.

    ``train`` creates its model, so it takes ``device=`` (docs/CONVENTIONS.md). ``batch_size`` is the Adam
    mini-batch (images per forward, as everywhere), with a fixed default rather than one chosen by device: it
    changes the trained weights, and a seeded run must give the same model on every device.

    Args:
        data: ``"digits"``, an image folder (one sub-folder per class) or an :class:`ImageDataset`.
        epochs: passes over the training split.
        checkpoint_epochs: epochs after which to save ``out/epoch_NNN.pt`` (``0`` = the initial weights).
        out: folder for the checkpoints (required when ``checkpoint_epochs`` is not empty).
        batch_size, lr: mini-batch size and Adam learning rate.
        test_fraction: share of the images held out for the test accuracy.
        widths: conv widths of the network.
        size: image side (default 32 for digits, 64 for folders).
        seed: seeds the initialisation, the split and the shuffling.
        device: where to train.
        progress: show a progress bar over the batches.
        on_epoch: called with each epoch's record ``{"epoch", "loss", "train_accuracy", "test_accuracy"}``
            (the training accuracy is the running one over the epoch's batches).
    """
    ds = get_dataset(data, size)
    bad = [e for e in checkpoint_epochs if not 0 <= int(e) <= epochs]
    if bad:
        raise CnnscopeError(f"checkpoint epochs {bad} are outside 0..{epochs}")
    if checkpoint_epochs and out is None:
        raise CnnscopeError("give an output folder (out=...) to save checkpoints")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(ds), generator=gen).numpy()
    n_test = max(1, int(round(len(ds) * test_fraction)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    x_all = ds.images[train_idx].astype(np.float64) / 255.0
    mean = (float(x_all.mean()),) if ds.channels == 1 else tuple(float(v) for v in x_all.mean((0, 1, 2)))
    std = (float(x_all.std()),) if ds.channels == 1 else tuple(float(v) for v in x_all.std((0, 1, 2)))
    net = SmallConvNet(ds.channels, len(ds.classes), widths)
    net.reset_parameters(gen)
    net.to(device)
    model = _loaded(net, ds, mean, std)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    saved: dict[int, Path] = {}
    history: list[dict] = []
    if 0 in checkpoint_epochs:
        saved[0] = save_checkpoint(model, Path(out) / "epoch_000.pt", 0, history)  # type: ignore[arg-type]
    steps = (len(train_idx) + batch_size - 1) // batch_size
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(train_idx), generator=gen).numpy()
        total, correct = 0.0, 0
        for sl in track(chunks(len(perm), batch_size), progress, f"epoch {epoch}", total=steps):
            idx = train_idx[perm[sl]]
            x = _inputs(model, ds.images[idx])
            y = torch.as_tensor(ds.labels[idx], device=model.device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        net.eval()
        rec = {"epoch": epoch, "loss": total / len(train_idx), "train_accuracy": correct / len(train_idx),
               "test_accuracy": accuracy(model, ds.images[test_idx], ds.labels[test_idx])}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        if epoch in checkpoint_epochs:
            saved[epoch] = save_checkpoint(model, Path(out) / f"epoch_{epoch:03d}.pt", epoch, history)  # type: ignore[arg-type]
    return TrainResult(model, history, saved, test_idx)


def save_checkpoint(model: LoadedModel, path: str | Path, epoch: int, history: list[dict]) -> Path:
    """Write a :class:`SmallConvNet` checkpoint (architecture, weights, preprocessing, epoch, history)."""
    net = model.module
    if not isinstance(net, SmallConvNet):
        raise ModelError("save_checkpoint() writes SmallConvNet models only")
    path = Path(path)
    with atomic_path(path) as tmp:  # an interrupted save leaves no truncated checkpoint
        torch.save({"format": FORMAT, "config": net.config, "classes": list(model.labels or []),
                    "input_size": list(model.input_size), "mean": list(model.mean), "std": list(model.std),
                    "epoch": int(epoch), "history": list(history), "name": model.name,
                    "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}, tmp)
    return path


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an existing file that looks like a :func:`save_checkpoint` output."""
    p = Path(path)
    return p.is_file() and p.suffix in (".pt", ".pth")


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a :func:`train` checkpoint (eval mode) on ``device``; ``extra["epoch"]`` tells its epoch.

    Raises:
        ModelError: the file is missing or is not a cnnscope training checkpoint.
    """
    p = Path(path)
    ck = read_checkpoint(p)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ModelError(f"{p} is not a checkpoint written by `cnnscope train`")
    cfg = ck["config"]
    net = SmallConvNet(cfg["in_channels"], cfg["num_classes"], cfg["widths"])
    net.load_state_dict(ck["state_dict"])
    net.to(device).eval()
    m = wrap(net, tuple(ck["input_size"]), ck["mean"], ck["std"], labels=ck["classes"] or None, name=ck["name"])
    m.weights = str(p)
    m.extra.update({"epoch": ck["epoch"], "history": ck["history"]})
    return m
