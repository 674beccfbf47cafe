"""Deletion and insertion curves and their AUC (Petsiuk, Das & Saenko, *RISE*, BMVC 2018).

The protocol is frozen to the paper's reference setting unless an option says otherwise:

* score: softmax probability of the image's top-1 class (on the unperturbed image) or of a given class;
* pixels ranked by the saliency map upsampled (bilinear) to the input size, most salient first, ties in raster
  order;
* ``step=224`` pixels change per step, so a 224x224 input gives 224 steps and 225 points (0 to 100 %);
* deletion: pixels are replaced by zero in the model's normalised input space (``substrate="zero"``);
* insertion: starts from a Gaussian-blurred copy (kernel 11, sigma 5; ``substrate="blur"``) and restores the
  original pixels;
* AUC by the trapezoid rule on a [0, 1] axis of the fraction of pixels changed.

Every perturbed image of every curve is generated on the fly and evaluated ``batch_size`` images at a time
(curves of several images share batches). The per-image results (``scores``, ``auc``, ``targets``) are on the
model's device, the x axis ``fractions`` on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..batching import chunks, track
from ..errors import CnnscopeError
from ..models import LoadedModel, ModelLike, as_model
from .common import (
    ClassScorer,
    MapsLike,
    TargetLike,
    auc,
    compute_maps,
    inference,
    perturbed_batch_size,
    pixel_ranks,
    resolve_targets,
)
from .substrates import Substrate, get_substrate

#: the RISE reference step for 224x224 inputs
RISE_STEP = 224


@dataclass
class CurveResult:
    """One kind of curve for a batch of images.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: ``[T]`` fraction of pixels changed at each point (0 to 1), float64 on the CPU.
        scores: ``[B, T]`` class score at each point (model's device).
        auc: ``[B]`` area under each curve (trapezoid rule on [0, 1]; model's device).
        targets: ``[B]`` class scored per image (model's device).
        step: pixels changed per step.
        substrate: label of the substrate used (``"zero"``, ``"blur"``, ...).
        protocol: ``"RISE"`` when every setting matches the reference protocol, else ``"custom"``.
    """

    kind: str
    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    targets: torch.Tensor
    step: int
    substrate: str
    protocol: str


def curve_points(num_pixels: int, step: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixels changed at each point: ``0, step, 2*step, ..., num_pixels``. Shape: ``[T]``."""
    if step < 1:
        raise CnnscopeError(f"step must be at least 1 pixel, got {step}")
    n_steps = math.ceil(num_pixels / step)
    return (torch.arange(n_steps + 1, device=device) * step).clamp(max=num_pixels)


def _switch_curves(module: nn.Module, start: torch.Tensor, finish: torch.Tensor, ranks: torch.Tensor,
                   targets: torch.Tensor, step: int, softmax: bool, batch_size: int, progress: bool, desc: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Score images that go from ``start`` to ``finish``, pixels switching in rank order.

    Point ``t`` of image ``i`` takes its ``n_t`` first-ranked pixels (all channels) from ``finish[i]`` and the
    rest from ``start[i]``. Deletion is (``start`` = image, ``finish`` = substrate), insertion the reverse.
    The (image, point) pairs are streamed ``batch_size`` at a time; call inside :func:`.common.inference`.

    Shape:
        - start, finish: ``[B, C, H, W]``; ranks: ``[B, H*W]`` (0 = first to switch); targets: ``[B]``.
        - Output: ``(fractions [T], scores [B, T])``.
    """
    b, _, h, w = start.shape
    counts = curve_points(h * w, step, start.device)
    t_len = counts.numel()
    scorer = ClassScorer(module, softmax, batch_size)
    out = torch.empty(b * t_len, device=start.device, dtype=torch.float32)
    pieces = list(chunks(b * t_len, batch_size))
    for s in track(pieces, progress, desc, total=len(pieces)):
        pair = torch.arange(s.start, s.stop, device=start.device)
        img, point = pair // t_len, pair % t_len
        switched = (ranks[img] < counts[point].unsqueeze(1)).view(-1, 1, h, w)
        batch = torch.where(switched, finish[img], start[img])
        out[s] = scorer(batch, targets[img])
    return counts.double().div(h * w), out.view(b, t_len)


def _curve(kind: str, m: LoadedModel, images: object, maps: MapsLike, target: TargetLike, step: int,
           substrate: str | Substrate | torch.Tensor, rise_substrate: str, softmax: bool, batch_size: int | None,
           progress: bool) -> CurveResult:
    x = m.batch(images)
    bs = perturbed_batch_size(batch_size, m.device)
    label, fn = get_substrate(substrate)
    targets = resolve_targets(m, x, target, bs)
    ranks = pixel_ranks(compute_maps(maps, m, x, targets, bs))
    with inference(m.module):
        base = fn(x)
        if base.shape != x.shape:
            raise CnnscopeError(f"substrate {label!r} returned shape {tuple(base.shape)} for images of shape "
                                f"{tuple(x.shape)}")
        start, finish = (x, base) if kind == "deletion" else (base, x)
        fractions, scores = _switch_curves(m.module, start, finish, ranks, targets, step, softmax, bs, progress,
                                           kind)
    protocol = "RISE" if (step == RISE_STEP and label == rise_substrate and softmax) else "custom"
    return CurveResult(kind=kind, fractions=fractions.cpu(), scores=scores,
                       auc=auc(scores.double(), fractions).float(), targets=targets, step=step, substrate=label,
                       protocol=protocol)


def deletion(model: ModelLike, images: object, maps: MapsLike, *, target: TargetLike = None,
             step: int = RISE_STEP, substrate: str | Substrate | torch.Tensor = "zero", softmax: bool = True,
             batch_size: int | None = None, progress: bool = False) -> CurveResult:
    """Deletion curve: remove the most salient pixels first; a faithful map makes the score drop fast.

    Lower AUC is better.

    Args:
        model: a classifier returning ``[B, classes]`` logits (``LoadedModel`` or ``nn.Module``); used in
            temporary eval mode, not modified.
        images: anything :meth:`LoadedModel.batch` takes (a model-space tensor, or pictures).
        maps: saliency maps (any resolution, upsampled bilinearly) or an explainer
            ``explainer(model, images, targets) -> maps``.
        target: ``None`` for each image's top-1 class, or class indices/labels (one, or one per image).
        step: pixels removed per step (RISE: 224).
        substrate: ``"zero"`` (RISE), ``"mean"``, ``"blur"``, ``"blur_strong"``, a function or a tensor.
        softmax: score the softmax probability (RISE) or, if ``False``, the raw logit.
        batch_size: images per forward pass (perturbed images, and images per explainer call); ``None`` picks a
            default by the model's device (:data:`.common.PERTURBED_BATCH`).
        progress: show a progress bar.

    Shape:
        - images: ``[B, C, H, W]``; maps: ``[B, h, w]``, ``[B, 1, h, w]`` or one ``[h, w]`` map for all images.
        - Output: :class:`CurveResult` with ``scores [B, T]``, ``T = ceil(H*W / step) + 1``.
    """
    m = as_model(model)
    return _curve("deletion", m, images, maps, target, step, substrate, "zero", softmax, batch_size, progress)


def insertion(model: ModelLike, images: object, maps: MapsLike, *, target: TargetLike = None,
              step: int = RISE_STEP, substrate: str | Substrate | torch.Tensor = "blur", softmax: bool = True,
              batch_size: int | None = None, progress: bool = False) -> CurveResult:
    """Insertion curve: restore the most salient pixels first onto a blurred copy; higher AUC is better.

    Arguments as :func:`deletion`; the default substrate is RISE's blur (kernel 11, sigma 5).
    """
    m = as_model(model)
    return _curve("insertion", m, images, maps, target, step, substrate, "blur", softmax, batch_size, progress)
