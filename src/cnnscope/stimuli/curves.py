"""Synthetic stimuli: anti-aliased curves, angles (sharp or rounded) and lines, each drawn in its bounding box.

The stimuli of Cammarata et al., *Curve Detectors* (Distill 2020), section "Synthetic curves": each shape is
described by a handful of numbers (orientation, radius, ...) and drawn centred in the image, so that a unit
whose receptive field sits at the image centre sees it.

Conventions (shared by every kind):

* Coordinates are pixels; the shape's reference point (a curve's midpoint, an angle's apex, a line's middle)
  lies at the image centre plus ``offset``. Angles are in degrees, counter-clockwise, 0 = pointing right,
  90 = pointing up (as the image is displayed).
* ``orientation`` of a curve or an angle is the direction its convex side faces (the outward normal at the
  midpoint / apex), so curves and angles have a 360 degree period. A line's ``orientation`` is the direction of
  the line itself (180 degree period).
* Rendering is anti-aliased by analytic coverage: every sample of a pixel's ``supersample x supersample`` grid
  computes the exact distance to the shape and the fraction of a sample-sized box that the stroke (or the
  filled region) covers across the boundary; the pixel is the mean of its samples. :func:`draw` returns these
  exact values (what the tuning measurements feed the model), :func:`render` the ``uint8`` pictures.

A stimulus kind is one class decorated with :func:`register_stimulus`: a frozen keyword-only dataclass with a
``kind`` name, a ``sweep_param``, an ``outline()`` (its bounding points) and a ``distance()`` (the exact distance
of sample points to the shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..errors import CnnscopeError, unknown
from ..images import to_uint8
from ..registry import Registry

Color = tuple[float, float, float]
BLACK: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)


def _color(value: Sequence[float], name: str) -> Color:
    c = tuple(float(v) for v in value)
    if len(c) != 3 or not all(0.0 <= v <= 1.0 for v in c):
        raise CnnscopeError(f"{name} must be three numbers in [0, 1] (RGB), got {value!r}")
    return c  # type: ignore[return-value]


# -- geometry (numpy, broadcasting over [n, 1, 1] parameters and [1, h, w] samples) -------------------------------
def _segment_distance(px: np.ndarray, py: np.ndarray, ax: np.ndarray, ay: np.ndarray, bx: np.ndarray,
                      by: np.ndarray) -> np.ndarray:
    dx, dy = bx - ax, by - ay
    length2 = np.maximum(dx * dx + dy * dy, 1e-12)
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _arc_distance(px: np.ndarray, py: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray,
                  mid: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Distance to the arc of centre ``c``, radius ``r`` spanning ``mid +- half`` (radians, ``half <= pi``)."""
    vx, vy = px - cx, py - cy
    rho = np.hypot(vx, vy)
    # inside the arc's wedge <=> the angle between v and the mid direction is at most ``half``
    within = vx * np.cos(mid) + vy * np.sin(mid) >= rho * np.cos(half)
    ends = np.minimum(np.hypot(vx - r * np.cos(mid + half), vy - r * np.sin(mid + half)),
                      np.hypot(vx - r * np.cos(mid - half), vy - r * np.sin(mid - half)))
    return np.where(within, np.abs(rho - r), ends)


def _params(items: Sequence[Stimulus], *names: str) -> list[np.ndarray]:
    return [np.array([float(getattr(s, n)) for s in items], np.float32)[:, None, None] for n in names]


