"""Image parameterizations: ``nn.Module``s whose ``forward()`` returns a batch of images in [0, 1].

Every parameterization holds one independent image per batch entry (one per objective, or ``k`` per objective
with diversity), each initialised from its own seeded ``torch.Generator``, so image ``i`` of a batch equals the
image a render of that objective alone produces with the same seed.

* :class:`PixelImage`: the pixels themselves (``clamp``: kept in [0, 1] by projection after each step, the
  Erhan et al. 2009 setting; or ``sigmoid`` of free values).
* :class:`FourierImage`: Olah et al. 2017's preconditioning: a Fourier spectrum scaled by ``1/f**decay_power``,
  decorrelated colour, sigmoid.
* :class:`MacoImage`: Fel et al. 2023 (MACO): only the spectrum's *phase* is optimised; its magnitude is fixed
  to the mean spectrum of natural photos; the image is standardised, colours recorrelated, sigmoid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import CnnscopeError, MethodError, unknown
from ..registry import Registry
from .spectra import from_rgb, natural_magnitude, power_law, to_rgb

#: Lucid's constant dividing the inverse FFT (keeps the initial sigmoid away from saturation)
FOURIER_GAIN = 0.25


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``128`` or ``(h, w)`` -> ``(h, w)``."""
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or any(isinstance(s, bool) or s < 1 for s in hw):
        raise CnnscopeError(f"size must be a positive int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One ``torch.Generator`` per seed, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def per_image(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str,
              draw: Callable[..., torch.Tensor] = torch.randn) -> torch.Tensor:
    """``[len(seeds), *shape]``: row ``i`` drawn with ``draw`` from a generator seeded with ``seeds[i]``."""
    return torch.stack([draw(*shape, generator=g, device=device) for g in generators(seeds, device)])


