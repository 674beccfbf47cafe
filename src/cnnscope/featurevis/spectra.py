"""Frequency-domain helpers: rFFT frequencies, 1/f scaling, colour decorrelation, the natural-image magnitude
spectrum (for MACO) and the high-frequency energy share of images.

Colour decorrelation (Olah et al. 2017, "preconditioning"): the optimised variables live in a space whose
three channels are the principal components of natural-image colour; :data:`COLOR_CORRELATION` is the square
root of ImageNet's colour covariance (rows R, G, B; columns the components) as published with Lucid, and
:func:`to_rgb` maps decorrelated values to RGB with it, normalised so its largest column has unit norm.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import ImageError
from ..images import to_float

#: square root of ImageNet's RGB colour covariance (Lucid's ``color_correlation_svd_sqrt``)
COLOR_CORRELATION = ((0.26, 0.09, 0.02),
                     (0.27, 0.00, -0.05),
                     (0.27, -0.09, 0.03))


def color_matrix(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:data:`COLOR_CORRELATION` divided by its largest column norm, ``[3, 3]`` (RGB x components)."""
    m = torch.tensor(COLOR_CORRELATION, dtype=torch.float64)
    m = m / m.norm(dim=0).max()
    return m.to(device=device, dtype=dtype)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated ``[B, 3, H, W]`` -> RGB (before the sigmoid): ``rgb_c = sum_k M[c, k] x_k``."""
    return torch.einsum("ck,bkhw->bchw", color_matrix(x.device, x.dtype), x)


def from_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_rgb`."""
    inv = torch.linalg.inv(color_matrix(x.device, torch.float64)).to(x.dtype)
    return torch.einsum("ck,bkhw->bchw", inv, x)


def rfft_frequencies(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Radial frequency (cycles per pixel) of every bin of ``rfft2`` on an ``h x w`` image, ``[h, w//2+1]``."""
    fy = torch.fft.fftfreq(h, device=device).view(-1, 1)
    fx = torch.fft.rfftfreq(w, device=device).view(1, -1)
    return torch.sqrt(fx * fx + fy * fy)


def power_law(h: int, w: int, decay_power: float = 1.0, device: torch.device | str | None = None) -> torch.Tensor:
    """``1 / max(f, 1/max(h, w)) ** decay_power`` per rFFT bin: the 1/f amplitude of natural images."""
    f = rfft_frequencies(h, w, device)
    return 1.0 / f.clamp_min(1.0 / max(h, w)) ** decay_power


@lru_cache(maxsize=8)
def _photo_magnitude(h: int, w: int) -> torch.Tensor:
    from ..images import resize, sample_images

    mags = []
    for arr in sample_images().values():
        ph, pw = arr.shape[:2]
        side = min(ph, pw * h / w)  # centre crop to the target aspect ratio
        ch, cw = int(round(side)), int(round(side * w / h))
        top, left = (ph - ch) // 2, (pw - cw) // 2
        crop = resize(np.ascontiguousarray(arr[top:top + ch, left:left + cw]), (h, w))
        x = to_float(np.array(crop), dtype=torch.float64)  # a writable copy: torch warns on read-only arrays
        mags.append(torch.fft.rfft2(from_rgb(x), norm="ortho").abs()[0])
    return torch.stack(mags).mean(0).float()


def natural_magnitude(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Mean rFFT magnitude ``[3, h, w//2+1]`` of skimage's sample photos in the decorrelated colour space.

    MACO (Fel et al. 2023) fixes the magnitude of the image spectrum to that of natural images (they average
    ImageNet); cnnscope averages the real photos shipped with scikit-image, so nothing is downloaded.
    """
    return _photo_magnitude(int(h), int(w)).to(device)


def high_frequency_share(images: np.ndarray | torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Share of each image's spectral energy (DC excluded) above ``cutoff`` times the Nyquist frequency.

    ``cutoff=0.5`` measures the outer half of the spectrum: radial frequency above 0.25 cycles per pixel.

    Shape:
        - Input: pictures, ``uint8 [N, H, W, 3]`` / ``[H, W, 3]`` arrays, or float tensors ``[N, 3, H, W]`` in
          [0, 1].
        - Output: ``float64 [N]`` tensor on the images' device (the CPU for arrays).
    """
    if isinstance(images, torch.Tensor):
        x = images.detach().double()
        if x.ndim != 4:
            raise ImageError(f"high_frequency_share expects [N, 3, H, W] tensors, got {tuple(x.shape)}")
    else:
        x = to_float(images, dtype=torch.float64)
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(x).abs().pow(2)
    power[..., :, 1:(w - 1) // 2 + 1] *= 2  # bins whose mirror image rfft leaves out
    f = rfft_frequencies(h, w, x.device)
    high = power[..., f > 0.5 * cutoff].sum(-1).sum(-1)
    total = power.flatten(1).sum(1).clamp_min(1e-30)
    return high / total
