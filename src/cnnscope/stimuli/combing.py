"""Side-analysis stimuli of *Curve Detectors* (Cammarata et al., Distill 2020): combs and concentric curves.

- :class:`Comb`: short strokes perpendicular to an arc, evenly spaced along it ("combing": curve detectors respond
  weakly to small lines sticking out of a curve's boundary), optionally with the arc itself (the spine).
- :class:`Concentric`: several arcs of one orientation sharing their centre, radii growing by ``gap`` (the stimulus
  of the concentric-curve units of InceptionV1's conv2d2).

Both are registered stimulus kinds, so every tuning function (:func:`~cnnscope.stimuli.tuning_map`,
``cnnscope tuning --kind comb``, ``cnnscope stimuli --kind concentric``) takes them. They follow the conventions of
:mod:`.curves`: ``orientation`` is the direction the convex side faces; the reference point is the midpoint of
the (innermost) arc, where a :class:`~cnnscope.stimuli.curves.Curve` of the same radius has its midpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CnnscopeError
from .curves import Stimulus, _arc_distance, _params, _segment_distance, register_stimulus


def _count(value: object, what: str, kind: str) -> int:
    """A whole number >= 1 (``--set teeth=12`` arrives as ``12.0``)."""
    n = float(value)  # type: ignore[arg-type]
    if not (n >= 1 and n == int(n)):
        raise CnnscopeError(f"{kind} {what} must be a whole number >= 1, got {value!r}")
    return int(n)


def tooth_angles(orientation: float, span: float, teeth: int) -> np.ndarray:
    """Directions (degrees, from the arc's centre) of a comb's teeth: ``teeth`` evenly spaced over the span, the
    ends included (one tooth: the midpoint)."""
    if teeth == 1:
        return np.array([float(orientation)])
    return orientation + np.linspace(-span / 2, span / 2, teeth)


@register_stimulus
@dataclass(frozen=True, kw_only=True)
class Comb(Stimulus):
    """Short strokes perpendicular to an arc (the arc's radial direction), centred on it.

    Attributes:
        orientation: direction (degrees) the arc's convex side faces.
        radius: radius of the arc the teeth sit on, pixels.
        span: angular width of the arc in degrees (the first and last teeth sit at its ends).
        teeth: number of strokes.
        tooth: length of each stroke in pixels (half inside, half outside the arc).
        spine: also draw the arc itself.
    """

    orientation: float = 0.0
    radius: float = 20.0
    span: float = 90.0
    teeth: int = 7
    tooth: float = 6.0
    spine: bool = False

    kind = "comb"
    sweep_param = "radius"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "teeth", _count(self.teeth, "teeth", self.kind))
        if not (self.radius > 0 and math.isfinite(self.radius)) or not 0 < self.span <= 360:
            raise CnnscopeError(f"comb needs a finite radius > 0 and a span in (0, 360], got {self.radius}, "
                                f"{self.span}")
        if not 0 < self.tooth < 2 * self.radius:
            raise CnnscopeError(f"comb tooth length must be in (0, 2 x radius = {2 * self.radius:g}) pixels, got "
                                f"{self.tooth}")

    def segments(self) -> np.ndarray:
        """The teeth as ``[teeth, 2, 2]`` end points ``(x, y up)`` around the reference point."""
        t = math.radians(self.orientation)
        cx, cy = -self.radius * math.cos(t), -self.radius * math.sin(t)
        phi = np.radians(tooth_angles(self.orientation, self.span, self.teeth))
        u = np.stack([np.cos(phi), np.sin(phi)], 1)
        inner = np.array([cx, cy]) + (self.radius - self.tooth / 2) * u
        outer = np.array([cx, cy]) + (self.radius + self.tooth / 2) * u
        return np.stack([inner, outer], 1)

    def outline(self) -> np.ndarray:
        t, half = math.radians(self.orientation), math.radians(self.span) / 2
        phi = np.linspace(t - half, t + half, 257)
        pts = [np.stack([r * np.cos(phi) - self.radius * math.cos(t), r * np.sin(phi) - self.radius * math.sin(t)],
                        1) for r in (self.radius - self.tooth / 2, self.radius + self.tooth / 2)]
        return np.concatenate(pts)

    @staticmethod
    def distance(items: Sequence[Comb], px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, None]:
        d = None
        for s in items:  # teeth counts differ between items: one shape at a time
            seg = s.segments()
            ds = np.min(np.stack([_segment_distance(px, py, a[0], a[1], b[0], b[1]) for a, b in seg]), axis=0)
            if s.spine:
                t, r = math.radians(s.orientation), s.radius
                ds = np.minimum(ds, _arc_distance(px, py, -r * math.cos(t), -r * math.sin(t), r, t,
                                                  math.radians(s.span) / 2))
            ds = np.broadcast_to(ds, np.broadcast_shapes(px.shape, py.shape))[0]
            d = ds[None] if d is None else np.concatenate([d, ds[None]])
        return d, None  # type: ignore[return-value]


@register_stimulus
@dataclass(frozen=True, kw_only=True)
class Concentric(Stimulus):
    """Arcs of one orientation around one centre, radii ``radius, radius + gap, ...``.

    Attributes:
        orientation: direction (degrees) the convex sides face.
        radius: radius of the innermost arc, pixels (its midpoint is the reference point).
        span: angular width of every arc in degrees.
        rings: number of arcs.
        gap: radius step between neighbouring arcs, pixels.
    """

    orientation: float = 0.0
    radius: float = 10.0
    span: float = 90.0
    rings: int = 3
    gap: float = 6.0

    kind = "concentric"
    sweep_param = "radius"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "rings", _count(self.rings, "rings", self.kind))
        if not (self.radius > 0 and math.isfinite(self.radius)) or not 0 < self.span <= 360 or not self.gap > 0:
            raise CnnscopeError(f"concentric needs radius > 0, a span in (0, 360] and gap > 0, got {self.radius}, "
                                f"{self.span}, {self.gap}")

    def outline(self) -> np.ndarray:
        t, half = math.radians(self.orientation), math.radians(self.span) / 2
        phi = np.linspace(t - half, t + half, 257)
        pts = [np.stack([r * np.cos(phi) - self.radius * math.cos(t), r * np.sin(phi) - self.radius * math.sin(t)],
                        1) for r in (self.radius, self.radius + (self.rings - 1) * self.gap)]
        return np.concatenate(pts)

    @staticmethod
    def distance(items: Sequence[Concentric], px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, None]:
        theta, r, span, gap = _params(items, "orientation", "radius", "span", "gap")
        theta, half = np.radians(theta), np.radians(span) / 2
        cx, cy = -r * np.cos(theta), -r * np.sin(theta)
        rings = np.array([float(s.rings) for s in items], np.float32)[:, None, None]
        d = None
        for k in range(max(s.rings for s in items)):
            dk = _arc_distance(px, py, cx, cy, r + k * gap, theta, half)
            dk = np.where(k < rings, dk, np.inf)  # items with fewer rings
            d = dk if d is None else np.minimum(d, dk)
        return d, None  # type: ignore[return-value]
