"""Joint tuning curves: rotate each unit's top dataset examples and record every unit of a family.

Cammarata et al., *Curve Detectors* (Distill 2020), "Joint tuning curves": the dataset examples that most
activate a unit are rotated from 0 to 360 degrees in 1 degree steps; at each step the activations of every
unit of the family are recorded. Each example's curves are shifted so that the source unit's own peak sits at
0 degrees, then averaged over examples. For a family of curve detectors the curves of the other units peak at
the differences of preferred orientations, and together they tile all orientations.

The examples come in as plain images (crops centred on the unit's receptive field, e.g. the receptive-field
crops of :mod:`cnnscope.dataset`); give crops about ``sqrt(2)`` times the receptive field so that the rotated
centre square (the default ``out_size``) never shows the corners.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import chunks, resolve_batch_size
from ..errors import CnnscopeError
from ..images import ImageLike, load_image, to_float
from ..models import LoadedModel, ModelLike, as_model
from .responses import read_channels, zscore

#: rotated images per forward pass when ``batch_size`` is ``None``, by device
CPU_BATCH, GPU_BATCH = 64, 256


def rotate_images(images: torch.Tensor, angles: torch.Tensor | Sequence[float] | float, *,
                  out_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Rotate images counter-clockwise (as displayed) about their centre, keeping a centre window.

    A geometric operation on any float tensors (pictures in [0, 1] or model-space inputs: bilinear resampling
    commutes with the per-channel normalisation).

    Args:
        images: a batch of images.
        angles: degrees, one per image (or one for all).
        out_size: side (or ``(H, W)``) of the centre window kept; default ``floor(min(H, W) / sqrt(2))``, the
            largest square that stays inside the image at every angle.

    Returns:
        Bilinearly resampled images on the input's device (pixels outside the source repeat its border).

    Shape:
        - images: ``[N, C, H, W]``; angles: ``[N]`` or a scalar
        - Output: ``[N, C, out_H, out_W]``
    """
    if images.ndim != 4:
        raise CnnscopeError(f"rotate_images() expects [N, C, H, W], got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if out_size is None:
        oh = ow = max(1, math.floor(min(h, w) / math.sqrt(2)))
    else:
        oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    a = torch.as_tensor(angles, dtype=images.dtype, device=images.device).reshape(-1)
    if a.numel() == 1:
        a = a.expand(n)
    if a.numel() != n:
        raise CnnscopeError(f"got {a.numel()} angles for {n} images")
    rad = torch.deg2rad(a)
    c, s = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(c)
    # output pixel offsets (y down) map to input offsets through [[c, -s], [s, c]]: a counter-clockwise turn
    theta = torch.stack([torch.stack([c * ow / w, -s * oh / w, zero], 1),
                         torch.stack([s * ow / h, c * oh / h, zero], 1)], 1)
    grid = F.affine_grid(theta, [n, images.shape[1], oh, ow], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def centered_crop(image: np.ndarray, center: tuple[float, float], side: int) -> np.ndarray:
    """A ``side x side`` window of ``image`` centred on ``center = (row, col)`` (pixel-edge coordinates, so the
    centre of an ``H x W`` image is ``(H / 2, W / 2)``); parts outside the image repeat its border pixels.

    Use it to cut rotation-safe crops around a unit's receptive-field centre (``side`` about ``sqrt(2)`` times the
    receptive field) for :func:`joint_tuning`.

    Shape:
        - image: ``[H, W, C]``; output: ``[side, side, C]``.
    """
    if side < 1:
        raise CnnscopeError(f"crop side must be >= 1, got {side}")
    h, w = image.shape[:2]
    top, left = round(center[0] - side / 2), round(center[1] - side / 2)
    rows = np.clip(np.arange(top, top + side), 0, h - 1)
    cols = np.clip(np.arange(left, left + side), 0, w - 1)
    return np.ascontiguousarray(image[rows[:, None], cols[None, :]])


@dataclass
class JointTuning:
    """Responses of a family's channels to rotated dataset examples of each source channel (CPU tensors).

    Attributes:
        layer: the layer name.
        sources: channels whose examples were rotated, ``int64 [S]``.
        channels: channels recorded (ascending), ``int64 [U]``.
        angles: rotation in degrees, ``[A]``; with ``aligned`` it is relative to the source channel's own peak.
        curves: mean response over each source's examples, ``float64 [S, A, U]`` (standard deviations above the
            dataset mean when ``in_std``).
        n_examples: examples per source, ``int64 [S]``.
        aligned: whether each example was shifted so the source channel peaks at angle 0.
        in_std: whether values are z-scores.
        pre_activation: whether the values are an activation module's inputs.
    """

    layer: str
    sources: torch.Tensor
    channels: torch.Tensor
    angles: torch.Tensor
    curves: torch.Tensor
    n_examples: torch.Tensor
    aligned: bool = True
    in_std: bool = False
    pre_activation: bool = False

    def own(self) -> torch.Tensor:
        """Each source channel's own curve, ``[S, A]``."""
        cols = torch.tensor([int(torch.nonzero(self.channels == s)[0, 0]) for s in self.sources.tolist()])
        return self.curves[torch.arange(len(self.sources)), :, cols]

    def peak_offsets(self) -> torch.Tensor:
        """Angle (degrees, wrapped to ``(-180, 180]``) where each channel's curve peaks, per source: ``[S, U]``."""
        peak = self.angles[self.curves.argmax(dim=1)]
        return 0.0 - ((180.0 - peak) % 360.0 - 180.0)  # (-180, 180], no negative zero

    def to_dict(self) -> dict:
        return {"layer": self.layer, "sources": self.sources.tolist(), "channels": self.channels.tolist(),
                "angles": self.angles.tolist(), "curves": self.curves.tolist(),
                "n_examples": self.n_examples.tolist(), "aligned": self.aligned, "in_std": self.in_std,
                "pre_activation": self.pre_activation, "peak_offsets": self.peak_offsets().tolist()}


def _crops_tensor(crops: Sequence[ImageLike], crop_size: int | None, device: torch.device) -> torch.Tensor:
    """Crops as one float ``[N, 3, side, side]`` batch in [0, 1] (each resized to ``side``)."""
    arrs = [load_image(c) for c in crops]
    if not arrs:
        raise CnnscopeError("a source channel has no example crops")
    side = crop_size or min(arrs[0].shape[:2])
    out = []
    for a in arrs:
        t = to_float(a, device=device)
        if t.shape[-2:] != (side, side):
            t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out.append(t)
    return torch.cat(out)


def _rotated_batches(m: LoadedModel, crops: torch.Tensor, angles: torch.Tensor, out_size: int | None,
                     batch_size: int) -> Iterator[torch.Tensor]:
    """Every crop at every angle, in the model's input space, ``batch_size`` images at a time."""
    for part in chunks(crops.shape[0] * len(angles), batch_size):
        idx = torch.arange(part.start, part.stop, device=crops.device)
        turned = rotate_images(crops[idx // len(angles)], angles[idx % len(angles)], out_size=out_size)
        yield m.to_input(turned).to(m.dtype)


def joint_tuning(model: ModelLike, examples: Mapping[int, Sequence[ImageLike]], layer: str, *,
                 channels: Sequence[int] | None = None, step: float = 1.0, align: bool = True,
                 crop_size: int | None = None, out_size: int | None = None,
                 mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | torch.Tensor | None = None,
                 position: tuple[int, int] | str | None = "center", pre_activation: bool = False,
                 batch_size: int | None = None, progress: bool = False) -> JointTuning:
    """Joint tuning curves of a family from rotated dataset examples.

    The model runs in temporary eval mode; it is not modified.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        examples: ``source channel -> crops`` (pictures: paths, PIL images or uint8 arrays centred on the
            channel's receptive field; its top dataset examples). Crops of one channel are resized to one square
            size.
        layer: dotted layer name.
        channels: channels to record besides the sources (the sources are always recorded).
        step: rotation step in degrees (360 must be a multiple of it; the article uses 1).
        align: shift each example so the source channel's own response peaks at angle 0 before averaging.
        crop_size: resize every crop to this side first (default: the first crop's shorter side).
        out_size: side of the rotated centre window fed to the model (default ``crop_size / sqrt(2)``).
        mean, std: per-channel dataset statistics of the layer: express curves in standard deviations.
        position: the neuron read in the fed window: ``"center"``, ``(row, col)``, ``"max"`` or ``None`` (the
            channel's mean), as :class:`cnnscope.Unit`.
        pre_activation: read pre-activation values (``layer`` must be an activation module).
        batch_size: rotated images per forward pass (``None``: a default for the model's device).
        progress: show a progress bar.

    Returns:
        :class:`JointTuning` with ``curves`` of shape ``[S, A, U]``, ``A = 360 / step``.
    """
    m = as_model(model)
    if not examples:
        raise CnnscopeError("joint_tuning() needs example crops for at least one source channel")
    n_angles = 360.0 / step if step > 0 else 0.0
    if step <= 0 or abs(n_angles - round(n_angles)) > 1e-6:
        raise CnnscopeError(f"step must divide 360 degrees, got {step}")
    sources = [int(s) for s in examples]
    wanted = sorted({*(int(c) for c in (channels or [])), *sources})
    angles = torch.arange(round(n_angles), device=m.device, dtype=torch.float32) * step
    crops = {src: _crops_tensor(list(examples[src]), crop_size, m.device) for src in sources}
    counts = [crops[src].shape[0] for src in sources]
    bs = resolve_batch_size(batch_size, m.device, cpu=CPU_BATCH, gpu=GPU_BATCH)

    def batches() -> Iterator[torch.Tensor]:  # one forward pass sequence for all sources (one open Capture)
        for src in sources:
            yield from _rotated_batches(m, crops[src], angles, out_size, bs)

    total = sum(-(-n * len(angles) // bs) for n in counts)
    resp, recorded = read_channels(m, batches(), layer, channels=wanted, position=position,
                                   pre_activation=pre_activation, total=total, progress=progress)
    all_r = resp.double().cpu().reshape(sum(counts), len(angles), len(recorded))
    all_r, _, _ = zscore(all_r, recorded, mean, std, dim=2)
    curves, start = [], 0
    for src, n in zip(sources, counts):
        r = all_r[start:start + n]
        start += n
        if align:
            peaks = r[:, :, recorded.index(src)].argmax(dim=1)
            shift = (torch.arange(len(angles))[None, :] + peaks[:, None]) % len(angles)
            r = torch.take_along_dim(r, shift[:, :, None], dim=1)
        curves.append(r.mean(dim=0))
    return JointTuning(layer=layer, sources=torch.tensor(sources), channels=torch.tensor(recorded),
                       angles=angles.double().cpu(), curves=torch.stack(curves), n_examples=torch.tensor(counts),
                       aligned=align, in_std=mean is not None, pre_activation=pre_activation)
