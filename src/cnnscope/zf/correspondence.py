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

Boxes are ``(top, left, bottom, right)`` in pixels of each image as given (half-open); the image is masked with
a grey box and only then fitted to the model's input size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..capture import Capture, evaluating
from ..errors import CnnscopeError, ImageError
from ..images import ImageLike
from .common import chunks, deep_layers, image_set, model_space, pixels, progress_bar

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
    """

    layers: list[str]
    names: list[str]
    boxes: list[Box]
    part: dict[str, DeltaStats]
    random: dict[str, DeltaStats]
    random_boxes: list[list[Box]]

    def to_dict(self) -> dict:
        return {"layers": self.layers, "names": self.names, "boxes": [list(b) for b in self.boxes],
                "part": {k: v.to_dict() for k, v in self.part.items()},
                "random": {k: v.to_dict() for k, v in self.random.items()},
                "random_boxes": [[list(b) for b in rep] for rep in self.random_boxes]}


def check_box(box: Sequence[int], shape: tuple[int, ...], where: str) -> Box:
    """Validate a ``(top, left, bottom, right)`` box against an image of ``shape`` ``[H, W, ...]``."""
    if len(box) != 4:
        raise CnnscopeError(f"{where}: a box is (top, left, bottom, right), got {tuple(box)}")
    top, left, bottom, right = (int(v) for v in box)
    h, w = shape[:2]
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


def _features(model, cap: Capture, layers: list[str], arrays: list[np.ndarray], batch_size: int
              ) -> dict[str, torch.Tensor]:
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for sl in chunks(len(arrays), batch_size):
        cap.run(model_space(model, pixels([model.fit_image(a) for a in arrays[sl]], model.device)))
        for n in layers:
            feats[n].append(cap[n].flatten(1).float())
    return {n: torch.cat(v) for n, v in feats.items()}


def correspondence(model, images: Sequence[ImageLike] | Mapping[str, ImageLike], boxes: Sequence[Sequence[int]],
                   layers: Sequence[str] | None = None, n_random: int = 5, seed: int = 0, fill: float = 0.5,
                   batch_size: int = 16, progress: bool = False) -> Correspondence:
    """Measure how consistently masking the same part changes the features of several images.

    Args:
        model: a :class:`~cnnscope.models.LoadedModel` (not modified).
        images: at least two images showing the same kind of object.
        boxes: one ``(top, left, bottom, right)`` box per image, in that image's pixels, around the same part.
        layers: layers to compare (default: the last layer with a spatial map and the penultimate features,
            the paper's layers 5 and 7).
        n_random: repeats of the random-mask baseline (0 to skip it).
        seed: seed of the generator that places the random masks.
        fill: grey level of the masks in [0, 1].
        batch_size: images per forward.
        progress: show a progress bar.

    Raises:
        ImageError: fewer than two images; CnnscopeError: a box count that does not match or a box outside its
            image.
    """
    names, arrays = image_set(images)
    if len(arrays) < 2:
        raise ImageError("the correspondence analysis compares images pairwise; give at least two images")
    if len(boxes) != len(arrays):
        raise CnnscopeError(f"{len(boxes)} boxes for {len(arrays)} images; give one box per image")
    checked = [check_box(b, a.shape, f"image {names[i]!r}") for i, (b, a) in enumerate(zip(boxes, arrays))]
    module = model.module
    chosen = list(layers) if layers else deep_layers(module, model.input_size, len(model.mean))
    gen = torch.Generator().manual_seed(int(seed))  # box placement only; the model's device is not involved
    random_boxes = []
    for _ in range(max(0, int(n_random))):
        rep = []
        for (top, left, bottom, right), a in zip(checked, arrays):
            bh, bw = bottom - top, right - left
            top = int(torch.randint(0, a.shape[0] - bh + 1, (1,), generator=gen))
            left = int(torch.randint(0, a.shape[1] - bw + 1, (1,), generator=gen))
            rep.append((top, left, top + bh, left + bw))
        random_boxes.append(rep)
    bar = progress_bar(1 + len(random_boxes), progress, "correspondence")
    with torch.no_grad(), evaluating(module), Capture(module, chosen, stop_early=True) as cap:
        orig = _features(model, cap, chosen, arrays, batch_size)
        masked = _features(model, cap, chosen, [mask(a, b, fill) for a, b in zip(arrays, checked)], batch_size)
        part = {n: sign_consistency(orig[n] - masked[n]) for n in chosen}
        bar.update(1)
        rand_eps: dict[str, list[torch.Tensor]] = {n: [] for n in chosen}
        for rep in random_boxes:
            feats = _features(model, cap, chosen, [mask(a, b, fill) for a, b in zip(arrays, rep)], batch_size)
            for n in chosen:
                rand_eps[n].append(orig[n] - feats[n])
            bar.update(1)
    bar.close()
    random = {n: sign_consistency(*v) for n, v in rand_eps.items()} if random_boxes else {}
    return Correspondence(chosen, names, checked, part, random, random_boxes)
