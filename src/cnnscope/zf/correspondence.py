"""Correspondence analysis of Zeiler & Fergus (2013, Sec. 5, Table 1): does masking the same part change the
features of different images the same way?

The same object part (an eye, a nose) is masked in each of several images. For image ``i`` and layer ``l`` the
feature change is ``eps_i = x_i - x~_i`` (original minus masked feature vector), and the consistency of the
changes is

    Delta_l = sum over pairs i != j of H(sign(eps_i), sign(eps_j)),

``H`` the Hamming distance. A lower value means the part changes the representation more consistently. Here
``H`` is normalised by the feature length (the fraction of signs that differ), and :class:`DeltaStats` gives the
mean and standard deviation over the unordered image pairs (the numbers of the paper's table) next to the sum
(``total``). The baseline masks a box of the same size at a random place in each image, repeated
``n_random`` times with a seeded generator.

Boxes are ``(top, left, bottom, right)`` in pixels of each image as given (half-open): a picture is masked with
a grey box and only then fitted to the model's input size; a model-space tensor is masked with the same grey in
the model's input space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture, evaluating
from ..errors import CnnscopeError, ImageError
from ..models import ModelLike, as_model
from .common import Item, deep_layers, grey, image_set, item_size

Box = tuple[int, int, int, int]


@dataclass
class DeltaStats:
    """Sign-change consistency at one layer: mean/std of the normalised Hamming distance over image pairs."""

    mean: float
    std: float
    total: float
    pairs: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "total": self.total, "pairs": self.pairs}


@dataclass
class Correspondence:
    """The result of :func:`correspondence`.

    Attributes:
        layers, names: the layers and the images.
        boxes: the part box of each image.
        part: ``layer -> DeltaStats`` for the part masks.
        random: ``layer -> DeltaStats`` for the random masks (pooled over the repeats).
        random_boxes: ``[repeat][image]`` boxes of the baseline.
        pre_activation: whether the inputs of the layers were compared.
    """

    layers: list[str]
    names: list[str]
    boxes: list[Box]
    part: dict[str, DeltaStats]
    random: dict[str, DeltaStats]
    random_boxes: list[list[Box]]
    pre_activation: bool = False

    def to_dict(self) -> dict:
        return {"layers": self.layers, "names": self.names, "boxes": [list(b) for b in self.boxes],
                "part": {k: v.to_dict() for k, v in self.part.items()},
                "random": {k: v.to_dict() for k, v in self.random.items()},
                "random_boxes": [[list(b) for b in rep] for rep in self.random_boxes],
                "pre_activation": self.pre_activation}


def check_box(box: Sequence[int], size: tuple[int, int], where: str) -> Box:
    """Validate a ``(top, left, bottom, right)`` box against an image of ``size`` ``(H, W)``."""
    if len(box) != 4:
        raise CnnscopeError(f"{where}: a box is (top, left, bottom, right), got {tuple(box)}")
    top, left, bottom, right = (int(v) for v in box)
    h, w = size
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise CnnscopeError(f"{where}: box (top={top}, left={left}, bottom={bottom}, right={right}) is empty or "
                            f"lies outside the {h}x{w} image")
    return top, left, bottom, right


def mask(image: np.ndarray, box: Box, fill: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (``uint8 [H, W, 3]``) with ``box`` painted grey."""
    out = image.copy()
    top, left, bottom, right = box
    out[top:bottom, left:right] = int(round(float(fill) * 255))
    return out


def _masked(item: Item, box: Box, fill: float, fill_value: torch.Tensor) -> Item:
    """``item`` with ``box`` grey: a picture in picture units, a model-space tensor with ``fill_value``."""
    if isinstance(item, np.ndarray):
        return mask(item, box, fill)
    top, left, bottom, right = box
    out = item.clone()
    out[:, top:bottom, left:right] = fill_value[0].to(out.device, out.dtype)
    return out


def pair_distances(eps: torch.Tensor) -> torch.Tensor:
    """Normalised Hamming distances between ``sign(eps_i)`` and ``sign(eps_j)`` for every pair ``i < j``.

    Shape:
        - eps: ``[n, D]``; Output: ``[n * (n - 1) / 2]``.
    """
    s = torch.sign(eps)
    return torch.stack([(s[i] != s[j]).float().mean() for i in range(len(s)) for j in range(i + 1, len(s))])


