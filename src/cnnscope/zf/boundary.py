"""Decision-boundary view: the classifier's prediction over a 2-D plane of input space.

The plane is spanned either by three images (``x0 + a (x1 - x0) + b (x2 - x0)``, so the images sit at
``(0, 0)``, ``(1, 0)`` and ``(0, 1)``) or by one image and two directions (``x0 + a d1 + b d2``; random
directions come from a seeded generator and are scaled to the image's norm, so ``a = 1`` is a change as large as
the image itself). Every grid point is classified (many points per forward batch); the map of predicted classes
shows where the decision boundaries cross the plane. The images themselves are classified too
(``mark_classes``), so their own classes are known even when no grid point falls on them.

Example:
    >>> p = decision_plane(model, [cat, dog, car], resolution=41)
    >>> p.classes.shape, p.marks     # [41, 41] class per point; where the images are
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..batching import chunks, resolve_batch_size, track
from ..capture import evaluating
from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from .common import image_set


@dataclass
class DecisionPlane:
    """Predicted class and confidence on a grid of the plane (a sweep: its tensors are on the CPU).

    Attributes:
        alphas, betas: ``[R]`` coordinates along the first and second axis.
        classes: ``[R, R]`` predicted class (row = beta, column = alpha).
        confidence: ``[R, R]`` probability of the predicted class.
        marks: ``(name, alpha, beta)`` of each image on the plane.
        labels: class index -> name for every class that appears on the grid or at a mark.
        mode: ``"images"`` or ``"directions"``.
        mark_classes: the predicted class of each image of ``marks`` (the image itself, not the nearest grid point).
    """

    alphas: torch.Tensor
    betas: torch.Tensor
    classes: torch.Tensor
    confidence: torch.Tensor
    marks: list[tuple[str, float, float]]
    labels: dict[int, str]
    mode: str
    mark_classes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"alphas": self.alphas.tolist(), "betas": self.betas.tolist(), "classes": self.classes.tolist(),
                "confidence": self.confidence.tolist(), "marks": [list(m) for m in self.marks],
                "mark_classes": list(self.mark_classes), "labels": {str(k): v for k, v in self.labels.items()},
                "mode": self.mode}


def plane_points(origin: torch.Tensor, u: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                 ) -> torch.Tensor:
    """The points ``origin + a[k] u + b[k] v``.

    Shape:
        - origin, u, v: ``[C, H, W]``; a, b: ``[N]``; Output: ``[N, C, H, W]``.
    """
    return origin + a.view(-1, 1, 1, 1) * u + b.view(-1, 1, 1, 1) * v


def decision_plane(model: ModelLike, images: object, *, directions: Sequence[torch.Tensor] | None = None,
                   resolution: int = 41, span: tuple[float, float] | None = None, seed: int = 0,
                   batch_size: int | None = None, progress: bool = False) -> DecisionPlane:
    """Classify every point of a plane through input space.

    Args:
        model: a model returning ``[B, classes]`` logits (not modified).
        images: three images (the plane through them), or one image (with ``directions``, or two random ones);
            anything :meth:`~cnnscope.models.LoadedModel.batch` takes, or ``name -> image``.
        directions: two ``[C, H, W]`` tensors in the model's input space (only with one image).
        resolution: grid points per axis.
        span: range of both coordinates (default ``(-0.5, 1.5)`` for three images, ``(-1, 1)`` otherwise).
        seed: seeds the random directions.
        batch_size: points per forward (default by device).
        progress: show a progress bar.

    Raises:
        CnnscopeError: not one or three images, directions given with three images, or badly shaped.
    """
    m = as_model(model)
    names, items = image_set(images)
    if resolution < 2:
        raise CnnscopeError(f"resolution must be at least 2, got {resolution}")
    dev = m.device
    if len(items) not in (1, 3) or (len(items) == 3 and directions is not None):
        raise CnnscopeError(f"a decision plane needs three images, or one image and two directions; got "
                            f"{len(items)} image(s)" + (" and directions" if directions is not None else ""))
    x = m.batch(items)
    if len(items) == 3:
        origin, u, v = x[0], x[1] - x[0], x[2] - x[0]
        marks = [(names[0], 0.0, 0.0), (names[1], 1.0, 0.0), (names[2], 0.0, 1.0)]
        mode, lo_hi = "images", span or (-0.5, 1.5)
    else:
        origin = x[0]
        if directions is None:
            gen = torch.Generator(device=dev).manual_seed(int(seed))
            dirs = [torch.randn(origin.shape, generator=gen, device=dev, dtype=origin.dtype) for _ in range(2)]
            dirs = [d * (origin.norm() / d.norm()) for d in dirs]
        else:
            if len(directions) != 2 or any(tuple(d.shape) != tuple(origin.shape) for d in directions):
                raise CnnscopeError(f"give two directions of shape {tuple(origin.shape)} (the model's input)")
            dirs = [d.to(dev, origin.dtype) for d in directions]
        u, v = dirs
        marks = [(names[0], 0.0, 0.0)]
        mode, lo_hi = "directions", span or (-1.0, 1.0)
    alphas = torch.linspace(float(lo_hi[0]), float(lo_hi[1]), resolution, device=dev, dtype=origin.dtype)
    betas = alphas.clone()
    n = resolution * resolution
    cls_out, conf_out = [], []
    b_all, a_all = torch.meshgrid(betas, alphas, indexing="ij")
    a_all, b_all = a_all.reshape(-1), b_all.reshape(-1)
    bs = resolve_batch_size(batch_size, dev)
    with torch.no_grad(), evaluating(m.module):
        anchors = x if mode == "images" else x[:1]
        mark_classes = [int(c) for c in m.module(anchors).float().argmax(1).tolist()]
        for sl in track(chunks(n, bs), progress, "decision plane", total=-(-n // bs)):
            probs = m.module(plane_points(origin, u, v, a_all[sl], b_all[sl])).float().softmax(1)
            best = probs.max(1)
            cls_out.append(best.indices)
            conf_out.append(best.values)
    classes = torch.cat(cls_out).view(resolution, resolution).cpu()
    present = sorted(set(torch.unique(classes).tolist()) | set(mark_classes))
    labels = {int(c): m.label(int(c)) for c in present}
    return DecisionPlane(alphas.float().cpu(), betas.float().cpu(), classes,
                         torch.cat(conf_out).view(resolution, resolution).cpu(), marks, labels, mode, mark_classes)
