"""Image filters as pure functions on ``[B, C, H, W]`` batches: Gaussian and bilateral blur.

The one Gaussian blur of cnnscope: feature visualization's blur penalty and step filters, attribution's blurred
baselines and the evaluation's RISE blur substrate all call :func:`gaussian_blur` (with their own ``sigma``,
``radius`` and ``padding``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import MethodError


def _check_image(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MethodError(f"{name} expects images of shape [B, C, H, W], got {shape}")


def gaussian_kernel1d(sigma: float, radius: int | None = None, *, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``[2r+1]`` (``r = ceil(3 sigma)`` unless given)."""
    r = max(1, math.ceil(3.0 * sigma)) if radius is None else int(radius)
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None, *, padding: str = "reflect"
                  ) -> torch.Tensor:
    """Separable Gaussian blur of each channel.

    Args:
        x: images.
        sigma: standard deviation in pixels (``<= 0`` returns ``x``).
        radius: kernel radius (taps ``2 radius + 1``; default ``ceil(3 sigma)``).
        padding: ``"reflect"`` (borders are not darkened; the radius is clipped to the image) or ``"zeros"``
            (the full kernel with zero padding, as RISE's blur substrate: radius 5, sigma 5).

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, H, W]``
    """
    _check_image(x, "gaussian_blur")
    if padding not in ("reflect", "zeros"):
        raise MethodError(f"gaussian_blur padding is 'reflect' or 'zeros', got {padding!r}")
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, radius, device=x.device, dtype=x.dtype)
    c = x.shape[1]
    r = (k.numel() - 1) // 2
    if padding == "zeros":
        y = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)
        return F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r < 1:
        return x
    k = k[(k.numel() - 1) // 2 - r:(k.numel() - 1) // 2 + r + 1]
    k = k / k.sum()
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def bilateral_blur(x: torch.Tensor, sigma_space: float, sigma_color: float, radius: int | None = None
                   ) -> torch.Tensor:
    """Edge-preserving bilateral filter (Tomasi & Manduchi 1998): each pixel becomes the average of its
    ``(2r+1)^2`` neighbours weighted by ``exp(-d^2 / 2 sigma_space^2) * exp(-|I_p - I_q|^2 / 2 sigma_color^2)``,
    with the colour distance taken over all channels jointly. Borders are reflect-padded.

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, H, W]``
    """
    _check_image(x, "bilateral_blur")
    if sigma_space <= 0 or sigma_color <= 0:
        return x
    r = max(1, math.ceil(2.0 * sigma_space)) if radius is None else int(radius)
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r < 1:
        return x
    b, c, h, w = x.shape
    k = 2 * r + 1
    patches = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), k).view(b, c, k * k, h, w)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    space = torch.exp(-(t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) / (2 * sigma_space ** 2)).view(1, k * k, 1, 1)
    color = torch.exp(-((patches - x.unsqueeze(2)) ** 2).sum(1) / (2 * sigma_color ** 2))
    weights = space * color
    return (patches * weights.unsqueeze(1)).sum(2) / weights.sum(1, keepdim=True)
