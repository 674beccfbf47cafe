"""Substrates: what a pixel becomes when it is removed (deletion) or before it is inserted (insertion).

The RISE protocol (Petsiuk et al. 2018) uses ``"zero"`` for deletion (zero in the model's normalised input
space, i.e. the dataset mean colour) and ``"blur"`` for insertion (Gaussian blur, kernel 11, sigma 5, zero
padding as in the reference code). Other substrates are options, labelled as such in every result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import MethodError, unknown

Substrate = Callable[[torch.Tensor], torch.Tensor]


def gaussian_kernel1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sampled, normalised 1-D Gaussian of odd ``size``. Shape: ``[size]``."""
    if size < 1 or size % 2 == 0:
        raise MethodError(f"blur kernel size must be a positive odd number, got {size}")
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-(r ** 2) / (2.0 * float(sigma) ** 2))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Per-channel Gaussian blur with zero padding (separable, same size as the input).

    Shape:
        - x: ``[B, C, H, W]``; Output: same.
    """
    c = x.shape[1]
    k = gaussian_kernel1d(size, sigma, x.device, x.dtype)
    pad = size // 2
    y = F.conv2d(x, k.view(1, 1, size, 1).expand(c, 1, size, 1), padding=(pad, 0), groups=c)
    return F.conv2d(y, k.view(1, 1, 1, size).expand(c, 1, 1, size), padding=(0, pad), groups=c)


def zero_substrate(x: torch.Tensor) -> torch.Tensor:
    """Zeros in the normalised input space (the dataset mean colour for mean/std normalisation)."""
    return torch.zeros_like(x)


def blur_substrate(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion start: Gaussian blur, kernel 11, sigma 5."""
    return gaussian_blur(x, 11, 5.0)


def mean_substrate(x: torch.Tensor) -> torch.Tensor:
    """Each image's own per-channel mean (an option; not part of the RISE protocol)."""
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def strong_blur_substrate(x: torch.Tensor) -> torch.Tensor:
    """A stronger blur (kernel 31, sigma 10): an option for large inputs; not part of the RISE protocol."""
    return gaussian_blur(x, 31, 10.0)


#: name -> substrate function ``x -> same-shape tensor``.
SUBSTRATES: dict[str, Substrate] = {
    "zero": zero_substrate,
    "blur": blur_substrate,
    "mean": mean_substrate,
    "blur_strong": strong_blur_substrate,
}


def get_substrate(substrate: str | Substrate | torch.Tensor) -> tuple[str, Substrate]:
    """Resolve a substrate name, function or fixed tensor to ``(label, function)``."""
    if isinstance(substrate, str):
        if substrate not in SUBSTRATES:
            raise MethodError(unknown("substrate", substrate, SUBSTRATES))
        return substrate, SUBSTRATES[substrate]
    if isinstance(substrate, torch.Tensor):
        fixed = substrate.detach()
        return "custom tensor", lambda x: fixed.to(device=x.device, dtype=x.dtype).expand_as(x)
    if callable(substrate):
        return getattr(substrate, "__name__", "custom"), substrate
    raise MethodError(f"substrate must be a name ({', '.join(SUBSTRATES)}), a function or a tensor, "
                      f"got {type(substrate).__name__}")
