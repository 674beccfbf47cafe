"""Reference inputs shared by integrated gradients, occlusion and RISE: a value, a tensor or a blurred copy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import MethodError

BaselineLike = float | int | str | torch.Tensor


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` (reflect padding, kernel radius ``3 sigma``).

    Shape:
        - Input: ``[B, C, H, W]``; Output: same.
    """
    if sigma <= 0:
        return x.clone()
    radius = max(1, int(math.ceil(3.0 * sigma)))
    radius = min(radius, (min(x.shape[-2:]) - 1) or 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    y = F.pad(x, (radius, radius, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(x: torch.Tensor, baseline: BaselineLike, blur_sigma: float = 10.0) -> torch.Tensor:
    """The baseline batch for ``x``: a constant, ``"blur"`` (Gaussian-blurred ``x``) or a broadcastable tensor.

    Values are in the model's input space (for normalised inputs, ``0`` is the dataset's mean colour).

    Shape:
        - x: ``[B, C, H, W]``; Output: ``[B, C, H, W]`` on ``x``'s device.

    Raises:
        MethodError: an unknown string or a tensor that does not broadcast to ``x``.
    """
    if isinstance(baseline, str):
        if baseline == "blur":
            return gaussian_blur(x, float(blur_sigma))
        if baseline in ("zero", "zeros"):
            return torch.zeros_like(x)
        raise MethodError(f"unknown baseline {baseline!r}; give a number, a tensor or 'blur'")
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape).clone()
        except RuntimeError:
            raise MethodError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the inputs "
                              f"{tuple(x.shape)}") from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise MethodError(f"baseline must be a number, a tensor or 'blur', got {type(baseline).__name__}")


def check_baseline(name: str, baseline: object) -> None:
    """Raise :class:`MethodError` early for a baseline :func:`make_baseline` would refuse."""
    ok = isinstance(baseline, torch.Tensor) or baseline in ("blur", "zero", "zeros") or (
        isinstance(baseline, (int, float)) and not isinstance(baseline, bool))
    if not ok:
        raise MethodError(f"{name}: baseline must be a number, a tensor or 'blur', got {baseline!r}")
