"""Random transforms applied to the image before each forward pass ("transformation robustness", Olah et al.
2017): pad, jitter, random scale, random rotate, crop back; MACO's random crops and noise.

Every transform is an ``nn.Module`` called as ``t(x, gens)`` with ``gens`` one ``torch.Generator`` per image:
image ``i``'s random draws come only from ``gens[i]``, so an image transforms the same whatever else is in the
batch. Geometric transforms are affine maps in pixel coordinates centred on the image; a :class:`Pipeline`
multiplies consecutive ones and resamples once (one ``grid_sample``), filling the outside with the pad value.

:func:`standard` is the article's set as used by Lucid: pad 12 (grey 0.5), jitter 8, scale
``1 + (i - 5) / 50`` for ``i`` in ``0..10``, rotate ``-10..10`` degrees (0 five extra times), jitter 4, then
crop back to the image size so the model sees the size it is rendered at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MethodError
from ..registry import Registry

Size = tuple[int, int]


def uniforms(gens: Sequence[torch.Generator], n: int, device: torch.device) -> torch.Tensor:
    """``[len(gens), n]`` uniforms in [0, 1); row ``i`` from ``gens[i]``."""
    return torch.stack([torch.rand(n, generator=g, device=device) for g in gens])


def choose(values: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Pick ``values[floor(u * len)]`` for each uniform ``u``."""
    idx = (u * values.numel()).long().clamp_(0, values.numel() - 1)
    return values[idx]


