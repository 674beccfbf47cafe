"""Shared pieces of the evaluation metrics: maps, targets, batched class scores, pixel ranking, AUC.

Every metric of :mod:`cnnscope.evaluate` takes ``model`` first (a ``LoadedModel`` or an ``nn.Module``), then
``images`` (anything :meth:`LoadedModel.batch` takes) and either saliency maps (tensors/arrays) or an
*explainer*, a callable ``explainer(model, images, targets) -> maps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batching import chunks, resolve_batch_size
from ..capture import evaluating
from ..errors import CnnscopeError
from ..models import LoadedModel

#: ``explainer(model, images, targets) -> maps``: maps of the model-space batch ``images`` ``[B, C, H, W]`` for
#: the classes ``targets`` (``LongTensor[B]``); ``model`` is the :class:`LoadedModel` being evaluated.
Explainer = Callable[[LoadedModel, torch.Tensor, torch.Tensor], torch.Tensor | np.ndarray]
#: saliency maps given directly, or an explainer that computes them.
MapsLike = torch.Tensor | np.ndarray | Explainer
#: ``None`` (the model's top-1 class per image), one class index or label for all images, or one per image.
TargetLike = int | str | Sequence[int | str] | torch.Tensor | None

#: images per forward of the perturbed copies when ``batch_size=None``, on a CPU and on an accelerator. These are
#: forward passes without an autograd graph, so memory is small and one large batch amortises the per-call cost,
#: on a CPU as well.
PERTURBED_BATCH = {"cpu": 64, "gpu": 128}


def perturbed_batch_size(batch_size: int | None, device: torch.device) -> int:
    """``batch_size`` (checked), else :data:`PERTURBED_BATCH` for ``device``."""
    return resolve_batch_size(batch_size, device, cpu=PERTURBED_BATCH["cpu"], gpu=PERTURBED_BATCH["gpu"])


def as_maps(maps: torch.Tensor | np.ndarray, batch: int, size: tuple[int, int], device: torch.device
            ) -> torch.Tensor:
    """Bring saliency maps to ``[B, H, W]`` float32 at the input size (bilinear upsampling) on ``device``.

    Multi-channel maps (``[B, C, h, w]`` with ``C > 1``, e.g. raw input gradients) are summed over channels;
    pass single-channel maps for any other reduction.

    Shape:
        - maps: ``[h, w]`` (the same map for every image), ``[B, h, w]``, ``[B, 1, h, w]`` or ``[B, C, h, w]``.
        - Output: ``[B, H, W]`` with ``(H, W) = size``.
    """
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    if not isinstance(maps, torch.Tensor):
        raise CnnscopeError(f"saliency maps must be a tensor or array, got {type(maps).__name__}")
    m = maps.detach().to(device=device, dtype=torch.float32)
    if m.ndim == 2:  # one map for every image
        m = m.unsqueeze(0).expand(batch, -1, -1)
    if m.ndim == 4:
        m = m.sum(dim=1)
    if m.ndim != 3:
        raise CnnscopeError(f"saliency maps must be [h, w], [B, h, w] or [B, C, h, w], got {tuple(maps.shape)}")
    if m.shape[0] != batch:
        raise CnnscopeError(f"got {m.shape[0]} saliency maps for {batch} images")
    if not torch.isfinite(m).all():
        raise CnnscopeError("saliency maps contain NaN or infinite values")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    return m


@contextmanager
def inference(module: nn.Module) -> Iterator[None]:
    """Temporary eval mode and no autograd graph (restored in ``finally``)."""
    with evaluating(module), torch.no_grad():
        yield


def logits_of(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` as ``[B, classes]``; anything else raises a readable error."""
    out = module(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CnnscopeError(f"the model must return [B, classes] outputs, got {shape}")
    return out


def resolve_targets(m: LoadedModel, x: torch.Tensor, target: TargetLike, batch_size: int) -> torch.Tensor:
    """Class index per image: the model's top-1 class when ``target`` is ``None``; labels through the model's.

    Shape:
        - Output: ``LongTensor[B]`` on ``x``'s device.
    """
    b = x.shape[0]
    if target is None:
        with inference(m.module):
            parts = [logits_of(m.module, x[s]).argmax(dim=1) for s in chunks(b, batch_size)]
        return torch.cat(parts)
    if isinstance(target, str):
        target = m.class_index(target)
    elif isinstance(target, (list, tuple)):
        target = [m.class_index(t) if isinstance(t, str) else t for t in target]
    if isinstance(target, (int, np.integer)):
        return torch.full((b,), int(target), dtype=torch.long, device=x.device)
    t = torch.as_tensor(target, dtype=torch.long).to(x.device).reshape(-1)
    if t.numel() == 1:
        return t.expand(b).clone()
    if t.numel() != b:
        raise CnnscopeError(f"got {t.numel()} targets for {b} images")
    return t


class ClassScorer:
    """Batched class scores of a module: softmax probability (default) or logit of one class per image.

    ``scorer(x, targets)`` evaluates ``x`` in chunks of ``batch_size`` images; call it inside :func:`inference`.
    """

    def __init__(self, module: nn.Module, softmax: bool, batch_size: int) -> None:
        self.module = module
        self.softmax = softmax
        self.batch_size = batch_size

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: ``x [N, C, H, W]``, ``targets [N]`` -> ``[N]`` float32."""
        out = []
        for s in chunks(x.shape[0], self.batch_size):
            logits = logits_of(self.module, x[s]).float()
            scores = logits.softmax(dim=1) if self.softmax else logits
            out.append(scores.gather(1, targets[s].view(-1, 1)).squeeze(1))
        return torch.cat(out)


def compute_maps(maps: MapsLike, m: LoadedModel, x: torch.Tensor, targets: torch.Tensor, batch_size: int
                 ) -> torch.Tensor:
    """Saliency maps at input size: the given maps, or an explainer's output computed ``batch_size`` images at a
    time.

    Shape:
        - Output: ``[B, H, W]`` float32 on ``x``'s device.
    """
    size = tuple(x.shape[-2:])
    if callable(maps):
        parts = [as_maps(maps(m, x[s], targets[s]), x[s].shape[0], size, x.device)
                 for s in chunks(x.shape[0], batch_size)]
        return torch.cat(parts)
    return as_maps(maps, x.shape[0], size, x.device)


def pixel_ranks(maps: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Rank of every pixel by map value (0 = first removed/inserted); ties keep raster order.

    Shape:
        - maps: ``[B, H, W]``.
        - Output: ``LongTensor[B, H*W]``.
    """
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.argsort(-flat if descending else flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ar = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    return ranks


def auc(scores: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Area under a curve by the trapezoid rule, normalised to an x range of 1.

    Shape:
        - scores: ``[..., T]``; fractions: ``[T]`` increasing from 0 to 1.
        - Output: ``[...]``.
    """
    if fractions.ndim != 1 or fractions.numel() != scores.shape[-1] or fractions.numel() < 2:
        raise CnnscopeError("auc() needs at least two points and one x value per point")
    span = (fractions[-1] - fractions[0]).clamp_min(torch.finfo(fractions.dtype).tiny)
    fx = fractions.to(device=scores.device, dtype=scores.dtype)
    return torch.trapezoid(scores, fx, dim=-1) / span.to(device=scores.device, dtype=scores.dtype)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A new generator on ``device`` seeded with ``seed`` (every random draw of a metric comes from one)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def draw(shape: Sequence[int], generator: torch.Generator, device: torch.device, kind: str = "normal"
         ) -> torch.Tensor:
    """Random values from ``generator`` (on the generator's device), moved to ``device``."""
    if kind == "normal":
        t = torch.randn(tuple(shape), generator=generator, device=generator.device)
    else:
        t = torch.rand(tuple(shape), generator=generator, device=generator.device)
    return t.to(device)
