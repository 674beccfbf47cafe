"""Filters and feature maps: the "weight" and "activation" views of CNN tutorials, and the paper's
frequency diagnosis of first-layer filters (Zeiler & Fergus 2013, Sec. 4.1, Fig. 6: large strided first-layer
filters mix extremely high and low frequencies with little mid-frequency coverage, and some are dead).

Example:
    >>> w = conv_weights(model)                      # first conv layer, [out, in, kh, kw]
    >>> tiles = filter_images(w)                     # uint8 [out, kh, kw, 3], one picture per filter
    >>> spec = filter_spectrum(w)                    # band energy fractions per filter
    >>> maps = feature_maps(model, "cat.jpg", "features.3")   # [1, C, h, w]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..batching import chunks, resolve_batch_size
from ..capture import Capture, resolve_layers
from ..errors import LayerError, unknown
from ..models import ModelLike, as_model

#: radial frequency bands as fractions of the Nyquist frequency (0.5 cycles/pixel): [low, mid, high)
BANDS = {"low": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "high": (2 / 3, float("inf"))}


def conv_layers(model: ModelLike) -> list[str]:
    """Dotted names of every ``nn.Conv2d`` in the model, in registration order."""
    m = as_model(model)
    return [n for n, mod in m.module.named_modules() if isinstance(mod, nn.Conv2d)]


def conv_weights(model: ModelLike, layer: str | None = None) -> torch.Tensor:
    """The kernels of a convolution layer (default: the first one), detached, on the model's device.

    Shape:
        - Output: ``[out_channels, in_channels / groups, kh, kw]``.
    """
    m = as_model(model)
    module = m.module
    names = conv_layers(m)
    if not names:
        raise LayerError(f"{type(module).__name__} has no Conv2d layer")
    name = names[0] if layer is None else layer
    mod = resolve_layers(module, name)[name]
    if not isinstance(mod, nn.Conv2d):
        raise LayerError(unknown("convolution layer", name, names))
    return mod.weight.detach()


def filter_images(weights: torch.Tensor, *, per_filter: bool = True) -> np.ndarray:
    """First-layer filters as pictures: each filter's values scaled to [0, 255] (3 input channels in colour,
    one channel in grey).

    Args:
        weights: ``[N, C, kh, kw]`` with ``C`` 1 or 3.
        per_filter: scale every filter by its own range (otherwise one range for all, which keeps relative
            strength visible and shows dead filters as flat grey).

    Shape:
        - Output: ``uint8 [N, kh, kw, 3]``.
    """
    if weights.ndim != 4 or weights.shape[1] not in (1, 3):
        raise LayerError(f"filter pictures need [N, 1 or 3, kh, kw] kernels (a first layer), got "
                         f"{tuple(weights.shape)}; show other layers with the kernel heatmaps")
    w = weights.detach().float().cpu()
    dims = (1, 2, 3) if per_filter else (0, 1, 2, 3)
    lo, hi = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    v = (w - lo) / (hi - lo).clamp_min(1e-12)
    v = v.expand(-1, 3, -1, -1) if v.shape[1] == 1 else v
    return (v.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def feature_maps(model: ModelLike, images: object, layer: str, *, pre_activation: bool = False,
                 batch_size: int | None = None) -> torch.Tensor:
    """The activations of ``layer`` for every image (eval mode, restored afterwards), on the model's device.

    Args:
        model: any image model (not modified).
        images: anything :meth:`~cnnscope.models.LoadedModel.batch` takes.
        layer: dotted name of a layer with a spatial output.
        pre_activation: the input of ``layer`` (an activation module) instead of its output.
        batch_size: images per forward (default by device).

    Shape:
        - Output: ``[B, C', h, w]``.
    """
    m = as_model(model)
    x = m.batch(images)
    out = []
    with torch.no_grad(), Capture(m.module, layer, pre_activation=pre_activation) as cap:
        for sl in chunks(len(x), resolve_batch_size(batch_size, m.device)):
            cap.run(x[sl])
            acts = cap[layer]
            if acts.ndim != 4:
                raise LayerError(f"layer {layer!r} has no spatial output (shape {tuple(acts.shape[1:])})")
            out.append(acts)
    return torch.cat(out)


@dataclass
class FilterSpectrum:
    """Frequency content of a bank of filters.

    Attributes:
        power: ``[N, size, size]`` power spectrum of each filter (summed over input channels, zero frequency
            in the centre, ``size``-point FFT).
        radii: ``[nbins]`` centre of each radial bin as a fraction of Nyquist.
        profile: ``[N, nbins]`` share of each filter's energy per radial bin.
        bands: ``[N, 3]`` share of each filter's energy in the low / mid / high bands of :data:`BANDS`.
        dead: indices of filters with (almost) no energy (norm below 1% of the largest).
    """

    power: torch.Tensor
    radii: torch.Tensor
    profile: torch.Tensor
    bands: torch.Tensor
    dead: list[int]

    def to_dict(self) -> dict:
        return {"radii": self.radii.tolist(), "profile": self.profile.tolist(), "bands": self.bands.tolist(),
                "band_names": list(BANDS), "band_edges": [list(v) for v in BANDS.values()], "dead": self.dead,
                "mean_bands": self.bands.mean(0).tolist()}


def filter_spectrum(weights: torch.Tensor, *, size: int = 32, nbins: int = 12) -> FilterSpectrum:
    """Power spectra of filters, their radial profile and low/mid/high band shares.

    Each ``kh x kw`` kernel is zero-padded to ``size x size`` and Fourier transformed; the power of all input
    channels is summed. Radii are measured in units of the Nyquist frequency (1 = 0.5 cycles/pixel along an
    axis; the diagonal corner reaches sqrt(2)).

    Shape:
        - weights: ``[N, C, kh, kw]``; power: ``[N, size, size]``.
    """
    if weights.ndim != 4:
        raise LayerError(f"filter_spectrum() needs [N, C, kh, kw] kernels, got {tuple(weights.shape)}")
    kh, kw = weights.shape[-2:]
    if size < max(kh, kw):
        raise LayerError(f"the FFT size {size} is smaller than the {kh}x{kw} kernels")
    w = weights.detach().to(torch.float64)
    power = torch.fft.fftshift(torch.fft.fft2(w, s=(size, size)).abs().square().sum(1), dim=(-2, -1))
    f = torch.fft.fftshift(torch.fft.fftfreq(size, device=w.device, dtype=w.dtype)) / 0.5
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)
    total = power.flatten(1).sum(1).clamp_min(1e-30)
    edges = torch.linspace(0, float(radius.max()) + 1e-9, nbins + 1, device=w.device, dtype=w.dtype)
    which = torch.bucketize(radius.flatten(), edges[1:-1], right=True)
    profile = torch.zeros(len(w), nbins, device=w.device, dtype=w.dtype)
    profile.index_add_(1, which, power.flatten(1))
    bands = torch.stack([power.flatten(1)[:, ((radius >= lo) & (radius < hi)).flatten()].sum(1)
                         for lo, hi in BANDS.values()], dim=1)
    norms = w.flatten(1).norm(dim=1)
    dead = [int(i) for i in torch.nonzero(norms < 0.01 * norms.max().clamp_min(1e-30)).flatten()]
    return FilterSpectrum(power, (edges[1:] + edges[:-1]) / 2, profile / total[:, None], bands / total[:, None],
                          dead)


def high_frequency_share(weights: torch.Tensor, *, size: int = 32, cutoff: float = 0.5) -> torch.Tensor:
    """Share of each filter's energy above ``cutoff`` x Nyquist (radially; 0.5 = half Nyquist, 0.25 cycles/pixel).

    The kernels are zero-padded to ``size x size`` and Fourier transformed; the power of all input channels is
    summed (as :func:`filter_spectrum`). A filter with no energy has share 0.

    Shape:
        - weights: ``[N, C, kh, kw]``; output: ``[N]`` float64 on the CPU.
    """
    if weights.ndim != 4:
        raise LayerError(f"high_frequency_share() needs [N, C, kh, kw] kernels, got {tuple(weights.shape)}")
    kh, kw = weights.shape[-2:]
    size = max(size, kh, kw)
    w = weights.detach().to("cpu", torch.float64)
    power = torch.fft.fft2(w, s=(size, size)).abs().square().sum(1)
    f = torch.fft.fftfreq(size, dtype=torch.float64) / 0.5
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)
    total = power.flatten(1).sum(1)
    high = power[:, radius > cutoff].sum(1)
    return torch.where(total > 0, high / total.clamp_min(1e-300), torch.zeros_like(total))
