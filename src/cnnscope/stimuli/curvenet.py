"""A hand-built curve-detecting CNN: each unit's kernel is an arc template drawn by formula (not by the renderer).

Cammarata et al., *Curve Detectors* (Distill 2020) close with a curve-detector network written by hand; this is a
one-layer version of it, used as ground truth by the tuning, tracing, spline and equivariance tests.

Unit ``j`` of :class:`CurveNet` correlates the image with a ridge along an arc of radius ``radius`` whose convex
side faces ``orientations[j]`` degrees (counter-clockwise, 0 = right, y up), minus the same ridge for the opposite
curvature (both arcs share their tangent at the centre, so straight strokes cancel and curves bending the other way
inhibit). Across the arc the ridge has a difference-of-Gaussians profile that integrates to zero, so strokes that
merely cross it cancel too: only a white curve of that orientation and curvature, on black, drives the unit.
An optional last unit is isotropic (a centre-surround blob detector) and has no preferred orientation.

The units are rotated copies of one kernel (each drawn at its own orientation), so their weight-level
equivariance (:mod:`.equivariance`) is near 1 by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import CnnscopeError
from ..models import LoadedModel, wrap

#: the layer whose output holds the curve units (``"act"`` is the ReLU after it)
LAYER = "conv"


def arc_template(orientation: float, radius: float, size: int, half_span: float = 30.0, sigma: float = 1.0,
                 surround: float = 2.5) -> np.ndarray:
    """``[size, size]`` kernel: a zero-integral difference-of-Gaussians ridge along the arc (rows top to bottom)."""
    c = (size - 1) / 2
    xs = np.arange(size) - c
    x, y = np.meshgrid(xs, -xs)  # y up
    t = math.radians(orientation)
    cx, cy = -radius * math.cos(t), -radius * math.sin(t)
    vx, vy = x - cx, y - cy
    phi = np.arctan2(vy, vx) - t
    phi = (phi + np.pi) % (2 * np.pi) - np.pi
    d = np.abs(np.hypot(vx, vy) - radius)
    profile = np.exp(-d ** 2 / (2 * sigma ** 2)) - sigma / surround * np.exp(-d ** 2 / (2 * surround ** 2))
    return profile * (np.abs(phi) <= math.radians(half_span))


def blob_template(size: int) -> np.ndarray:
    """``[size, size]`` zero-mean centre-surround kernel (no preferred orientation)."""
    c = (size - 1) / 2
    xs = np.arange(size) - c
    r2 = xs[None, :] ** 2 + xs[:, None] ** 2
    k = np.exp(-r2 / (2 * 2.0 ** 2)) - 0.25 * np.exp(-r2 / (2 * 4.0 ** 2))
    return k - k.mean()


class CurveNet(nn.Module):
    """``conv(KxK, same padding) -> ReLU(inplace) -> GAP -> linear``; input is white-on-black RGB in [0, 1].

    Args:
        orientations: the build orientation (degrees, the convex side) of each curve unit, in channel order.
        radius: the arc radius of every unit in pixels.
        kernel: kernel side in pixels (odd).
        blob: add an isotropic centre-surround unit as the last channel.

    Attributes:
        orientations: the build orientations (``tuple`` of floats, one per curve unit).
        radius: the build radius.
    """

    def __init__(self, orientations: Sequence[float] = tuple(range(0, 360, 30)), radius: float = 8.0,
                 kernel: int = 15, blob: bool = False) -> None:
        super().__init__()
        if kernel < 3 or kernel % 2 == 0 or not radius > 0 or not len(orientations):
            raise CnnscopeError(f"CurveNet needs an odd kernel >= 3, a radius > 0 and at least one orientation, got "
                                f"kernel={kernel}, radius={radius}, {len(orientations)} orientations")
        self.orientations = tuple(float(o) for o in orientations)
        self.radius = float(radius)
        kernels = [arc_template(o, radius, kernel) - arc_template(o + 180, radius, kernel) for o in self.orientations]
        if blob:
            kernels.append(blob_template(kernel))
        w = torch.tensor(np.stack(kernels), dtype=torch.float32)[:, None].repeat(1, 3, 1, 1) / 3
        self.conv = nn.Conv2d(3, len(kernels), kernel, padding=kernel // 2)
        with torch.no_grad():
            self.conv.weight.copy_(w)
            self.conv.bias.fill_(-0.1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(len(kernels), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def curve_network(orientations: Sequence[float] = tuple(range(0, 360, 30)), *, radius: float = 8.0,
                  kernel: int = 15, blob: bool = False, size: int = 31) -> LoadedModel:
    """The hand-built :class:`CurveNet` as a ``LoadedModel`` fed pictures in [0, 1] as they are (no normalisation).

    Its curve units are the channels of :data:`LAYER` (``"conv"``), one per orientation, in that order.

    Args:
        orientations, radius, kernel, blob: see :class:`CurveNet`.
        size: the input size (stimuli and traced images may have any size: the network is fully convolutional).
    """
    return wrap(CurveNet(orientations, radius, kernel, blob), input_size=size, mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0))
