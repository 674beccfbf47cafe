"""Train ZF/AlexNet-style CNNs and keep checkpoints, for the feature-evolution figure (Zeiler & Fergus 2013, Fig. 4)
and the design experiments (:mod:`.diagnose`, :mod:`.ablate`, :mod:`.transfer`).

The network is a :class:`~cnnscope.zf.architecture.ConvNet` built from a
:class:`~cnnscope.zf.architecture.NetSpec` (default: the small digits net, :class:`SmallConvNet`): a plain feature
stack (conv/ReLU/pool) then an average pool and a classifier, so the true deconvnet can project every one of its
feature maps. Data come from scikit-learn's ``digits`` (8x8 handwritten digits shipped inside the package, upscaled;
nothing is downloaded), a folder with one sub-folder per class (torchvision's ImageFolder layout), any labelled
source of :func:`cnnscope.dataset.open_source`, or the sample photos (``samples:N``, one class per photo); the
images are held in memory at the training size. Everything random (initialisation, split, shuffling) is drawn from
``torch.Generator``\\ s seeded by ``seed``, so a run is reproducible.

Checkpoints are ``.pt`` files holding the architecture (the spec), the weights, the epoch (and optimiser step), the
history so far and the preprocessing; :func:`load_checkpoint` turns one back into a
:class:`~cnnscope.models.LoadedModel` (``load_model(path)`` and every command's MODEL do the same).

Example:
    >>> result = train("digits", epochs=4, checkpoint_epochs=[0, 1, 4], out="runs/digits")
    >>> result.history[-1]["test_accuracy"], result.checkpoints
    >>> zf = train("samples:40", spec=NetSpec.zf(fc=(64,), dropout=0.5), size=64, checkpoint_steps=10, out="zf")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import chunks, resolve_batch_size, track
from ..capture import evaluating
from ..errors import CnnscopeError, ImageError, ModelError
from ..images import IMAGE_SUFFIXES, load_image, resize, to_float
from ..models import LoadedModel, ModelLike, as_model, wrap
from ..models.registry import read_checkpoint
from ..outputs import atomic_path
from .architecture import ConvNet, NetSpec, small_spec

FORMAT = "cnnscope-zf-smallconvnet-1"


class SmallConvNet(ConvNet):
    """The small digits network of earlier versions: :class:`~cnnscope.zf.architecture.ConvNet` with
    :func:`~cnnscope.zf.architecture.small_spec` (a 5x5 conv, then 3x3 ones, each followed by ReLU and a 2x2
    max-pool; 4x4 average pool; linear classifier).

    Args:
        in_channels: image channels (1 for digits, 3 for colour folders).
        num_classes: outputs.
        widths: output channels of the conv layers.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__(small_spec(widths), in_channels, num_classes)


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


