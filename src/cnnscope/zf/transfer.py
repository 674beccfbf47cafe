"""Transfer by retraining only a classifier on frozen features (Zeiler & Fergus 2013, Sec. 5.2 and 5.4, Tables
3-6): keep layers 1..k of a trained model fixed, train a new linear softmax classifier on layer k's output for a new
labelled data set, and report the held-out accuracy for each k.

For each chosen layer the model runs once over the new images (eval mode, nothing trained in it); a spatial output
is average-pooled to ``pool`` x ``pool`` and flattened, a ``[B, C]`` output is used as is. The classifier
(``Linear``) is trained with Adam on those features, with a seeded split, initialisation and shuffling. For a
checkpoint of ``cnnscope train`` (:class:`~cnnscope.zf.architecture.ConvNet`) the default layers are the end of
every conv block (after its ReLU and pooling, pooled to the net's own ``head_pool``) and every hidden fully
connected layer (after its ReLU); ``scratch=True`` adds the row of the same architecture trained from random
weights on the new data (the paper's "non-pretrained" row). Other models need ``layers``.

Example:
    >>> t = transfer(load_model("digits/epoch_005.pt"), "classes:letters/", epochs=20)
    >>> [(r.k, r.layer, r.test_accuracy) for r in t.rows]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture
from ..errors import LayerError
from ..models import ModelLike, as_model
from .architecture import ConvNet
from .train import ImageDataset, evaluate_split, get_dataset, split_indices, train


@dataclass
class TransferRow:
    """Layers 1..k frozen, a new classifier on ``layer``'s output (``k`` 0 and layer ``"scratch"``: the whole
    architecture trained on the new data)."""

    k: int
    layer: str
    features: int
    train_accuracy: float
    test_accuracy: float

    def to_dict(self) -> dict:
        return {"k": self.k, "layer": self.layer, "features": self.features, "train_accuracy": self.train_accuracy,
                "test_accuracy": self.test_accuracy}


@dataclass
class Transfer:
    """Rows of a transfer study and its settings."""

    model: str
    data: str
    rows: list[TransferRow]
    settings: dict

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "settings": self.settings,
                "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> tuple[list[tuple], tuple[str, ...]]:
        return ([(r.k if r.layer != "scratch" else "-", r.layer, r.features, f"{r.train_accuracy:.2%}",
                  f"{r.test_accuracy:.2%}") for r in self.rows],
                ("k", "layer (frozen up to)", "features", "train accuracy", "test accuracy"))


def default_layers(module: nn.Module) -> list[str]:
    """The end of every conv block and every hidden fully connected ReLU of a :class:`ConvNet`."""
    if not isinstance(module, ConvNet):
        raise LayerError(f"{type(module).__name__} is not a `cnnscope train` network; name the layers to transfer "
                         "from (layers=[...], CLI --layers)")
    out, i = [], 0
    for pooled in module.spec.pooled():
        i += 3 if pooled else 2
        out.append(f"features.{i - 1}")
    if isinstance(module.classifier, nn.Sequential):
        out += [f"classifier.{j}" for j, m in enumerate(module.classifier) if isinstance(m, nn.ReLU)]
    return out


def frozen_features(model: ModelLike, images: np.ndarray, layer: str, *, pool: int = 1,
                    batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """``layer``'s output for ``uint8 [N, H, W, 3]`` pictures, average-pooled to ``pool`` x ``pool`` and
    flattened (float32, CPU, ``[N, features]``); the model is not modified."""
    m = as_model(model)
    out = []
    with torch.no_grad(), Capture(m.module, layer) as cap:
        for sl in track(chunks(len(images), resolve_batch_size(batch_size, m.device)), progress, layer):
            cap.run(m.batch(images[sl]))
            a = cap[layer]
            if a.ndim == 4:
                a = F.adaptive_avg_pool2d(a, pool)
            out.append(a.flatten(1).float().cpu())
    return torch.cat(out)


def fit_classifier(train_x: torch.Tensor, train_y: torch.Tensor, classes: int, *, epochs: int = 20,
                   batch_size: int = 32, lr: float = 1e-2, generator: torch.Generator,
                   device: str | torch.device = "cpu") -> nn.Linear:
    """A linear softmax classifier trained with Adam on ``device`` on standardised features (mean/std of
    ``train_x`` folded into the layer afterwards, so it takes raw features); draws from ``generator``."""
    train_x, train_y = train_x.to(device), train_y.to(device)
    mu = train_x.mean(0)
    sd = train_x.std(0, unbiased=False).clamp_min(1e-6)
    z = (train_x - mu) / sd
    lin = nn.Linear(z.shape[1], classes)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * 0.01)
        lin.bias.zero_()
    lin.to(device)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(z), generator=generator)
        for sl in chunks(len(z), batch_size):
            idx = perm[sl].to(device)
            loss = F.cross_entropy(lin(z[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():  # lin(z) = W (x - mu) / sd + b
        w = lin.weight / sd
        lin.bias -= w @ mu
        lin.weight.copy_(w)
    return lin


def transfer(model: ModelLike, data: object, *, layers: Sequence[str] | None = None, pool: int | None = None,
             epochs: int = 20, batch_size: int = 32, lr: float = 1e-2, test_fraction: float = 0.2, seed: int = 0,
             scratch: bool = False, scratch_epochs: int | None = None, progress: bool = False,
             on_row: Callable[[TransferRow], None] | None = None) -> Transfer:
    """Accuracy of a new classifier on frozen layers 1..k of ``model`` for a new labelled data set, for each k.

    Args:
        model: the trained model (not modified); its input size and normalisation read the new pictures.
        data: the new labelled data set (see :func:`~cnnscope.zf.train.get_dataset`), loaded at the model's size.
        layers: the layers to put a classifier on, input to output (default for a ConvNet: module docstring).
        pool: side of the average pool of spatial outputs (default: a ConvNet's ``head_pool``, otherwise 1).
        epochs, batch_size, lr: the classifier's training.
        test_fraction, seed: the seeded split (and initialisation, shuffling).
        scratch: also train the model's architecture from random weights on the new data (ConvNet only).
        scratch_epochs: epochs of that run (default ``epochs``).
        progress: progress bars.
        on_row: called with each row once computed.

    Raises:
        LayerError: no layers given for a model that is not a ConvNet.
    """
    m = as_model(model)
    names = list(layers) if layers else default_layers(m.module)
    if pool is None:
        pool = m.module.spec.head_pool if isinstance(m.module, ConvNet) else 1
    ds: ImageDataset = get_dataset(data, max(m.input_size))
    gen = torch.Generator().manual_seed(int(seed))
    train_idx, test_idx = split_indices(len(ds), test_fraction, gen)
    y = torch.as_tensor(ds.labels)
    rows = []
    for k, layer in enumerate(names, 1):
        feats = frozen_features(m, ds.images, layer, pool=pool, progress=progress)
        g = torch.Generator().manual_seed(int(seed) * 7919 + k)
        lin = fit_classifier(feats[train_idx], y[train_idx], len(ds.classes), epochs=epochs, batch_size=batch_size,
                             lr=lr, generator=g, device=m.device)
        with torch.no_grad():
            pred = lin(feats.to(m.device)).argmax(1).cpu()
        row = TransferRow(k, layer, feats.shape[1], float((pred[train_idx] == y[train_idx]).double().mean()),
                          float((pred[test_idx] == y[test_idx]).double().mean()))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    if scratch:
        if not isinstance(m.module, ConvNet):
            raise LayerError("scratch=True retrains the architecture of a `cnnscope train` network only")
        r = train(ds, spec=m.module.spec, epochs=scratch_epochs or epochs, batch_size=batch_size,
                  test_fraction=test_fraction, seed=seed, device=m.device)
        train_acc, _ = evaluate_split(r.model, ds.images[r.train_indices], ds.labels[r.train_indices])
        row = TransferRow(0, "scratch", 0, train_acc, float(r.history[-1]["test_accuracy"]))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "test_fraction": test_fraction, "seed": seed,
                "pool": pool, "images": len(ds), "classes": ds.classes}
    return Transfer(m.weights or m.name, ds.name, rows, settings)
