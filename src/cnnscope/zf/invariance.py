"""The invariance study of Zeiler & Fergus (2013, Fig. 5): how features and predictions change under transforms.

Each image is vertically translated, scaled or rotated by a sweep of amounts; for every amount the Euclidean
distance between the feature vectors of the original and the transformed image is measured at a few layers
(the paper uses layer 1 and layer 7), together with the probability of the image's true class.

Transforms are a registry (:data:`TRANSFORMS`); each maps images in [0, 1] ``[B, 3, H, W]`` to the same shape,
is exactly the identity at its neutral amount, and fills uncovered pixels by repeating the border.

Example:
    >>> s = invariance_study(model, images, "rotate", amounts=[0, 45, 90, 180])
    >>> s.distances.shape   # [images, layers, amounts]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..capture import Capture, evaluating
from ..errors import CnnscopeError, MethodError, unknown
from ..images import ImageLike
from .common import check_class, chunks, class_index, default_layers, image_set, model_space, pixels, progress_bar


def translate(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Shift images down by ``round(amount)`` pixels (up when negative); exposed rows repeat the edge row.

    Shape:
        - x: ``[B, C, H, W]``; Output: same.
    """
    s = int(round(amount))
    h = x.shape[-2]
    if s == 0:
        return x
    s = max(-h, min(h, s))
    padded = F.pad(x, (0, 0, abs(s), abs(s)), mode="replicate")
    start = abs(s) - s
    return padded[..., start:start + h, :]


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` so that output pixel ``p`` (centred pixel coordinates) reads input pixel ``matrix @ p``."""
    b, _, h, w = x.shape
    d = torch.tensor([w / 2.0, h / 2.0], device=x.device, dtype=x.dtype)
    theta2 = matrix.to(x.device, x.dtype) * d.view(1, 2) / d.view(2, 1)  # D^-1 M D in normalised coordinates
    theta = torch.cat([theta2, torch.zeros(2, 1, device=x.device, dtype=x.dtype)], dim=1)
    grid = F.affine_grid(theta.unsqueeze(0).expand(b, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def scale(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Zoom about the centre by the factor ``amount`` (``> 1`` enlarges); bilinear, border repeated.

    Shape:
        - x: ``[B, C, H, W]``; Output: same.
    """
    if amount <= 0:
        raise CnnscopeError(f"scale factors must be positive, got {amount}")
    if amount == 1.0:
        return x
    return _affine(x, torch.eye(2, dtype=torch.float64) / float(amount))


def rotate(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Rotate about the centre by ``amount`` degrees (counter-clockwise on screen); bilinear, border repeated.

    Shape:
        - x: ``[B, C, H, W]``; Output: same.
    """
    if float(amount) % 360.0 == 0.0:
        return x
    a = math.radians(float(amount))
    c, s = math.cos(a), math.sin(a)
    # screen rows grow downwards, so a counter-clockwise turn on screen reads input at R(+a) p in (x, y) order
    return _affine(x, torch.tensor([[c, -s], [s, c]], dtype=torch.float64))


@dataclass(frozen=True)
class Transform:
    """A registered transform: the function, its neutral amount, the unit and the paper-like default sweep."""

    name: str
    fn: Callable[[torch.Tensor, float], torch.Tensor]
    identity: float
    unit: str
    amounts: tuple[float, ...]


TRANSFORMS: dict[str, Transform] = {
    "translate": Transform("translate", translate, 0.0, "pixels (vertical)",
                           (-60, -45, -30, -20, -10, 0, 10, 20, 30, 45, 60)),
    "scale": Transform("scale", scale, 1.0, "scale factor", (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8)),
    "rotate": Transform("rotate", rotate, 0.0, "degrees", tuple(range(0, 361, 30))),
}


def get_transform(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise MethodError(unknown("transform", name, TRANSFORMS))
    return TRANSFORMS[name]


@dataclass
class InvarianceStudy:
    """Distances and probabilities per image and transform amount.

    Attributes:
        transform, unit: which sweep.
        amounts: the transform amounts.
        layers: the layers whose feature vectors are compared.
        names: image names.
        distances: ``[images, layers, amounts]`` Euclidean distance ``||f(x) - f(T_a x)||``.
        norms: ``[images, layers]`` ``||f(x)||`` (divide by it for a relative change).
        probabilities: ``[images, amounts]`` probability of each image's true class.
        targets, labels: the true class of each image and its name.
    """

    transform: str
    unit: str
    amounts: list[float]
    layers: list[str]
    names: list[str]
    distances: torch.Tensor
    norms: torch.Tensor
    probabilities: torch.Tensor
    targets: list[int]
    labels: list[str]

    def to_dict(self) -> dict:
        return {"transform": self.transform, "unit": self.unit, "amounts": self.amounts, "layers": self.layers,
                "names": self.names, "distances": self.distances.tolist(), "norms": self.norms.tolist(),
                "probabilities": self.probabilities.tolist(), "targets": self.targets, "labels": self.labels}


def invariance_study(model, images: Sequence[ImageLike] | Mapping[str, ImageLike], transform: str = "translate",
                     amounts: Sequence[float] | None = None, layers: Sequence[str] | None = None,
                     targets: Sequence[int | str] | int | str | None = None, batch_size: int = 16,
                     progress: bool = False) -> InvarianceStudy:
    """Sweep one transform over several images (the paper's Fig. 5 for one column).

    Args:
        model: a :class:`~cnnscope.models.LoadedModel` returning ``[B, classes]`` logits (not modified).
        images: the image set.
        transform: a name from :data:`TRANSFORMS` (``translate``, ``scale``, ``rotate``).
        amounts: the sweep (default: the transform's paper-like range).
        layers: layers to compare (default: the first conv layer's activation and the penultimate features).
        targets: the true class per image (or one for all); default each image's top-1 on the original.
        batch_size: transformed images per forward.
        progress: show a progress bar.
    """
    spec = get_transform(transform)
    sweep = [float(a) for a in (amounts if amounts is not None else spec.amounts)]
    if not sweep:
        raise CnnscopeError("no transform amounts given")
    names, arrays = image_set(images)
    fitted = [model.fit_image(a) for a in arrays]
    module, dev = model.module, model.device
    chosen = list(layers) if layers else default_layers(module, model.input_size, len(model.mean))
    tgts = targets if isinstance(targets, (list, tuple)) else [targets] * len(fitted)
    if len(tgts) != len(fitted):
        raise CnnscopeError(f"{len(tgts)} targets for {len(fitted)} images")
    dist = torch.zeros(len(fitted), len(chosen), len(sweep), device=dev)
    norms = torch.zeros(len(fitted), len(chosen), device=dev)
    probs = torch.zeros(len(fitted), len(sweep), device=dev)
    classes: list[int] = []
    bar = progress_bar(len(fitted) * len(sweep), progress, f"invariance {transform}")
    with torch.no_grad(), evaluating(module), Capture(module, chosen, stop_early=False) as cap:
        for i, arr in enumerate(fitted):
            x01 = pixels([arr], dev)
            logits = cap.run(model_space(model, x01)).float()
            ref = [cap[n].flatten(1).float() for n in chosen]
            tgt = check_class(class_index(model, tgts[i], int(logits.argmax())), logits.shape[1])
            classes.append(tgt)
            norms[i] = torch.stack([r.norm() for r in ref])
            for sl in chunks(len(sweep), batch_size):
                batch = torch.cat([spec.fn(x01, a) for a in sweep[sl]])
                out = cap.run(model_space(model, batch)).float().softmax(1)
                probs[i, sl] = out[:, tgt]
                for j, n in enumerate(chosen):
                    dist[i, j, sl] = (cap[n].flatten(1).float() - ref[j]).norm(dim=1)
                bar.update(sl.stop - sl.start)
    bar.close()
    return InvarianceStudy(transform, spec.unit, sweep, chosen, names, dist, norms, probs, classes,
                           [model.label(c) for c in classes])
