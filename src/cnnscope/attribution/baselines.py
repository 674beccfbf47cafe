"""Reference inputs shared by integrated gradients, occlusion and RISE: a value, a tensor or a blurred copy."""

from __future__ import annotations

import math

import torch

from ..errors import MethodError
from ..filters import gaussian_blur

BaselineLike = float | int | str | torch.Tensor


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
    if isinstance(baseline, torch.Tensor):
        finite = not baseline.is_floating_point() or bool(torch.isfinite(baseline).all())
    else:
        finite = not isinstance(baseline, float) or math.isfinite(baseline)
    if not finite:
        raise MethodError(f"{name}: the baseline contains NaN or infinite values; give finite values in the model's "
                          "input space")
