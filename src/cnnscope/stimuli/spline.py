"""Spline curve stimuli drawn differentiably, and the curve a unit prefers (Cammarata et al., *Curve Detectors*,
Distill 2020, "Spline parameterization", Figs. 28-31).

A curve is a cubic Bezier with four control points, a stroke width and a grey stroke on a grey background. It is
drawn by *soft* distance-to-curve rendering: the curve is sampled densely, every pixel's distance ``d`` to the
nearest sample is measured, and the pixel's coverage is ``sigmoid((width / 2 - d) / softness)``, so the
picture is differentiable in the control points, the width and the contrast. :func:`prefer_curve` maximises a unit
over these parameters from several starts (one batch) with Adam and keeps the best: the curve the unit prefers.

Coordinates are pixels ``(x right, y up)`` around the image centre, as the ``offset`` of the other stimuli; a
pixel ``(row, col)`` has its centre at ``(col + 0.5 - W / 2, H / 2 - row - 0.5)``. Orientations are degrees,
counter-clockwise, 0 = right, and, as for :class:`~cnnscope.stimuli.curves.Curve`, name the direction the convex
side faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture
from ..errors import CnnscopeError
from ..images import to_uint8
from ..models import LoadedModel, ModelLike, as_model
from ..units import Unit, read_unit
from .responses import rf_offset, stimulus_size

#: spline curves per forward pass when ``batch_size`` is ``None``
CPU_BATCH, GPU_BATCH = 32, 128


def bezier(control: torch.Tensor, n: int = 64) -> torch.Tensor:
    """Points of cubic Bezier curves at ``n`` evenly spaced parameters ``t`` in [0, 1].

    Shape:
        - control: ``[B, 4, 2]`` (or ``[4, 2]``); Output: ``[B, n, 2]`` (or ``[n, 2]``).
    """
    t = torch.linspace(0.0, 1.0, n, dtype=control.dtype, device=control.device)[:, None]
    basis = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t ** 2 * (1 - t), t ** 3], dim=-2)  # [n, 4, 1]
    return (basis * control.unsqueeze(-3)).sum(dim=-2)


def pixel_centres(size: tuple[int, int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """``[H * W, 2]`` pixel centres ``(x right, y up)`` around the image centre, rows top to bottom."""
    h, w = size
    ys = h / 2 - (torch.arange(h, device=device, dtype=dtype) + 0.5)
    xs = torch.arange(w, device=device, dtype=dtype) + 0.5 - w / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def curve_distance(points: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Distance of sample points to the nearest of densely sampled curve points (differentiable in the points).

    With curve points ``s`` pixels apart the distance to the curve itself is over-estimated by at most ``s / 2``
    (a quarter pixel for points half a pixel apart); :func:`draw_splines` samples densely enough for that.

    Shape:
        - points: ``[B, n, 2]``; samples: ``[P, 2]``; Output: ``[B, P]``.
    """
    return torch.cdist(samples[None].expand(len(points), -1, -1).contiguous(), points.contiguous()).amin(dim=2)


def draw_splines(control: torch.Tensor, width: torch.Tensor, stroke: torch.Tensor, size: tuple[int, int], *,
                 background: float = 0.5, softness: float = 0.5, n: int = 128) -> torch.Tensor:
    """Soft, differentiable pictures of cubic Bezier strokes, grey values in [0, 1].

    Args:
        control: control points ``(x right, y up)`` around the image centre.
        width: stroke widths in pixels.
        stroke: the stroke's grey level in [0, 1] (contrast = ``stroke - background``).
        size: ``(H, W)``.
        background: the background's grey level.
        softness: the sigmoid's scale across the stroke's edge, pixels.
        n: points sampled along each curve (evenly in ``t``; enough for curves up to ``n / 2`` pixels long to
            be drawn within a quarter pixel).

    Shape:
        - control: ``[B, 4, 2]``; width, stroke: ``[B]``; Output: ``[B, H, W]``.
    """
    d = curve_distance(bezier(control, n), pixel_centres(size, control.device, control.dtype))
    cover = torch.sigmoid((width[:, None] / 2 - d) / softness)
    return (background + cover * (stroke[:, None] - background)).reshape(-1, *size)


