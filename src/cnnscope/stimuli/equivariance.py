"""Weight-level equivariance of a curve family (Cammarata et al., *Curve Detectors*, Distill 2020: the curve family
is made of rotated copies of one another, "rotational equivariance" down to the weights).

For consecutive members ``a -> b`` of a family ordered by preferred orientation, ``a``'s kernels (every input
channel's ``k x k`` slice) are rotated by the orientation step ``theta_b - theta_a`` and correlated with ``b``'s
kernels. Both are first upsampled by ``upsample`` (bicubic) to the same finer grid and blurred alike (detail finer
than the kernel's grid cannot be rotated faithfully), rotated by bicubic resampling
about the kernel centre, and compared inside the disc inscribed in the kernel (corners rotate out of the square).
The score is Pearson's correlation over all input channels and disc positions: rotated copies score near 1,
unrelated kernels near 0. The correlation without rotation is reported beside it, so a family whose neighbours
are alike anyway (smooth, isotropic kernels) is not mistaken for an equivariant one.

Rotating a kernel this way treats the input channels as orientation-free (exactly so for the image's colour
channels of a first layer). For a deeper layer whose inputs are themselves orientation-tuned, ``sum_inputs=True``
compares the kernels summed over input channels (their spatial footprint) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..capture import module_of
from ..errors import CnnscopeError, LayerError
from ..filters import gaussian_blur
from ..models import ModelLike
from .tracing import members


def rotate_kernels(kernels: torch.Tensor, degrees: float | torch.Tensor) -> torch.Tensor:
    """Kernels rotated counter-clockwise (as displayed, y up) about their centre by bilinear resampling; zero where
    the rotated grid falls outside.

    Shape:
        - kernels: ``[N, C, k, k]``; degrees: a number or ``[N]``; Output: ``[N, C, k, k]``.
    """
    n = kernels.shape[0]
    a = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64).expand(n)).to(kernels.dtype)
    cos, sin = torch.cos(a), torch.sin(a)
    # output (x, y-down normalised) samples the input at R(-a) in y-up terms: [x', y'] = [[c, -s], [s, c]] [x, y]
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], 1),
                         torch.stack([sin, cos, torch.zeros_like(a)], 1)], 1).to(kernels.device)
    grid = F.affine_grid(theta, list(kernels.shape), align_corners=False)
    return F.grid_sample(kernels, grid, mode="bicubic", padding_mode="zeros", align_corners=False)


def _disc(k: int, device: torch.device) -> torch.Tensor:
    c = (k - 1) / 2
    r = torch.arange(k, device=device, dtype=torch.float64) - c
    return (r[None] ** 2 + r[:, None] ** 2) <= (k / 2) ** 2


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair, ``[N, D]`` x ``[N, D]`` -> ``[N]`` (0 where a row is constant)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp(min=1e-300), torch.zeros_like(den))


@dataclass
class Equivariance:
    """Weight-level equivariance of consecutive family members (CPU ``float64`` tensors ``[K]`` over the pairs).

    Attributes:
        layer: the layer whose weights were read.
        channels: the members in orientation order; pair ``i`` is ``channels[i] -> channels[i + 1]`` (the last
            pair wraps to the first member when ``wrap``).
        orientations: the members' preferred orientations, degrees.
        steps: rotation of each pair, degrees (``theta_b - theta_a``, wrapped into (-180, 180]).
        correlation: correlation of ``b``'s kernels with ``a``'s rotated by the step.
        unrotated: the same without rotating (the baseline).
        upsample, blur, sum_inputs, wrap: the options used.
    """

    layer: str
    channels: list[int]
    orientations: list[float]
    steps: torch.Tensor
    correlation: torch.Tensor
    unrotated: torch.Tensor
    upsample: int
    blur: float
    sum_inputs: bool
    wrap: bool

    @property
    def mean(self) -> float:
        return float(self.correlation.mean()) if len(self.correlation) else math.nan

    def pairs(self) -> list[tuple[int, int]]:
        n = len(self.channels)
        return [(self.channels[i], self.channels[(i + 1) % n]) for i in range(len(self.correlation))]

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "orientations": self.orientations,
                "pairs": self.pairs(), "steps": self.steps.tolist(), "correlation": self.correlation.tolist(),
                "unrotated": self.unrotated.tolist(), "mean": self.mean,
                "mean_unrotated": float(self.unrotated.mean()) if len(self.unrotated) else math.nan,
                "upsample": self.upsample, "blur": self.blur, "sum_inputs": self.sum_inputs, "wrap": self.wrap}


def kernel_equivariance(kernels: torch.Tensor, orientations: Sequence[float], *, upsample: int = 2,
                        blur: float = 1.0, sum_inputs: bool = False, wrap: bool | None = None
                        ) -> tuple[torch.Tensor, ...]:
    """Correlation of each kernel, rotated by the orientation step, with the next kernel (see the module docstring).

    Args:
        kernels: the members' weights in orientation order, ``[K, C, k, k]``.
        orientations: their preferred orientations, degrees.
        upsample: resample the kernels this many times finer before rotating (1 = on their own grid).
        blur: Gaussian blur of both kernels (sigma in pixels of the kernel's grid; 0 = none), so that detail finer
            than the grid (a one-pixel ridge, the edge of an angular window) is not mistaken for a difference.
        sum_inputs: compare the kernels summed over input channels.
        wrap: also compare the last member with the first (default: when the orientations cover more than 270
            degrees).

    Returns:
        ``(steps, correlation, unrotated)``, ``float64 [P]`` CPU tensors (``P = K`` with ``wrap``, else ``K - 1``).
    """
    w = torch.as_tensor(kernels).detach().double().cpu()
    theta = torch.as_tensor(list(orientations), dtype=torch.float64)
    if w.ndim != 4 or w.shape[-1] != w.shape[-2] or len(w) != len(theta) or len(w) < 2:
        raise CnnscopeError(f"kernel_equivariance() needs square kernels [K, C, k, k] with K >= 2 and one orientation "
                            f"each; got {tuple(w.shape)} and {len(theta)} orientations")
    if w.shape[-1] < 2:
        raise CnnscopeError("1x1 kernels have no spatial extent to rotate; use the layer of a spatial convolution")
    if upsample < 1:
        raise CnnscopeError(f"upsample must be >= 1, got {upsample}")
    if sum_inputs:
        w = w.sum(1, keepdim=True)
    if upsample > 1:
        w = F.interpolate(w, scale_factor=upsample, mode="bicubic", align_corners=False)
    w = gaussian_blur(w, blur * upsample, padding="zeros")
    span = float((theta.max() - theta.min()) % 360.0)
    wrap = span > 270.0 if wrap is None else wrap
    nxt = torch.roll(torch.arange(len(w)), -1)
    if not wrap:
        nxt = nxt[:-1]
    src = torch.arange(len(nxt))
    steps = (theta[nxt] - theta[src] + 180.0) % 360.0 - 180.0
    steps = torch.where(steps == -180.0, torch.full_like(steps, 180.0), steps)
    mask = _disc(w.shape[-1], w.device)
    rotated = rotate_kernels(w[src], steps)
    flat = lambda t: t[..., mask].flatten(1)  # noqa: E731 - [P, C * disc]
    return steps, _pearson(flat(rotated), flat(w[nxt])), _pearson(flat(w[src]), flat(w[nxt]))


def weight_equivariance(model: ModelLike, layer: str, *, channels: str | Sequence[int],
                        orientations: Sequence[float], upsample: int = 2, blur: float = 1.0,
                        sum_inputs: bool = False, wrap: bool | None = None) -> Equivariance:
    """Weight-level equivariance of a family's members in ``layer`` (a convolution with ``[out, in, k, k]`` weights).

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; only its weights are read.
        layer: the convolution whose output channels are the family (for a family found on an activation, its
            convolution).
        channels: the members, any order; they are sorted by ``orientations``.
        orientations: each member's preferred orientation (degrees), same order as ``channels``.
        upsample, blur, sum_inputs, wrap: see :func:`kernel_equivariance`.
    """
    from ..capture.state import resolve_layers

    module = resolve_layers(module_of(model), layer)[layer]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise LayerError(f"layer {layer!r} ({type(module).__name__}) has no [out, in, k, k] convolution weights; pass "
                         "the convolution that computes the family (e.g. the layer before its activation)")
    chosen = members(channels, weight.shape[0])
    if len(chosen) != len(orientations):
        raise CnnscopeError(f"give one orientation per channel: {len(chosen)} channels, {len(orientations)} "
                            "orientations")
    order = sorted(range(len(chosen)), key=lambda i: float(orientations[i]) % 360.0)
    chans = [chosen[i] for i in order]
    theta = [float(orientations[i]) % 360.0 for i in order]
    steps, corr, base = kernel_equivariance(weight.detach()[chans], theta, upsample=upsample, blur=blur,
                                            sum_inputs=sum_inputs, wrap=wrap)
    return Equivariance(layer=layer, channels=chans, orientations=theta, steps=steps, correlation=corr,
                        unrotated=base, upsample=upsample, blur=blur, sum_inputs=sum_inputs,
                        wrap=len(corr) == len(chans))
