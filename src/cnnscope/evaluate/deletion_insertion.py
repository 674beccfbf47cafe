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

Every perturbed image of every curve is generated on the fly and evaluated in batches of at most ``max_batch``
images (curves of several images share batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CnnscopeError
from .common import (
    ClassScorer,
    MapsLike,
    TargetLike,
    auc,
    check_images,
    chunks,
    compute_maps,
    inference,
    pixel_ranks,
    progress_bar,
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
        fractions: ``[T]`` fraction of pixels changed at each point (0 to 1).
        scores: ``[B, T]`` class score at each point.
        auc: ``[B]`` area under each curve (trapezoid rule on [0, 1]).
        targets: ``[B]`` class scored per image.
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


def perturbation_curves(module: nn.Module, start: torch.Tensor, finish: torch.Tensor, ranks: torch.Tensor,
                        targets: torch.Tensor, step: int, *, softmax: bool = True, max_batch: int = 64,
                        progress: bool = False, desc: str = "curve") -> tuple[torch.Tensor, torch.Tensor]:
    """Score images that go from ``start`` to ``finish``, pixels switching in rank order.

    Point ``t`` of image ``i`` takes its ``n_t`` first-ranked pixels (all channels) from ``finish[i]`` and the
    rest from ``start[i]``. Deletion is (``start`` = image, ``finish`` = substrate), insertion the reverse.
    The (image, point) pairs are streamed in batches of ``max_batch``; call inside :func:`inference`.

    Shape:
        - start, finish: ``[B, C, H, W]``; ranks: ``[B, H*W]`` (0 = first to switch); targets: ``[B]``.
        - Output: ``(fractions [T], scores [B, T])``.
    """
    b, _, h, w = start.shape
    counts = curve_points(h * w, step, start.device)
    t_len = counts.numel()
    scorer = ClassScorer(module, softmax=softmax, max_batch=max_batch)
    out = torch.empty(b * t_len, device=start.device, dtype=torch.float32)
    pieces = list(chunks(b * t_len, max_batch))
    for s, e in progress_bar(pieces, len(pieces), progress, desc):
        pair = torch.arange(s, e, device=start.device)
        img, point = pair // t_len, pair % t_len
        switched = (ranks[img] < counts[point].unsqueeze(1)).view(e - s, 1, h, w)
        batch = torch.where(switched, finish[img], start[img])
        out[s:e] = scorer(batch, targets[img])
    return counts.double().div(h * w), out.view(b, t_len)


def _curve(kind: str, module: nn.Module, x: torch.Tensor, maps: MapsLike, target: TargetLike, step: int,
           substrate: str | Substrate | torch.Tensor, rise_substrate: str, softmax: bool, max_batch: int,
           progress: bool) -> CurveResult:
    x = check_images(x)
    label, fn = get_substrate(substrate)
    targets = resolve_targets(module, x, target, max_batch)
    saliency = compute_maps(maps, module, x, targets, max_batch)
    ranks = pixel_ranks(saliency)
    with inference(module):
        base = fn(x)
        if base.shape != x.shape:
            raise CnnscopeError(f"substrate {label!r} returned shape {tuple(base.shape)} for images of shape "
                                f"{tuple(x.shape)}")
        start, finish = (x, base) if kind == "deletion" else (base, x)
        fractions, scores = perturbation_curves(module, start, finish, ranks, targets, step, softmax=softmax,
                                                max_batch=max_batch, progress=progress, desc=kind)
    protocol = "RISE" if (step == RISE_STEP and label == rise_substrate and softmax) else "custom"
    return CurveResult(kind=kind, fractions=fractions, scores=scores, auc=auc(scores.double(), fractions).float(),
                       targets=targets, step=step, substrate=label, protocol=protocol)


def deletion(module: nn.Module, x: torch.Tensor, maps: MapsLike, *, target: TargetLike = None,
             step: int = RISE_STEP, substrate: str | Substrate | torch.Tensor = "zero", softmax: bool = True,
             max_batch: int = 64, progress: bool = False) -> CurveResult:
    """Deletion curve: remove the most salient pixels first; a faithful map makes the score drop fast.

    Lower AUC is better.

    Args:
        module: a classifier returning ``[B, classes]`` logits; used in temporary eval mode, not modified.
        x: model-space images.
        maps: saliency maps (any resolution, upsampled bilinearly) or an explainer
            ``explainer(module, x, targets) -> maps``.
        target: ``None`` for each image's top-1 class, or class indices.
        step: pixels removed per step (RISE: 224).
        substrate: ``"zero"`` (RISE), ``"mean"``, ``"blur"``, ``"blur_strong"``, a function or a tensor.
        softmax: score the softmax probability (RISE) or, if ``False``, the raw logit.
        max_batch: most perturbed images per forward pass.
        progress: show a progress bar.

    Shape:
        - x: ``[B, C, H, W]``; maps: ``[B, h, w]``, ``[B, 1, h, w]`` or one ``[h, w]`` map for all images.
        - Output: :class:`CurveResult` with ``scores [B, T]``, ``T = ceil(H*W / step) + 1``.
    """
    return _curve("deletion", module, x, maps, target, step, substrate, "zero", softmax, max_batch, progress)


def insertion(module: nn.Module, x: torch.Tensor, maps: MapsLike, *, target: TargetLike = None,
              step: int = RISE_STEP, substrate: str | Substrate | torch.Tensor = "blur", softmax: bool = True,
              max_batch: int = 64, progress: bool = False) -> CurveResult:
    """Insertion curve: restore the most salient pixels first onto a blurred copy; higher AUC is better.

    Arguments as :func:`deletion`; the default substrate is RISE's blur (kernel 11, sigma 5).
    """
    return _curve("insertion", module, x, maps, target, step, substrate, "blur", softmax, max_batch, progress)
