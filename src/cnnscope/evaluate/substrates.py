"""Substrates: what a pixel becomes when it is removed (deletion) or before it is inserted (insertion).

The RISE protocol (Petsiuk et al. 2018) uses ``"zero"`` for deletion (zero in the model's normalised input
space, i.e. the dataset mean colour) and ``"blur"`` for insertion (Gaussian blur, kernel 11, sigma 5, zero
padding as in the reference code). Other substrates are options, labelled as such in every result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import MethodError, unknown
from ..filters import gaussian_blur

Substrate = Callable[[torch.Tensor], torch.Tensor]


def zero_substrate(x: torch.Tensor) -> torch.Tensor:
    """Zeros in the normalised input space (the dataset mean colour for mean/std normalisation)."""
    return torch.zeros_like(x)


def blur_substrate(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion start: Gaussian blur, kernel 11, sigma 5."""
    return gaussian_blur(x, 5.0, 5, padding="zeros")


def mean_substrate(x: torch.Tensor) -> torch.Tensor:
    """Each image's own per-channel mean (an option; not part of the RISE protocol)."""
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def strong_blur_substrate(x: torch.Tensor) -> torch.Tensor:
    """A stronger blur (kernel 31, sigma 10): an option for large inputs; not part of the RISE protocol."""
    return gaussian_blur(x, 10.0, 15, padding="zeros")


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