def sign_consistency(*eps_sets: torch.Tensor) -> DeltaStats:
    """:class:`DeltaStats` of one or more sets of feature changes ``[n, D]`` (``n >= 2``; sets are pooled).

    ``total`` is the paper's ``Delta_l`` (sum over ordered pairs ``i != j``), averaged over the sets.
    """
    v = torch.cat([pair_distances(e) for e in eps_sets])
    return DeltaStats(float(v.mean()), float(v.std(unbiased=False)), float(2 * v.sum()) / len(eps_sets), len(v))


def _features(model, cap: Capture, layers: list[str], items: list[Item], batch_size: int
              ) -> dict[str, torch.Tensor]:
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for sl in chunks(len(items), batch_size):
        cap.run(model.batch(items[sl]))
        for n in layers:
            feats[n].append(cap[n].flatten(1).float())
    return {n: torch.cat(v) for n, v in feats.items()}


def correspondence(model: ModelLike, images: object, boxes: Sequence[Sequence[int]], *,
                   layers: Sequence[str] | None = None, n_random: int = 5, seed: int = 0, fill: float = 0.5,
                   pre_activation: bool = False, batch_size: int | None = None, progress: bool = False
                   ) -> Correspondence:
    """Measure how consistently masking the same part changes the features of several images.

    Args:
        model: any image model (not modified).
        images: at least two images showing the same kind of object (anything
            :meth:`~cnnscope.models.LoadedModel.batch` takes, or ``name -> image``).
        boxes: one ``(top, left, bottom, right)`` box per image, in that image's pixels, around the same part.
        layers: layers to compare (default: the last layer with a spatial map and the penultimate features,
            the paper's layers 5 and 7).
        n_random: repeats of the random-mask baseline (0 to skip it).
        seed: seed of the generator that places the random masks.
        fill: grey level of the masks in [0, 1] picture units.
        pre_activation: compare the inputs of ``layers`` (activation modules; name them, the defaults are not).
        batch_size: images per forward (default by device).
        progress: show a progress bar.

    Raises:
        ImageError: fewer than two images; CnnscopeError: a box count that does not match or a box outside its
            image.
    """
    m = as_model(model)
    fill_value = grey(m, fill)
    names, items = image_set(images)
    if len(items) < 2:
        raise ImageError("the correspondence analysis compares images pairwise; give at least two images")
    if len(boxes) != len(items):
        raise CnnscopeError(f"{len(boxes)} boxes for {len(items)} images; give one box per image")
    sizes = [item_size(it) for it in items]
    checked = [check_box(b, sz, f"image {names[i]!r}") for i, (b, sz) in enumerate(zip(boxes, sizes))]
    module = m.module
    chosen = list(layers) if layers else deep_layers(m)
    gen = torch.Generator().manual_seed(int(seed))  # box placement only; the model's device is not involved
    random_boxes = []
    for _ in range(max(0, int(n_random))):
        rep = []
        for (top, left, bottom, right), (h, w) in zip(checked, sizes):
            bh, bw = bottom - top, right - left
            top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
            rep.append((top, left, top + bh, left + bw))
        random_boxes.append(rep)
    bs = resolve_batch_size(batch_size, m.device)

    def masked(rep: list[Box]) -> list[Item]:
        return [_masked(it, b, fill, fill_value) for it, b in zip(items, rep)]

    rand_eps: dict[str, list[torch.Tensor]] = {n: [] for n in chosen}
    with torch.no_grad(), evaluating(module), \
            Capture(module, chosen, stop_early=True, pre_activation=pre_activation) as cap:
        orig = _features(m, cap, chosen, items, bs)
        part: dict[str, DeltaStats] = {}
        for k in track(range(1 + len(random_boxes)), progress, "correspondence"):
            feats = _features(m, cap, chosen, masked(checked if k == 0 else random_boxes[k - 1]), bs)
            for n in chosen:
                if k == 0:
                    part[n] = sign_consistency(orig[n] - feats[n])
                else:
                    rand_eps[n].append(orig[n] - feats[n])
    random = {n: sign_consistency(*v) for n, v in rand_eps.items()} if random_boxes else {}
    return Correspondence(chosen, names, checked, part, random, random_boxes, bool(pre_activation))