def curve_geometry(control: np.ndarray | torch.Tensor, point: tuple[float, float], n: int = 2001) -> dict:
    """Where a cubic Bezier passes nearest ``point``: that distance, the orientation of its convex side there
    (degrees) and its radius of curvature (``inf`` where it is straight).

    The convex side faces away from the centre of curvature, as a :class:`~cnnscope.stimuli.curves.Curve`'s
    ``orientation``.
    """
    c = np.asarray(control.detach().cpu() if isinstance(control, torch.Tensor) else control, np.float64)
    t = np.linspace(0.0, 1.0, n)[:, None]
    p = ((1 - t) ** 3 * c[0] + 3 * t * (1 - t) ** 2 * c[1] + 3 * t ** 2 * (1 - t) * c[2] + t ** 3 * c[3])
    i = int(np.argmin(np.hypot(p[:, 0] - point[0], p[:, 1] - point[1])))
    s = t[i, 0]
    d1 = 3 * (1 - s) ** 2 * (c[1] - c[0]) + 6 * (1 - s) * s * (c[2] - c[1]) + 3 * s ** 2 * (c[3] - c[2])
    d2 = 6 * (1 - s) * (c[2] - 2 * c[1] + c[0]) + 6 * s * (c[3] - 2 * c[2] + c[1])
    speed = float(np.hypot(*d1))
    cross = float(d1[0] * d2[1] - d1[1] * d2[0])
    kappa = cross / max(speed, 1e-12) ** 3
    left = np.array([-d1[1], d1[0]]) / max(speed, 1e-12)  # the normal on the left of the direction of travel
    outward = -left if kappa > 0 else left  # the centre of curvature is on the left when the curve turns left
    return {"distance": float(np.hypot(*(p[i] - np.asarray(point)))),
            "orientation": float(math.degrees(math.atan2(outward[1], outward[0])) % 360.0),
            "radius": float(1.0 / abs(kappa)) if abs(kappa) > 1e-12 else math.inf,
            "tangent": float(math.degrees(math.atan2(d1[1], d1[0])) % 360.0), "t": float(s)}


@dataclass
class PreferredCurve:
    """The spline curve that maximises a unit (:func:`prefer_curve`).

    Attributes:
        unit: the unit maximised.
        control: control points ``[4, 2]`` ``(x right, y up)`` around the image centre (CPU).
        width: stroke width, pixels.
        contrast: stroke grey level minus background (positive: a light curve on a darker background).
        background: background grey level.
        value: the unit's activation for :attr:`picture` (the best start's).
        values: every start's final activation, ``[S]`` (CPU).
        centre: the unit's receptive-field centre ``(x, y)`` in the same coordinates.
        geometry: :func:`curve_geometry` at the centre: ``distance``, ``orientation`` (convex side, degrees),
            ``radius``, ``tangent``.
        picture: ``uint8 [H, W, 3]``.
        history: the best start's activation after every step, ``[steps]`` (CPU).
    """

    unit: Unit
    control: torch.Tensor
    width: float
    contrast: float
    background: float
    value: float
    values: torch.Tensor
    centre: tuple[float, float]
    geometry: dict
    picture: np.ndarray
    history: torch.Tensor

    @property
    def orientation(self) -> float:
        """Orientation (convex side, degrees) of the curve where it passes nearest the unit's centre."""
        return self.geometry["orientation"]

    def to_dict(self) -> dict:
        return {"unit": self.unit.spec(), "control": self.control.tolist(), "width": self.width,
                "contrast": self.contrast, "background": self.background, "value": self.value,
                "values": self.values.tolist(), "centre": list(self.centre),
                "geometry": {k: v if math.isfinite(v) else None for k, v in self.geometry.items()},  # straight: None
                "size": list(self.picture.shape[:2]), "history": self.history.tolist()}