@dataclass(frozen=True, kw_only=True)
class Stimulus:
    """Base class of a stimulus: colours and stroke width shared by every kind."""

    width: float = 3.0
    color: Color = BLACK
    background: Color = WHITE

    kind = "stimulus"
    #: the parameter a tuning sweep varies by default (besides orientation)
    sweep_param = ""
    #: orientation period in degrees (a line looks the same after 180 degrees)
    period = 360.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "color", _color(self.color, "color"))
        object.__setattr__(self, "background", _color(self.background, "background"))
        if not self.width > 0:
            raise CnnscopeError(f"{self.kind}: width must be > 0 pixels, got {self.width}")

    def to_dict(self) -> dict:
        """JSON-ready parameters, with the kind."""
        d = asdict(self)
        d["color"], d["background"] = list(self.color), list(self.background)
        return {"kind": self.kind, **d}

    def with_(self, **changes: object) -> Stimulus:
        """A copy with some parameters changed."""
        return replace(self, **changes)

    def outline(self) -> np.ndarray:
        """Points ``[n, 2]`` (x, y up, around the reference point) whose bounding box holds the shape."""
        raise NotImplementedError

    @staticmethod
    def distance(items: Sequence[Stimulus], px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Distance of sample points to each shape, and for filled shapes which points are inside.

        Args:
            items: stimuli of this kind; their parameters broadcast as ``[n, 1, 1]``.
            px, py: sample coordinates (x right, y up, around the reference point), broadcastable to ``[1, h, w]``.

        Returns:
            ``(distance [n, h, w], inside [n, h, w] or None for a stroked shape)``.
        """
        raise NotImplementedError


#: the registry of stimulus kinds (name: the class's ``kind``)
STIMULI: Registry[type[Stimulus]] = Registry("stimulus kind", package="cnnscope.stimuli", name_attr="kind")
#: class decorator adding a stimulus kind to :data:`STIMULI`
register_stimulus = STIMULI.register


@register_stimulus
@dataclass(frozen=True, kw_only=True)
class Curve(Stimulus):
    """An arc of a circle.

    Attributes:
        orientation: direction (degrees) the convex side faces.
        radius: circle radius in pixels (curvature = 1 / radius).
        span: angular width of the arc in degrees (360 = a full circle).
        filled: fill the circular segment between the arc and its chord instead of stroking the arc.
    """

    orientation: float = 0.0
    radius: float = 20.0
    span: float = 90.0
    filled: bool = False

    kind = "curve"
    sweep_param = "radius"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise CnnscopeError(f"curve radius must be a finite number > 0 pixels, got {self.radius} "
                                "(use a Line for infinite radius)")
        if not 0 < self.span <= 360:
            raise CnnscopeError(f"curve span must be in (0, 360] degrees, got {self.span}")

    @property
    def curvature(self) -> float:
        return 1.0 / self.radius

    def outline(self) -> np.ndarray:
        """Points ``[n, 2]`` (x, y up) whose bounding box, padded by a few pixels, holds the shape."""
        t, half = math.radians(self.orientation), math.radians(self.span) / 2
        phi = np.linspace(t - half, t + half, 513)
        return np.stack([self.radius * (np.cos(phi) - math.cos(t)), self.radius * (np.sin(phi) - math.sin(t))], 1)

    @staticmethod
    def distance(items: Sequence[Curve], px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        theta, r, span = _params(items, "orientation", "radius", "span")
        theta, half = np.radians(theta), np.radians(span) / 2
        ux, uy = np.cos(theta), np.sin(theta)
        cx, cy = -r * ux, -r * uy
        d = _arc_distance(px, py, cx, cy, r, theta, half)
        if not items[0].filled:
            return d, None
        # filled: the circular segment between the arc and its chord
        chord = _segment_distance(px, py, cx + r * np.cos(theta + half), cy + r * np.sin(theta + half),
                                  cx + r * np.cos(theta - half), cy + r * np.sin(theta - half))
        full = half >= np.pi - 1e-9
        d = np.where(full, d, np.minimum(d, chord))
        vx, vy = px - cx, py - cy
        inside = (np.hypot(vx, vy) < r) & (full | (vx * ux + vy * uy > r * np.cos(half)))
        return d, inside


@register_stimulus
@dataclass(frozen=True, kw_only=True)
class Angle(Stimulus):
    """Two straight arms meeting at a corner, optionally rounded by a circular fillet.

    Attributes:
        orientation: direction (degrees) the corner points to (the outward bisector).
        opening: angle between the arms in degrees (0 < opening < 180; 90 = right angle).
        corner_radius: radius of the fillet tangent to both arms in pixels; 0 = a sharp corner.
        arm: length of each arm in pixels, measured from the (virtual) sharp corner.
    """

    orientation: float = 0.0
    opening: float = 90.0
    corner_radius: float = 0.0
    arm: float = 30.0

    kind = "angle"
    sweep_param = "arm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.opening < 180:
            raise CnnscopeError(f"angle opening must be in (0, 180) degrees, got {self.opening}")
        if self.corner_radius < 0 or not self.arm > 0:
            raise CnnscopeError(f"angle needs corner_radius >= 0 and arm > 0, got {self.corner_radius}, {self.arm}")
        if self.tangent_length > self.arm:
            most = self.arm * math.tan(math.radians(self.opening) / 2)
            raise CnnscopeError(f"angle corner_radius {self.corner_radius} is too large for arms of {self.arm} px "
                                f"at opening {self.opening} (at most {most:.3g})")

    @property
    def tangent_length(self) -> float:
        """Distance from the sharp corner to where the fillet meets each arm."""
        return self.corner_radius / math.tan(math.radians(self.opening) / 2)

    def outline(self) -> np.ndarray:
        """The sharp corner and both arm ends (the shape lies in their triangle), ``[3, 2]``."""
        t, half = math.radians(self.orientation), math.radians(self.opening) / 2
        shift = self.corner_radius / math.sin(half) - self.corner_radius
        v = np.array([shift * math.cos(t), shift * math.sin(t)])
        ends = [v + self.arm * np.array([math.cos(t + math.pi + sg * half), math.sin(t + math.pi + sg * half)])
                for sg in (1.0, -1.0)]
        return np.stack([v, *ends])

    @staticmethod
    def distance(items: Sequence[Angle], px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, None]:
        theta, opening, rho, arm = _params(items, "orientation", "opening", "corner_radius", "arm")
        theta, half_open = np.radians(theta), np.radians(opening) / 2
        ux, uy = np.cos(theta), np.sin(theta)
        to_center = rho / np.sin(half_open)  # sharp corner -> fillet centre
        vx, vy = (to_center - rho) * ux, (to_center - rho) * uy  # the sharp corner; the apex is at the origin
        fx, fy = vx - to_center * ux, vy - to_center * uy
        tangent = rho / np.tan(half_open)
        d = _arc_distance(px, py, fx, fy, rho, theta, np.pi / 2 - half_open)
        for sign in (1.0, -1.0):
            back = theta + np.pi + sign * half_open  # direction of one arm, from the corner
            bx, by = np.cos(back), np.sin(back)
            d = np.minimum(d, _segment_distance(px, py, vx + tangent * bx, vy + tangent * by, vx + arm * bx,
                                                vy + arm * by))
        return d, None


@register_stimulus
@dataclass(frozen=True, kw_only=True)
class Line(Stimulus):
    """A straight segment through the centre.

    Attributes:
        orientation: direction of the line in degrees (0 = horizontal); 180 degree period.
        length: length in pixels.
    """

    orientation: float = 0.0
    length: float = 40.0

    kind = "line"
    sweep_param = "length"
    period = 180.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.length > 0:
            raise CnnscopeError(f"line length must be > 0 pixels, got {self.length}")

    def outline(self) -> np.ndarray:
        """Both end points, ``[2, 2]``."""
        t = math.radians(self.orientation)
        e = np.array([math.cos(t), math.sin(t)]) * self.length / 2
        return np.stack([-e, e])

    @staticmethod
    def distance(items: Sequence[Line], px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, None]:
        theta, length = _params(items, "orientation", "length")
        theta = np.radians(theta)
        hx, hy = np.cos(theta) * length / 2, np.sin(theta) * length / 2
        return _segment_distance(px, py, -hx, -hy, hx, hy), None


def stimulus_class(kind: str) -> type[Stimulus]:
    """The stimulus class registered as ``kind`` (close matches on a typo)."""
    return STIMULI.get(kind)


def make_stimulus(kind: str, **params: object) -> Stimulus:
    """Build one stimulus of ``kind``; unknown parameter names are reported with the valid ones."""
    cls = stimulus_class(kind)
    valid = [f.name for f in fields(cls)]
    for name in params:
        if name not in valid:
            raise CnnscopeError(unknown(f"{kind} parameter", name, valid))
    return cls(**params)  # type: ignore[arg-type]


def grid(kind: str, orientations: Sequence[float], levels: Sequence[float], *, param: str | None = None,
         **fixed: object) -> list[Stimulus]:
    """Stimuli for every ``(level, orientation)`` pair, levels in the outer loop.

    Args:
        kind: a name in :data:`STIMULI`.
        orientations: orientations in degrees.
        levels: values of ``param``.
        param: the swept parameter (default: the kind's ``sweep_param``, e.g. a curve's ``radius``).
        **fixed: other parameters shared by all stimuli.

    Returns:
        ``len(levels) * len(orientations)`` stimuli, index ``i * len(orientations) + j`` holding
        ``levels[i]`` and ``orientations[j]``.
    """
    param = param or stimulus_class(kind).sweep_param
    return [make_stimulus(kind, **{**fixed, param: float(v), "orientation": float(o)})
            for v in levels for o in orientations]


# -- rendering (only each shape's bounding box is evaluated) -------------------------------------------------------
def _coverage(dist: np.ndarray, inside: np.ndarray | None, width: np.ndarray, h: float) -> np.ndarray:
    """Fraction of a sample box of half-size ``h`` covered by the stroke (or by the filled region)."""
    if inside is None:  # stroke of half-width a around the path, sample box [d - h, d + h] along the normal
        a = width / 2
        return np.clip(np.minimum(dist + h, a) - np.maximum(dist - h, -a), 0.0, 2 * h) / (2 * h)
    signed = np.where(inside, -dist, dist)
    return np.clip((h - signed) / (2 * h), 0.0, 1.0)


def _window(stim: Stimulus, size: tuple[int, int], offset: tuple[float, float]) -> tuple[int, int, int, int]:
    """Pixel rows ``[r0, r1)`` and columns ``[c0, c1)`` that can be touched by ``stim`` (may be empty)."""
    pts = stim.outline()
    pad = stim.width / 2 + 2.0
    h, w = size
    x0, x1 = pts[:, 0].min() - pad + offset[0], pts[:, 0].max() + pad + offset[0]
    y0, y1 = pts[:, 1].min() - pad + offset[1], pts[:, 1].max() + pad + offset[1]
    c0, c1 = max(0, math.floor(x0 + w / 2)), min(w, math.ceil(x1 + w / 2))
    r0, r1 = max(0, math.floor(h / 2 - y1)), min(h, math.ceil(h / 2 - y0))
    return r0, max(r0, r1), c0, max(c0, c1)


def _coverage_map(stim: Stimulus, size: tuple[int, int], supersample: int, offset: tuple[float, float],
                  window: tuple[int, int, int, int]) -> np.ndarray:
    """Coverage in [0, 1] of the pixels of ``window``, shape ``[r1 - r0, c1 - c0]``."""
    (h, w), s = size, supersample
    r0, r1, c0, c1 = window
    px = ((np.arange(c0 * s, c1 * s) + 0.5) / s - w / 2 - offset[0]).astype(np.float32)[None, None, :]
    py = (h / 2 - (np.arange(r0 * s, r1 * s) + 0.5) / s - offset[1]).astype(np.float32)[None, :, None]
    dist, inside = type(stim).distance([stim], px, py)
    cov = _coverage(dist[0], None if inside is None else inside[0], np.float32(stim.width), 0.5 / s)
    return cov.reshape(r1 - r0, s, c1 - c0, s).mean(axis=(1, 3))


def draw(stimuli: Stimulus | Sequence[Stimulus], size: int | tuple[int, int] = 64, *, supersample: int = 3,
         offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Draw stimuli with their exact anti-aliased coverage, as ``float32`` RGB values in [0, 1].

    This is what the tuning measurements feed the model (no rounding to 8 bits); :func:`render` gives pictures.
    Only the bounding box of each shape is evaluated, so small shapes in large images are cheap.

    Args:
        stimuli: one stimulus or a sequence (kinds may be mixed).
        size: output ``H`` (square) or ``(H, W)`` in pixels.
        supersample: samples per pixel side (1 = one analytic-coverage sample at the pixel centre).
        offset: shift of every shape's reference point from the image centre, ``(x right, y up)`` pixels.

    Shape:
        - Output: ``[N, H, W, 3]`` (``[H, W, 3]`` for a single stimulus).
    """
    single = isinstance(stimuli, Stimulus)
    items = [stimuli] if single else list(stimuli)
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(hw) < 1 or supersample < 1:
        raise CnnscopeError(f"draw() needs a size >= 1 and supersample >= 1, got {size!r}, {supersample!r}")
    bad = [s for s in items if not isinstance(s, Stimulus)]
    if bad:
        raise CnnscopeError(f"draw() takes Stimulus objects ({', '.join(STIMULI.names())}), got "
                            f"{type(bad[0]).__name__}")
    off = (float(offset[0]), float(offset[1]))
    out = np.empty((len(items), hw[0], hw[1], 3), np.float32)
    for i, stim in enumerate(items):
        fg, bg = np.array(stim.color, np.float32), np.array(stim.background, np.float32)
        out[i] = bg
        r0, r1, c0, c1 = _window(stim, hw, off)
        if r1 > r0 and c1 > c0:
            cov = _coverage_map(stim, hw, supersample, off, (r0, r1, c0, c1))
            out[i, r0:r1, c0:c1] = bg + cov[..., None] * (fg - bg)
    return out[0] if single else out


def render(stimuli: Stimulus | Sequence[Stimulus], size: int | tuple[int, int] = 64, *, supersample: int = 3,
           offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Pictures of stimuli: :func:`draw` rounded to ``uint8``.

    Shape:
        - Output: ``uint8 [N, H, W, 3]`` (``[H, W, 3]`` for a single stimulus).
    """
    return to_uint8(draw(stimuli, size, supersample=supersample, offset=offset))