def source_dataset(spec: object, size: int = 64) -> ImageDataset:
    """A labelled image source of :func:`cnnscope.dataset.open_source` (``classes:FOLDER``, a manifest with a
    ``label`` column, labelled shards, ``hf:PATH`` with a label column, a torchvision dataset object), every image
    resized to ``size`` pixels; images without a label are left out. ``samples:N`` (N random crops of each sample
    photo) is labelled by photo: a small colour task where each class is one photo.

    Raises:
        ImageError: the source has no labels, fewer than two classes, or no readable labelled image.
    """
    from ..dataset.sources import SampleSource, load_or_skip, open_source

    src = open_source(spec)
    if isinstance(src, SampleSource):
        if src.crops < 2:
            raise ImageError(f"{spec}: the sample photos as training data need crops (samples:N with N >= 2, e.g. "
                             "samples:40)")
        classes = list(src.names)
        labels = [i // src.crops for i in range(len(src))]
    else:
        if src.classes is None:
            raise ImageError(f"{spec}: this source has no labels; give class folders (classes:FOLDER or a folder "
                             "of class folders), a manifest with a label column, or 'digits'")
        classes = list(src.classes)
        labels = [src.label_index(i) for i in range(len(src))]
    imgs, kept = [], []
    for i, lab in enumerate(labels):
        if lab < 0:
            continue
        arr = load_or_skip(src, i)
        if isinstance(arr, np.ndarray):
            imgs.append(resize(arr, (size, size)))
            kept.append(lab)
    if len(classes) < 2 or not imgs:
        raise ImageError(f"{spec}: needs at least two classes with readable images, found {len(classes)} classes "
                         f"and {len(imgs)} labelled images")
    return ImageDataset(np.stack(imgs), np.asarray(kept, np.int64), classes, 3, str(spec).replace(":", "-"))


def get_dataset(source: object, size: int | None = None) -> ImageDataset:
    """``"digits"``, a folder with one sub-folder per class (the ImageFolder layout of torchvision datasets), any
    labelled source of :func:`source_dataset`, or an :class:`ImageDataset` (returned as is)."""
    if isinstance(source, ImageDataset):
        return source
    if str(source) == "digits":
        return digits_dataset(size or 32)
    if isinstance(source, (str, Path)):
        text = str(source)
        if Path(text).is_dir() or (":" not in text and text != "samples" and not Path(text).exists() and
                                   not any(ch in text for ch in "*?[{")):
            return folder_dataset(text, size or 64)  # class folders (or one line saying it is not a folder)
    return source_dataset(source, size or 64)


def split_indices(n: int, test_fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of a seeded random split (the first draw of ``generator``)."""
    if not 0.0 < test_fraction < 1.0:
        raise CnnscopeError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = torch.randperm(n, generator=generator).numpy()
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise CnnscopeError(f"{n} images are too few to hold out {n_test} for testing")
    return order[n_test:], order[:n_test]


def statistics(ds: ImageDataset, indices: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the images ``indices`` in [0, 1] (one value for grey data)."""
    x = ds.images[indices].astype(np.float64) / 255.0
    if ds.channels == 1:
        return (float(x.mean()),), (max(float(x.std()), 1e-6),)
    return tuple(float(v) for v in x.mean((0, 1, 2))), tuple(max(float(v), 1e-6) for v in x.std((0, 1, 2)))


@dataclass
class TrainResult:
    """What :func:`train` produced: the model, per-epoch numbers, the checkpoint files and the held-out split.

    ``checkpoints`` maps an epoch to its file; ``step_checkpoints`` maps an optimiser step to its file.
    """

    model: LoadedModel
    history: list[dict]
    checkpoints: dict[int, Path] = field(default_factory=dict)
    test_indices: np.ndarray | None = None
    step_checkpoints: dict[int, Path] = field(default_factory=dict)
    train_indices: np.ndarray | None = None
    spec: NetSpec | None = None


def _loaded(net: ConvNet, data: ImageDataset, mean: tuple, std: tuple) -> LoadedModel:
    size = data.images.shape[1]
    prefix = "smallconvnet" if replace(net.spec, input_size=None) == small_spec(net.spec.widths) else "convnet"
    return wrap(net, (size, size), mean, std, labels=data.classes, name=f"{prefix}-{data.name}")


def _inputs(model: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """Pictures already at the model's size (``uint8 [B, H, W, 3]``) -> a model-space batch."""
    return model.to_input(to_float(images, device=model.device, dtype=model.dtype))


def evaluate_split(model: ModelLike, images: np.ndarray, labels: np.ndarray, *, batch_size: int | None = None
                   ) -> tuple[float, float]:
    """``(top-1 accuracy, mean cross-entropy)`` of ``model`` on ``uint8 [N, H, W, 3]`` images at its input size
    (eval mode, restored)."""
    m = as_model(model)
    correct, loss = 0, 0.0
    with torch.no_grad(), evaluating(m.module):
        for sl in chunks(len(labels), resolve_batch_size(batch_size, m.device)):
            logits = m.module(_inputs(m, images[sl])).float()
            y = torch.as_tensor(labels[sl], device=logits.device)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return correct / max(1, len(labels)), loss / max(1, len(labels))


def accuracy(model: ModelLike, images: np.ndarray, labels: np.ndarray, *, batch_size: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``uint8 [N, H, W, 3]`` images at its input size (eval mode, restored)."""
    return evaluate_split(model, images, labels, batch_size=batch_size)[0]


def _check_shapes(net: ConvNet, channels: int, size: int, device: str | torch.device) -> None:
    """One probe forward, so that a stack that shrinks the image to nothing fails with one line."""
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, channels, size, size, device=device))
    except RuntimeError as exc:
        raise ModelError(f"{size}px images shrink to nothing in this network ({net.spec.describe()}): "
                         f"use a larger size, fewer pooling layers or smaller strides ({str(exc).splitlines()[0]})"
                         ) from None


def train(data: object = "digits", *, spec: NetSpec | None = None, epochs: int = 5,
          checkpoint_epochs: Sequence[int] = (), checkpoint_every: int | None = None,
          checkpoint_steps: int | None = None, out: str | Path | None = None, batch_size: int = 32,
          lr: float = 3e-3, test_fraction: float = 0.2, widths: Sequence[int] | None = None, size: int | None = None,
          seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a :class:`~cnnscope.zf.architecture.ConvNet` with Adam, saving checkpoints along the way.

    ``train`` creates its model, so it takes ``device=`` (docs/CONVENTIONS.md). ``batch_size`` is the Adam
    mini-batch (images per forward, as everywhere), with a fixed default rather than one chosen by device: it
    changes the trained weights, and a seeded run must give the same model on every device.

    Args:
        data: ``"digits"``, a folder with one sub-folder per class, any labelled source (see :func:`get_dataset`)
            or an :class:`ImageDataset`.
        spec: the architecture (default: the small digits network, :func:`small_spec` of ``widths``).
        epochs: passes over the training split.
        checkpoint_epochs: epochs after which to save ``out/epoch_NNN.pt`` (``0`` = the initial weights).
        checkpoint_every: also save after every N-th epoch (and the initial weights).
        checkpoint_steps: also save ``out/step_NNNNNN.pt`` after every N-th optimiser step (and at step 0).
        out: folder for the checkpoints (required when any checkpoint is asked for).
        batch_size, lr: mini-batch size and Adam learning rate.
        test_fraction: share of the images held out for the test numbers.
        widths: conv widths of the default network (only without ``spec``).
        size: image side (default: ``spec.input_size``, else 32 for digits, 64 for other sources).
        seed: seeds the initialisation, the split and the shuffling (the split is the first draw, so every
            architecture trained with one seed on one data set sees the same split).
        device: where to train.
        progress: show a progress bar over the batches.
        on_epoch: called with each epoch's record ``{"epoch", "steps", "loss", "train_accuracy", "test_loss",
            "test_accuracy"}`` (the training numbers are running ones over the epoch's batches).
    """
    if spec is not None and widths is not None:
        raise CnnscopeError("give the conv widths in the spec (spec=NetSpec(widths=...)), not both")
    spec = spec or small_spec(widths or (16, 32, 64))
    ds = get_dataset(data, size or spec.input_size)
    spec = replace(spec, input_size=int(ds.images.shape[1]))  # the checkpoint says the size it was trained at
    wanted = {int(e) for e in checkpoint_epochs}
    bad = sorted(e for e in wanted if not 0 <= e <= epochs)
    if bad:
        raise CnnscopeError(f"checkpoint epochs {bad} are outside 0..{epochs}")
    for name, v in (("checkpoint_every", checkpoint_every), ("checkpoint_steps", checkpoint_steps)):
        if v is not None and v < 1:
            raise CnnscopeError(f"{name} must be >= 1, got {v}")
    if checkpoint_every:
        wanted |= {0, *range(checkpoint_every, epochs + 1, checkpoint_every)}
    if (wanted or checkpoint_steps) and out is None:
        raise CnnscopeError("give an output folder (out=...) to save checkpoints")
    gen = torch.Generator().manual_seed(int(seed))
    train_idx, test_idx = split_indices(len(ds), test_fraction, gen)
    mean, std = statistics(ds, train_idx)
    net = ConvNet(spec, ds.channels, len(ds.classes))
    net.reset_parameters(gen)
    net.to(device)
    _check_shapes(net, ds.channels, ds.images.shape[1], device)
    model = _loaded(net, ds, mean, std)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    saved: dict[int, Path] = {}
    by_step: dict[int, Path] = {}
    history: list[dict] = []
    folder = Path(out) if out is not None else None
    if 0 in wanted:
        saved[0] = save_checkpoint(model, folder / "epoch_000.pt", 0, history)  # type: ignore[operator]
    if checkpoint_steps:
        by_step[0] = save_checkpoint(model, folder / "step_000000.pt", 0, history, step=0)  # type: ignore[operator]
    steps = (len(train_idx) + batch_size - 1) // batch_size
    step = 0
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
            step += 1
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if checkpoint_steps and step % checkpoint_steps == 0:
                by_step[step] = save_checkpoint(model, folder / f"step_{step:06d}.pt",  # type: ignore[operator]
                                                round(step / steps, 4), history, step=step)
        net.eval()
        test_acc, test_loss = evaluate_split(model, ds.images[test_idx], ds.labels[test_idx])
        rec = {"epoch": epoch, "steps": step, "loss": total / len(train_idx),
               "train_accuracy": correct / len(train_idx), "test_loss": test_loss, "test_accuracy": test_acc}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        if epoch in wanted:
            saved[epoch] = save_checkpoint(model, folder / f"epoch_{epoch:03d}.pt", epoch, history)  # type: ignore[operator]
    return TrainResult(model, history, saved, test_idx, by_step, train_idx, spec)


def save_checkpoint(model: LoadedModel, path: str | Path, epoch: float, history: list[dict], *,
                    step: int | None = None) -> Path:
    """Write a :class:`~cnnscope.zf.architecture.ConvNet` checkpoint (architecture, weights, preprocessing, epoch,
    optimiser step, history). A checkpoint taken within an epoch (``step``) has a fractional ``epoch`` (steps done
    / steps per epoch), so the evolution figure places it between the epochs."""
    net = model.module
    if not isinstance(net, ConvNet):
        raise ModelError("save_checkpoint() writes ConvNet models only (the networks of cnnscope.zf.train)")
    path = Path(path)
    with atomic_path(path) as tmp:  # an interrupted save leaves no truncated checkpoint
        torch.save({"format": FORMAT, "config": net.config, "classes": list(model.labels or []),
                    "input_size": list(model.input_size), "mean": list(model.mean), "std": list(model.std),
                    "epoch": int(epoch) if float(epoch).is_integer() else float(epoch),
                    "step": None if step is None else int(step), "history": list(history),
                    "name": model.name,
                    "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}, tmp)
    return path


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an existing file that looks like a :func:`save_checkpoint` output."""
    p = Path(path)
    return p.is_file() and p.suffix in (".pt", ".pth")


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a :func:`train` checkpoint (eval mode) on ``device``; ``extra`` tells its ``epoch``,
    ``step`` (``None`` for an end-of-epoch checkpoint), ``history`` and ``spec`` (a :class:`NetSpec`).

    Raises:
        ModelError: the file is missing or is not a cnnscope training checkpoint.
    """
    p = Path(path)
    ck = read_checkpoint(p)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ModelError(f"{p} is not a checkpoint written by `cnnscope train`")
    cfg = ck["config"]
    spec = NetSpec.from_dict(cfg["spec"]) if "spec" in cfg else small_spec(cfg["widths"])  # older files: widths
    net = ConvNet(spec, cfg["in_channels"], cfg["num_classes"])
    net.load_state_dict(ck["state_dict"])
    net.to(device).eval()
    m = wrap(net, tuple(ck["input_size"]), ck["mean"], ck["std"], labels=ck["classes"] or None, name=ck["name"])
    m.weights = str(p)
    m.extra.update({"epoch": ck["epoch"], "step": ck.get("step"), "history": ck["history"], "spec": spec})
    return m