def _initial(starts: int, centre: tuple[float, float], length: float, gen: torch.Generator) -> torch.Tensor:
    """``[S, 4, 2]`` gently bent Bezier curves through ``centre``, tangents spread over 180 degrees, both bends."""
    jitter = torch.rand(starts, generator=gen, dtype=torch.float64)
    theta = (torch.arange(starts, dtype=torch.float64) // 2 * 2 + jitter) * math.pi / max(starts, 1)
    bend = torch.where(torch.arange(starts) % 2 == 0, 1.0, -1.0).double() * length * (0.1 + 0.2 * jitter)
    t = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    nrm = torch.stack([-t[:, 1], t[:, 0]], 1)
    c = torch.tensor(centre, dtype=torch.float64)
    along = torch.tensor([-0.5, -1 / 6, 1 / 6, 0.5], dtype=torch.float64) * length
    lift = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    return c + along[None, :, None] * t[:, None] + lift[None, :, None] * bend[:, None, None] * nrm[:, None]


def _read(m: LoadedModel, cap: Capture, images: torch.Tensor, u: Unit) -> torch.Tensor:
    x = m.to_input(images[:, None].expand(-1, 3, -1, -1)).to(m.dtype)
    cap.run(x)
    return read_unit(cap[u.layer], u.channel, u.position, u.layer).float()


def prefer_curve(model: ModelLike, unit: Unit, *, size: int | tuple[int, int] | None = None, starts: int = 12,
                 steps: int = 150, lr: float = 0.4, width: tuple[float, float] = (1.0, 4.0), background: float = 0.5,
                 length: float | None = None, pre_activation: bool = False, batch_size: int | None = None,
                 seed: int = 0, progress: bool = False) -> PreferredCurve:
    """The spline curve (control points, width, contrast) that maximises ``unit``, by gradient ascent.

    ``starts`` curves through the unit's receptive-field centre, their tangents spread over 180 degrees and bent
    both ways, are optimised together with Adam; the start with the largest final activation wins. Gradients go to
    the curves' parameters only (``torch.autograd.grad``): the model is not changed.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        unit: the unit (``cnnscope.unit(layer, channel, position)``); a neuron (``"center"``, ``(row, col)``) is
            read there and the curves start at its receptive-field centre; ``None`` / ``"max"`` positions start at
            the image centre.
        size: image size (default: the model's input size).
        starts: curves optimised together.
        steps: Adam steps.
        lr: Adam's learning rate (control points move about this many pixels per step at first).
        width: the smallest and largest stroke width, pixels.
        background: grey level of the background in [0, 1]; the stroke's grey level is optimised in [0, 1].
        length: initial curve length in pixels (default: a third of the smaller image side).
        pre_activation: read the input of an activation module (``unit.layer`` must be one).
        batch_size: curves per forward pass (``None``: a default for the model's device).
        seed: seeds the starts' jitter.
        progress: show a progress bar over the steps.

    Returns:
        A :class:`PreferredCurve`.
    """
    m = as_model(model)
    if not isinstance(unit, Unit):
        raise CnnscopeError(f"prefer_curve() takes a cnnscope.Unit (cnnscope.unit(layer, channel, position)), got "
                            f"{type(unit).__name__}")
    if starts < 1 or steps < 1 or not lr > 0 or not 0 < width[0] <= width[1] or not 0.0 <= background <= 1.0:
        raise CnnscopeError(f"prefer_curve() needs starts >= 1, steps >= 1, lr > 0, 0 < width[0] <= width[1] and "
                            f"background in [0, 1]; got {starts}, {steps}, {lr}, {width}, {background}")
    hw = stimulus_size(m, size)
    neuron = unit.position == "center" or isinstance(unit.position, tuple)
    centre = rf_offset(m, unit.layer, size=hw, position=unit.position) if neuron else (0.0, 0.0)
    gen = torch.Generator().manual_seed(seed)
    length = float(length or min(hw) / 3)
    dev, dt = m.device, torch.float32
    control = _initial(starts, centre, length, gen).to(dev, dt).requires_grad_(True)
    raw_width = torch.zeros(starts, device=dev, dtype=dt, requires_grad=True)  # the middle of the width range
    raw_stroke = torch.full((starts,), 2.0 if background < 0.5 else -2.0, device=dev, dtype=dt)
    raw_stroke.requires_grad_(True)
    params = [control, raw_width, raw_stroke]
    opt = torch.optim.Adam([{"params": [control], "lr": lr}, {"params": [raw_width, raw_stroke], "lr": 0.1}])
    bs = resolve_batch_size(batch_size, m.device, cpu=CPU_BATCH, gpu=GPU_BATCH)

    def pictures(part: slice) -> torch.Tensor:
        w = width[0] + (width[1] - width[0]) * torch.sigmoid(raw_width[part])
        return draw_splines(control[part], w, torch.sigmoid(raw_stroke[part]), hw, background=background)

    history = []
    with Capture(m.module, unit.layer, pre_activation=pre_activation) as cap:
        for _ in track(range(steps), progress, f"prefer-curve {unit}", total=steps, unit="step"):
            grads = [torch.zeros_like(p) for p in params]
            vals = []
            for part in chunks(starts, bs):
                v = _read(m, cap, pictures(part), unit)
                for g, got in zip(grads, torch.autograd.grad(-v.sum(), params, allow_unused=True)):
                    if got is not None:
                        g += got
                vals.append(v.detach())
            history.append(torch.cat(vals))
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
        with torch.no_grad():
            final = torch.cat([_read(m, cap, pictures(part), unit) for part in chunks(starts, bs)]).cpu()
    best = int(torch.argmax(torch.nan_to_num(final, nan=-math.inf)))
    with torch.no_grad():
        img = pictures(slice(best, best + 1))[0].cpu()
        w = float(width[0] + (width[1] - width[0]) * torch.sigmoid(raw_width[best]))
        stroke = float(torch.sigmoid(raw_stroke[best]))
    ctrl = control.detach()[best].cpu().double()
    return PreferredCurve(unit=unit, control=ctrl, width=w, contrast=stroke - background, background=background,
                          value=float(final[best]), values=final.double(), centre=(float(centre[0]), float(centre[1])),
                          geometry=curve_geometry(ctrl, centre), picture=to_uint8(img[..., None].expand(-1, -1, 3)),
                          history=torch.stack(history)[:, best].double().cpu())