def eye(b: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.eye(3, device=device, dtype=dtype).expand(b, 3, 3).clone()


def warp(x: torch.Tensor, a: torch.Tensor, out: Size, fill: float = 0.5) -> torch.Tensor:
    """Resample ``x`` so output pixel ``p`` shows input point ``a @ p`` (both in pixel units, centred).

    Points outside the input read ``fill``. Bilinear; integer shifts and centred crops are exact.

    Shape:
        - Input: ``x [B, C, H, W]``, ``a [B, 3, 3]``
        - Output: ``[B, C, out[0], out[1]]``
    """
    b, c, h, w = x.shape
    to_in = torch.tensor([2.0 / w, 2.0 / h, 1.0], device=x.device, dtype=x.dtype)
    from_out = torch.tensor([out[1] / 2.0, out[0] / 2.0, 1.0], device=x.device, dtype=x.dtype)
    theta = (to_in.view(1, 3, 1) * a.to(x.dtype) * from_out.view(1, 1, 3))[:, :2]
    grid = F.affine_grid(theta, [b, c, out[0], out[1]], align_corners=False)
    y = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return y + fill


class Transform(nn.Module):
    """Base class: ``forward(x, gens) -> x`` with one generator per image."""

    def spec(self) -> dict:
        raise NotImplementedError


class Geometric(Transform):
    """An affine transform: :meth:`plan` gives the sampling matrix per image and the output size."""

    #: value read outside the image (``None``: the pipeline's)
    fill: float | None = None

    def plan(self, gens: Sequence[torch.Generator], hw: Size, origin: Size, device: torch.device
             ) -> tuple[torch.Tensor | None, Size]:
        """``(A [B,3,3] or None for identity, output size)`` for an input of size ``hw``; ``origin`` is the
        size the pipeline started from."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        hw = (x.shape[-2], x.shape[-1])
        a, out = self.plan(gens, hw, hw, x.device)
        if a is None and out == hw:
            return x
        return warp(x, eye(x.shape[0], x.device) if a is None else a, out, 0.5 if self.fill is None else self.fill)


class Pad(Geometric):
    """Grow the canvas by ``width`` pixels on every side, filled with ``value``."""

    def __init__(self, width: int = 12, value: float = 0.5) -> None:
        super().__init__()
        if width < 0:
            raise MethodError(f"pad width must be >= 0, got {width}")
        self.width, self.fill = int(width), float(value)

    def plan(self, gens, hw, origin, device):
        return None, (hw[0] + 2 * self.width, hw[1] + 2 * self.width)

    def spec(self) -> dict:
        return {"type": "pad", "width": self.width, "value": self.fill}


class Jitter(Geometric):
    """Shift by a uniform random integer in ``[-d//2, d//2]`` pixels on each axis."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        if d < 1:
            raise MethodError(f"jitter must be >= 1 pixel, got {d}")
        self.d = int(d)

    def plan(self, gens, hw, origin, device):
        u = uniforms(gens, 2, device)
        shift = torch.floor(u * (2 * (self.d // 2) + 1)) - self.d // 2
        a = eye(len(gens), device)
        a[:, 0, 2], a[:, 1, 2] = -shift[:, 0], -shift[:, 1]
        return a, hw

    def spec(self) -> dict:
        return {"type": "jitter", "d": self.d}


class RandomScale(Geometric):
    """Zoom about the centre by a factor drawn uniformly from ``scales`` (the canvas size is kept)."""

    def __init__(self, scales: Sequence[float] = tuple(1 + (i - 5) / 50 for i in range(11))) -> None:
        super().__init__()
        if not scales or min(scales) <= 0:
            raise MethodError(f"scales must be positive numbers, got {scales!r}")
        self.scales = [float(s) for s in scales]

    def plan(self, gens, hw, origin, device):
        s = choose(torch.tensor(self.scales, device=device), uniforms(gens, 1, device)[:, 0])
        a = eye(len(gens), device)
        a[:, 0, 0], a[:, 1, 1] = 1 / s, 1 / s
        return a, hw

    def spec(self) -> dict:
        return {"type": "random_scale", "scales": self.scales}


class RandomRotate(Geometric):
    """Rotate about the centre by an angle (degrees) drawn uniformly from ``angles`` (positive: clockwise on
    screen, as the y axis points down)."""

    def __init__(self, angles: Sequence[float] = tuple(range(-10, 11)) + (0,) * 5) -> None:
        super().__init__()
        if not angles:
            raise MethodError("random_rotate needs at least one angle")
        self.angles = [float(v) for v in angles]

    def plan(self, gens, hw, origin, device):
        deg = choose(torch.tensor(self.angles, device=device), uniforms(gens, 1, device)[:, 0])
        t = deg * (math.pi / 180.0)
        cos, sin = torch.cos(t), torch.sin(t)
        a = eye(len(gens), device)
        a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos, sin, -sin, cos
        return a, hw

    def spec(self) -> dict:
        return {"type": "random_rotate", "angles": self.angles}


class CropBack(Geometric):
    """Centre crop to ``size`` (default: the size the pipeline started from)."""

    def __init__(self, size: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))

    def plan(self, gens, hw, origin, device):
        return None, tuple(self.size or origin)  # type: ignore[return-value]

    def spec(self) -> dict:
        return {"type": "crop_back", "size": list(self.size) if self.size else None}


class Resize(Geometric):
    """Resample to ``size`` (bilinear, no anti-aliasing): e.g. show a 128 px image to the model at 224 px."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise MethodError(f"resize needs a positive size, got {size!r}")

    def plan(self, gens, hw, origin, device):
        a = eye(len(gens), device)
        a[:, 0, 0], a[:, 1, 1] = hw[1] / self.size[1], hw[0] / self.size[0]
        return a, self.size

    def forward(self, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        # alone: edges replicate; inside a pipeline, points past the outer pixel centres blend with the fill
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def spec(self) -> dict:
        return {"type": "resize", "size": list(self.size)}


class RandomCrop(Geometric):
    """MACO-style crop: a square box whose side is a uniform fraction in ``box`` of the image, placed uniformly
    inside it, resized back to the input size."""

    def __init__(self, box: Sequence[float] = (0.5, 1.0)) -> None:
        super().__init__()
        lo, hi = (float(b) for b in box)
        if not 0 < lo <= hi <= 1:
            raise MethodError(f"box must be (low, high) with 0 < low <= high <= 1, got {box!r}")
        self.box = (lo, hi)

    def plan(self, gens, hw, origin, device):
        u = uniforms(gens, 3, device)
        frac = self.box[0] + (self.box[1] - self.box[0]) * u[:, 0]
        a = eye(len(gens), device)
        a[:, 0, 0], a[:, 1, 1] = frac, frac
        a[:, 0, 2] = (u[:, 1] - 0.5) * (1 - frac) * hw[1]
        a[:, 1, 2] = (u[:, 2] - 0.5) * (1 - frac) * hw[0]
        return a, hw

    def spec(self) -> dict:
        return {"type": "random_crop", "box": list(self.box)}


class Noise(Transform):
    """Add Gaussian noise of standard deviation ``std`` (MACO adds noise to every crop)."""

    def __init__(self, std: float = 0.05) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in gens])
        return x + self.std * noise

    def spec(self) -> dict:
        return {"type": "noise", "std": self.std}


class Pipeline(Transform):
    """A sequence of transforms; runs of consecutive :class:`Geometric` ones become one resampling."""

    def __init__(self, transforms: Sequence[Transform] = ()) -> None:
        super().__init__()
        bad = [type(t).__name__ for t in transforms if not isinstance(t, Transform)]
        if bad:
            raise MethodError(f"transforms must be cnnscope Transform modules, got {', '.join(bad)}")
        self.steps = nn.ModuleList(transforms)

    def forward(self, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        if len(gens) != x.shape[0]:
            raise MethodError(f"{len(gens)} generators for a batch of {x.shape[0]} images")
        origin = (x.shape[-2], x.shape[-1])
        hw, a, fill = origin, None, None
        for t in self.steps:
            if isinstance(t, Geometric):
                m, hw = t.plan(gens, hw, origin, x.device)
                a = m if a is None else (a if m is None else a @ m)
                fill = t.fill if fill is None else fill
                continue
            x, a, hw = self._flush(x, a, hw, fill), None, (hw[0], hw[1])
            x = t(x, gens)
        return self._flush(x, a, hw, fill)

    @staticmethod
    def _flush(x: torch.Tensor, a: torch.Tensor | None, hw: Size, fill: float | None) -> torch.Tensor:
        if a is None and hw == (x.shape[-2], x.shape[-1]):
            return x
        a = eye(x.shape[0], x.device) if a is None else a
        return warp(x, a, hw, 0.5 if fill is None else fill)

    def spec(self) -> list[dict]:  # type: ignore[override]
        return [t.spec() for t in self.steps]


#: named transform presets: functions returning a :class:`Pipeline`, added by :func:`register_preset`
PRESETS: Registry[Callable[[], Pipeline]] = Registry("transform preset", package="cnnscope.featurevis")
#: decorator that registers a preset function under its name (or the name given)
register_preset = PRESETS.register
register_preset("none")(Pipeline)


@register_preset("standard")
def standard() -> Pipeline:
    """The article's / Lucid's standard set, followed by a crop back to the rendered size."""
    return Pipeline([Pad(12, 0.5), Jitter(8), RandomScale(), RandomRotate(), Jitter(4), CropBack()])


@register_preset("strong")
def strong() -> Pipeline:
    """Stronger transformation robustness for class visualizations: pad 16, jitter 16, scale 0.8-1.25, rotate
    -20..20 degrees, jitter 8, crop back (the ``class`` recipe)."""
    scales = tuple(0.8 + 0.05 * i for i in range(10))
    angles = tuple(range(-20, 21, 2)) + (0,) * 5
    return Pipeline([Pad(16, 0.5), Jitter(16), RandomScale(scales), RandomRotate(angles), Jitter(8), CropBack()])


@register_preset("maco")
def maco() -> Pipeline:
    """MACO's robustness: a random crop (half to all of the image) and Gaussian noise."""
    return Pipeline([RandomCrop((0.5, 1.0)), Noise(0.05)])


@register_preset("jitter")
def jitter_only(d: int = 4) -> Pipeline:
    """Small jitter only (what the blur variants use to avoid pixel-grid artifacts)."""
    return Pipeline([Jitter(d)])



def make_transforms(spec: str | Pipeline | Sequence[Transform] | None) -> Pipeline:
    """A :class:`Pipeline` from a preset name, a list of transforms, a pipeline or ``None`` (no transforms)."""
    if spec is None:
        return Pipeline()
    if isinstance(spec, Pipeline):
        return spec
    if isinstance(spec, str):
        return PRESETS.get(spec)()
    return Pipeline(list(spec))
