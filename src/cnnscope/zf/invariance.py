"""The invariance study of Zeiler & Fergus (2013, Fig. 5): how features and predictions change under transforms.

Each image is vertically translated, scaled or rotated by a sweep of amounts; for every amount the Euclidean
distance between the feature vectors of the original and the transformed image is measured at a few layers
(the paper uses layer 1 and layer 7), together with the probability of the image's true class.

Transforms are a registry (:data:`TRANSFORMS`); each maps a batch ``[B, C, H, W]`` to the same shape, is exactly
the identity at its neutral amount, and fills uncovered pixels by repeating the border. Every output pixel is a
convex combination of input pixels, so a transform commutes with the model's per-channel normalisation: it is
applied to the model-space batch. A new transform is one function decorated with :func:`register_transform`.

Example:
    >>> s = invariance_study(model, images, "rotate", amounts=[0, 45, 90, 180])
    >>> s.distances.shape   # [images, layers, amounts]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture, evaluating
from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from ..registry import Registry
from .common import check_class, class_index, default_layers, image_set


@dataclass(frozen=True)
class Transform:
    """A registered transform: the function, its neutral amount, the unit and the paper-like default sweep."""

    name: str
    fn: Callable[[torch.Tensor, float], torch.Tensor]
    identity: float
    unit: str
    amounts: tuple[float, ...]


#: name -> :class:`Transform`, filled by :func:`register_transform`
TRANSFORMS: Registry[Transform] = Registry("transform")


def register_transform(*, identity: float, unit: str, amounts: Sequence[float]):
    """Decorator: register ``fn(x, amount)`` under its function name as a :class:`Transform`.

    Raises:
        RegistryError: the name is taken.
    """

    def deco(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> Callable[[torch.Tensor, float], torch.Tensor]:
        TRANSFORMS.register(fn.__name__)(Transform(fn.__name__, fn, float(identity), unit,
                                                   tuple(float(a) for a in amounts)))
        return fn

    return deco


@register_transform(identity=0.0, unit="pixels (vertical)", amounts=(-60, -45, -30, -20, -10, 0, 10, 20, 30, 45, 60))
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


@register_transform(identity=1.0, unit="scale factor", amounts=(0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8))
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


@register_transform(identity=0.0, unit="degrees", amounts=range(0, 361, 30))
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


@dataclass
class InvarianceStudy:
    """Distances and probabilities per image and transform amount.

    Attributes:
        transform, unit: which sweep.
        amounts: the transform amounts.
        layers: the layers whose feature vectors are compared.
        names: image names.
        distances: ``[images, layers, amounts]`` Euclidean distance ``||f(x) - f(T_a x)||`` (the sweep's
            numbers are on the CPU).
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
    pre_activation: bool = False

    def to_dict(self) -> dict:
        return {"transform": self.transform, "unit": self.unit, "amounts": self.amounts, "layers": self.layers,
                "names": self.names, "distances": self.distances.tolist(), "norms": self.norms.tolist(),
                "probabilities": self.probabilities.tolist(), "targets": self.targets, "labels": self.labels,
                "pre_activation": self.pre_activation}


def invariance_study(model: ModelLike, images: object, transform: str = "translate", *,
                     amounts: Sequence[float] | None = None, layers: Sequence[str] | None = None,
                     targets: Sequence[int | str] | int | str | None = None, pre_activation: bool = False,
                     batch_size: int | None = None, progress: bool = False) -> InvarianceStudy:
    """Sweep one transform over several images (the paper's Fig. 5 for one column).

    Args:
        model: a model returning ``[B, classes]`` logits (not modified).
        images: the image set: anything :meth:`~cnnscope.models.LoadedModel.batch` takes, or ``name -> image``.
        transform: a name from :data:`TRANSFORMS` (``translate``, ``scale``, ``rotate``, ...).
        amounts: the sweep (default: the transform's paper-like range).
        layers: layers to compare (default: the first conv layer's activation and the penultimate features).
        targets: the true class per image (or one for all); default each image's top-1 on the original.
        pre_activation: compare the inputs of ``layers`` (activation modules; name them, the defaults are not).
        batch_size: transformed images per forward (default by device).
        progress: show a progress bar.
    """
    m = as_model(model)
    spec = TRANSFORMS.get(transform)
    sweep = [float(a) for a in (amounts if amounts is not None else spec.amounts)]
    if not sweep:
        raise CnnscopeError("no transform amounts given")
    names, items = image_set(images)
    module = m.module
    chosen = list(layers) if layers else default_layers(m)
    tgts = targets if isinstance(targets, (list, tuple)) else [targets] * len(items)
    if len(tgts) != len(items):
        raise CnnscopeError(f"{len(tgts)} targets for {len(items)} images")
    dist = torch.zeros(len(items), len(chosen), len(sweep))
    norms = torch.zeros(len(items), len(chosen))
    probs = torch.zeros(len(items), len(sweep))
    classes: list[int] = []
    bs = resolve_batch_size(batch_size, m.device)
    steps = [(i, sl) for i in range(len(items)) for sl in chunks(len(sweep), bs)]
    with torch.no_grad(), evaluating(module), \
            Capture(module, chosen, stop_early=False, pre_activation=pre_activation) as cap:
        ref: list[torch.Tensor] = []
        for i, sl in track(steps, progress, f"invariance {transform}"):
            if sl.start == 0:
                x = m.batch(items[i])
                logits = cap.run(x).float()
                ref = [cap[n].flatten(1).float() for n in chosen]
                tgt = check_class(class_index(m, tgts[i], int(logits.argmax())), logits.shape[1])
                classes.append(tgt)
                norms[i] = torch.stack([r.norm() for r in ref]).cpu()
            out = cap.run(torch.cat([spec.fn(x, a) for a in sweep[sl]])).float().softmax(1)
            probs[i, sl] = out[:, classes[i]].cpu()
            for j, n in enumerate(chosen):
                dist[i, j, sl] = (cap[n].flatten(1).float() - ref[j]).norm(dim=1).cpu()
    return InvarianceStudy(transform, spec.unit, sweep, chosen, names, dist, norms, probs, classes,
                           [m.label(c) for c in classes], bool(pre_activation))