def logit(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


#: parameterizations by name (their class attribute ``name``); entries are added by :func:`register_param`
PARAMS: Registry[type[ImageParam]] = Registry("parameterization", package="cnnscope.featurevis")
#: class decorator that registers a parameterization under its ``name``
register_param = PARAMS.register


class ImageParam(nn.Module):
    """Base class: ``forward() -> Tensor[N, 3, H, W]`` in [0, 1].

    Args:
        seeds: one seed per image (the batch size is ``len(seeds)``).
        size: ``H`` or ``(H, W)``.
        device: where the parameters live (the model's device).
    """

    name = "image"

    def __init__(self, seeds: Sequence[int], size: int | Sequence[int], device: torch.device | str = "cpu"
                 ) -> None:
        super().__init__()
        if not seeds:
            raise CnnscopeError("an image parameterization needs at least one seed (one image)")
        self.seeds = [int(s) for s in seeds]
        self.size = as_size(size)
        self.device = torch.device(device)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def project_(self) -> None:
        """Called after every optimiser step (a projection onto the valid set); no-op by default."""

    def set_image_(self, x: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` returns ``x`` (used by blur filters and ``render(init=...)``)."""
        raise MethodError(f"the {self.name!r} parameterization cannot be set from an image; init= and blur filters "
                          "need the 'pixel' or 'fourier' parameterization (e.g. recipe='lucid')")

    def options(self) -> dict:
        return {}

    def spec(self) -> dict:
        return {"type": self.name, **self.options()}


@register_param
class PixelImage(ImageParam):
    """The pixels as parameters.

    Args:
        activation: ``"clamp"`` (values are pixels, projected back into [0, 1] after each step) or
            ``"sigmoid"`` (pixels are ``sigmoid`` of free values).
        sd: standard deviation of the initial noise (around grey 0.5).
        decorrelate: with ``"sigmoid"``, optimise in the decorrelated colour space.
    """

    name = "pixel"

    def __init__(self, seeds: Sequence[int], size: int | Sequence[int], device: torch.device | str = "cpu",
                 activation: str = "clamp", sd: float = 0.05, decorrelate: bool = False) -> None:
        super().__init__(seeds, size, device)
        if activation not in ("clamp", "sigmoid"):
            raise MethodError(unknown("pixel activation", activation, ("clamp", "sigmoid")))
        if decorrelate and activation != "sigmoid":
            raise MethodError("decorrelate=True needs activation='sigmoid'")
        self.activation, self.sd, self.decorrelate = activation, float(sd), bool(decorrelate)
        noise = per_image(self.seeds, (3, *self.size), self.device) * self.sd
        self.pixels = nn.Parameter(noise + 0.5 if activation == "clamp" else noise)
        self.project_()

    def forward(self) -> torch.Tensor:
        if self.activation == "clamp":
            return self.pixels
        x = to_rgb(self.pixels) if self.decorrelate else self.pixels
        return torch.sigmoid(x)

    def project_(self) -> None:
        if self.activation == "clamp":
            with torch.no_grad():
                self.pixels.clamp_(0.0, 1.0)

    def set_image_(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            if self.activation == "clamp":
                self.pixels.copy_(x.clamp(0, 1))
            else:
                v = logit(x)
                self.pixels.copy_(from_rgb(v) if self.decorrelate else v)

    def options(self) -> dict:
        return {"activation": self.activation, "sd": self.sd, "decorrelate": self.decorrelate}


@register_param
class FourierImage(ImageParam):
    """Image = ``sigmoid(colour(irfft2(spectrum * 1/f**decay_power)))``; the spectrum is optimised.

    Args:
        sd: standard deviation of the initial spectrum (real and imaginary parts).
        decay_power: exponent of the frequency scaling (1 = natural images' 1/f amplitude; 0 = plain pixels in
            an orthonormal Fourier basis).
        decorrelate: use decorrelated colour.
    """

    name = "fourier"

    def __init__(self, seeds: Sequence[int], size: int | Sequence[int], device: torch.device | str = "cpu",
                 sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True) -> None:
        super().__init__(seeds, size, device)
        h, w = self.size
        self.sd, self.decay_power, self.decorrelate = float(sd), float(decay_power), bool(decorrelate)
        self.register_buffer("scale", power_law(h, w, self.decay_power, self.device) * FOURIER_GAIN)
        self.spectrum = nn.Parameter(per_image(self.seeds, (3, h, w // 2 + 1, 2), self.device) * self.sd)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        x = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        return torch.sigmoid(to_rgb(x) if self.decorrelate else x)

    def set_image_(self, x: torch.Tensor) -> None:
        v = logit(x.detach().to(self.spectrum.dtype))
        v = from_rgb(v) if self.decorrelate else v
        spec = torch.fft.rfft2(v, norm="ortho") / self.scale
        with torch.no_grad():
            self.spectrum.copy_(torch.view_as_real(spec))

    def options(self) -> dict:
        return {"sd": self.sd, "decay_power": self.decay_power, "decorrelate": self.decorrelate}


@register_param
class MacoImage(ImageParam):
    """MACO: image = ``sigmoid(colour(standardise(irfft2(magnitude * exp(i * phase)))))``; only the phase is
    optimised, the magnitude stays that of natural images.

    Args:
        magnitude: ``"photos"`` (mean spectrum of skimage's sample photos, see
            :func:`~cnnscope.featurevis.spectra.natural_magnitude`) or ``"power"`` (a ``1/f**decay_power`` law).
        decay_power: exponent for ``magnitude="power"``.
    """

    name = "maco"

    def __init__(self, seeds: Sequence[int], size: int | Sequence[int], device: torch.device | str = "cpu",
                 magnitude: str = "photos", decay_power: float = 1.0) -> None:
        super().__init__(seeds, size, device)
        h, w = self.size
        if magnitude == "photos":
            mag = natural_magnitude(h, w, self.device)
        elif magnitude == "power":
            mag = power_law(h, w, decay_power, self.device).expand(3, -1, -1).clone()
        else:
            raise MethodError(unknown("MACO magnitude", magnitude, ("photos", "power")))
        self.magnitude_source, self.decay_power = magnitude, float(decay_power)
        self.register_buffer("magnitude", mag)
        uniform = per_image(self.seeds, (3, h, w // 2 + 1), self.device, draw=torch.rand)
        self.phase = nn.Parameter((uniform * 2 - 1) * math.pi)

    def forward(self) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        x = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        flat = x.flatten(1)
        x = (x - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-4)
        return torch.sigmoid(to_rgb(x))

    def options(self) -> dict:
        return {"magnitude": self.magnitude_source, "decay_power": self.decay_power}


#: name -> class of every parameterization
def make_param(name: str, seeds: Sequence[int], size: int | Sequence[int], *, device: torch.device | str = "cpu",
               **options: object) -> ImageParam:
    """Build the parameterization called ``name`` (see :data:`PARAMS`)."""
    cls = PARAMS.get(name)
    try:
        return cls(seeds, size, device, **options)  # type: ignore[arg-type]
    except TypeError as exc:
        raise MethodError(f"bad options for the {name!r} parameterization: {exc}") from None
