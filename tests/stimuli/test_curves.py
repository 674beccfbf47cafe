"""The stimulus renderer: closed-form ink areas, orientation conventions, colours, anti-aliasing, errors, the
registry of kinds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.images import to_uint8
from cnnscope.stimuli import (
    STIMULI,
    Angle,
    Curve,
    Line,
    Stimulus,
    draw,
    grid,
    make_stimulus,
    register_stimulus,
    render,
    stimulus_class,
)

#: a non-symmetric example of every registered kind
EXAMPLES = {"curve": dict(radius=14.0, span=100.0, width=2.5), "angle": dict(opening=70.0, corner_radius=4.0, arm=16.0),
            "line": dict(length=22.0, width=1.5),
            "comb": dict(radius=14.0, span=100.0, teeth=5, tooth=6.0, width=2.0),
            "concentric": dict(radius=8.0, span=100.0, rings=3, gap=5.0, width=2.0)}


def test_every_kind_has_an_example():
    assert set(EXAMPLES) == set(STIMULI)


def ink(img: np.ndarray, background: float = 1.0) -> float:
    """Area in pixels covered by black ink on white (coverage summed over pixels)."""
    return float((background - img[..., 0]).sum())


@pytest.mark.parametrize("kind", sorted(STIMULI))
def test_quarter_turn_is_rot90(kind):
    """Orientation is counter-clockwise as displayed: +90 degrees equals rotating the picture a quarter turn."""
    s = make_stimulus(kind, orientation=20.0, **EXAMPLES[kind])
    a = draw(s, 48)
    b = draw(s.with_(orientation=110.0), 48)
    np.testing.assert_allclose(np.rot90(a, 1, axes=(0, 1)), b, atol=2e-5)
    assert ink(a) > 10  # something was drawn


@pytest.mark.parametrize("kind", sorted(STIMULI))
def test_period_and_mirror(kind):
    s = make_stimulus(kind, orientation=0.0, **EXAMPLES[kind])
    a = draw(s, 40)
    np.testing.assert_allclose(draw(s.with_(orientation=s.period), 40), a, atol=2e-5)
    # orientation 0 is symmetric about the horizontal axis (curves/angles face right, lines lie horizontal)
    np.testing.assert_allclose(a[::-1], a, atol=2e-5)
    if kind != "line":  # a curve facing right is not a curve facing left
        assert np.abs(a[:, ::-1] - a).max() > 0.5


@pytest.mark.parametrize("kind", sorted(STIMULI))
def test_integer_offset_is_a_shift(kind):
    s = make_stimulus(kind, orientation=33.0, **EXAMPLES[kind])
    a = draw(s, 64)
    b = draw(s, 64, offset=(5.0, -3.0))  # 5 px right, 3 px down
    np.testing.assert_allclose(np.roll(a, (3, 5), axis=(0, 1)), b, atol=2e-5)


def stroke_area(width: float, length: float) -> float:
    """A round-capped stroke of ``width`` along a path of ``length`` (curvature radius >= width / 2)."""
    return width * length + math.pi * width ** 2 / 4


AREAS = [
    ("line", Line(orientation=17.0, length=30.0, width=3.0), stroke_area(3.0, 30.0)),
    ("thin line", Line(orientation=61.0, length=25.0, width=0.6), stroke_area(0.6, 25.0)),
    ("arc", Curve(orientation=200.0, radius=20.0, span=120.0, width=3.0), stroke_area(3.0, 20.0 * math.radians(120))),
    ("circle", Curve(orientation=10.0, radius=12.0, span=360.0, width=2.0), 2.0 * 2 * math.pi * 12.0),
    ("disk", Curve(orientation=0.0, radius=15.0, span=360.0, filled=True), math.pi * 15.0 ** 2),
    ("segment", Curve(orientation=75.0, radius=20.0, span=120.0, filled=True),
     20.0 ** 2 / 2 * (math.radians(120) - math.sin(math.radians(120)))),
    ("big segment", Curve(orientation=300.0, radius=14.0, span=250.0, filled=True),
     14.0 ** 2 / 2 * (math.radians(250) - math.sin(math.radians(250)))),
    ("rounded angle", Angle(orientation=40.0, opening=90.0, corner_radius=6.0, arm=25.0, width=2.0),
     stroke_area(2.0, 2 * (25.0 - 6.0) + math.radians(90) * 6.0)),
    ("rounded acute angle", Angle(orientation=130.0, opening=50.0, corner_radius=4.0, arm=22.0, width=2.0),
     stroke_area(2.0, 2 * (22.0 - 4.0 / math.tan(math.radians(25))) + math.radians(130) * 4.0)),
]


@pytest.mark.parametrize("name,stim,area", AREAS, ids=[a[0] for a in AREAS])
@pytest.mark.parametrize("supersample", [1, 4])
def test_ink_equals_closed_form_area(name, stim, area, supersample):
    img = draw(stim, 72, supersample=supersample)
    assert ink(img) == pytest.approx(area, rel=0.01)


def test_sharp_angle_is_two_segments():
    """Radius 0 gives a sharp corner: exactly the union of the two arms drawn as lines from the corner."""
    a = Angle(orientation=0.0, opening=90.0, corner_radius=0.0, arm=20.0, width=2.0)
    img = draw(a, 64, supersample=4)
    # each arm is a line of length 20 centred 10 px from the corner along its direction, shifted to that centre
    arms = []
    for sign in (1, -1):
        d = math.radians(180 + sign * 45)
        centre = (10 * math.cos(d), 10 * math.sin(d))
        arms.append(draw(Line(orientation=math.degrees(d), length=20.0, width=2.0), 64, supersample=4,
                           offset=centre))
    union = np.minimum(arms[0], arms[1])  # darker of the two (ink adds up where they overlap only at the corner)
    assert np.abs(img - union).max() < 0.35  # differences only inside the small shared corner square
    assert abs(ink(img) - ink(union)) < 2.0


def test_rounding_moves_the_apex_to_the_centre():
    """The outermost point of the (rounded) corner is the reference point, at the image centre."""
    for radius in (0.0, 5.0, 12.0):
        img = draw(Angle(orientation=0.0, opening=80.0, corner_radius=radius, arm=24.0, width=2.0), 65)
        cols = np.flatnonzero((1 - img[32, :, 0]) > 0.5)
        assert cols.max() == 32  # the stroke's half-width ends at the centre pixel, facing right
        if radius:
            assert (1 - img[32, 31, 0]) > 0.5 and (1 - img[32, 33, 0]) < 0.5


def test_colours_background_and_antialiasing():
    s = Line(orientation=0.0, length=30.0, width=5.0, color=(0.9, 0.2, 0.1), background=(0.0, 0.3, 1.0))
    img = draw(s, 33)
    np.testing.assert_allclose(img[16, 16], [0.9, 0.2, 0.1], atol=1e-6)  # inside the stroke
    np.testing.assert_allclose(img[2, 2], [0.0, 0.3, 1.0], atol=1e-6)  # far away
    slanted = draw(Line(orientation=23.0, length=30.0, width=2.0), 33)
    partial = (slanted[..., 0] > 0.02) & (slanted[..., 0] < 0.98)
    assert partial.sum() > 20  # edges are anti-aliased, not binary
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1


def test_supersampling_converges():
    s = Curve(orientation=37.0, radius=9.0, span=140.0, width=1.3)
    fine = draw(s, 40, supersample=8)
    assert np.abs(draw(s, 40, supersample=3) - fine).max() < 0.12
    assert np.abs(draw(s, 40, supersample=1) - fine).mean() < 0.01


def test_batch_equals_singles_and_keeps_order():
    items = [Curve(orientation=10.0, radius=8.0), Line(orientation=50.0), Curve(orientation=90.0, radius=5.0,
             filled=True), Angle(orientation=200.0, corner_radius=3.0), Line(orientation=120.0, length=12.0)]
    batch = draw(items, (30, 44))
    assert batch.shape == (5, 30, 44, 3)
    for k, s in enumerate(items):
        np.testing.assert_array_equal(batch[k], draw(s, (30, 44)))


def test_shapes_outside_the_canvas_leave_the_background():
    img = draw(Line(orientation=0.0, length=10.0), 20, offset=(100.0, 0.0))
    assert (img == 1.0).all()
    # a huge circle only crosses the canvas: its arc is still drawn where it passes
    big = draw(Curve(orientation=90.0, radius=500.0, span=360.0, width=2.0), 32)
    assert ink(big) == pytest.approx(2.0 * 32, rel=0.05)


def test_grid_order_and_sweep_param():
    stims = grid("curve", [0.0, 90.0, 180.0], [5.0, 10.0], width=1.5)
    assert [(s.radius, s.orientation) for s in stims] == [(5, 0), (5, 90), (5, 180), (10, 0), (10, 90), (10, 180)]
    assert all(s.width == 1.5 for s in stims)
    angles = grid("angle", [45.0], [0.0, 3.0], param="corner_radius")
    assert [a.corner_radius for a in angles] == [0.0, 3.0]
    assert grid("line", [0.0], [7.0])[0].length == 7.0


def test_to_dict_round_trip():
    for kind, params in EXAMPLES.items():
        s = make_stimulus(kind, orientation=12.0, color=(1.0, 0.5, 0.0), **params)
        d = s.to_dict()
        assert d.pop("kind") == kind
        assert make_stimulus(kind, **d) == s


@pytest.mark.parametrize("build", [
    lambda: Curve(radius=0.0), lambda: Curve(radius=float("inf")), lambda: Curve(span=400.0),
    lambda: Angle(opening=180.0), lambda: Angle(corner_radius=30.0, arm=10.0), lambda: Line(length=0.0),
    lambda: Line(width=0.0), lambda: Curve(color=(2.0, 0.0, 0.0)), lambda: Curve(background=(0.0, 1.0)),
    lambda: draw([Curve()], 0), lambda: draw([Curve()], 8, supersample=0), lambda: render(["curve"], 8),
], ids=["radius0", "radius-inf", "span", "opening", "fillet", "length", "width", "color", "background", "size",
        "supersample", "not-a-stimulus"])
def test_invalid_parameters_raise(build):
    with pytest.raises(CnnscopeError):
        build()


def test_unknown_kind_and_parameter_name_suggest():
    with pytest.raises(MethodError, match="curve"):
        stimulus_class("curv")
    with pytest.raises(CnnscopeError, match="radius"):
        make_stimulus("curve", radious=3.0)
    with pytest.raises(TypeError):
        Curve(0.0, 5.0)  # parameters are keyword-only, so a positional width/orientation mix-up cannot happen


def test_render_is_draw_as_pictures():
    items = [Curve(orientation=10.0, radius=8.0, color=(0.9, 0.2, 0.1)), Line(orientation=50.0)]
    pictures = render(items, 24, supersample=2)
    assert pictures.dtype == np.uint8 and pictures.shape == (2, 24, 24, 3)
    np.testing.assert_array_equal(pictures, to_uint8(draw(items, 24, supersample=2)))
    assert render(items[0], 24).shape == (24, 24, 3)


def test_a_kind_is_one_decorated_class():
    """A filled disk of ``radius``, added inside a scope: usable by name everywhere, gone after the scope."""
    with STIMULI.scoped():
        @register_stimulus
        @dataclass(frozen=True, kw_only=True)
        class Disk(Stimulus):
            orientation: float = 0.0
            radius: float = 5.0

            kind = "disk"
            sweep_param = "radius"

            def outline(self) -> np.ndarray:
                return np.array([[-self.radius, -self.radius], [self.radius, self.radius]])

            @staticmethod
            def distance(items, px, py):
                r = np.array([s.radius for s in items], np.float32)[:, None, None]
                rho = np.hypot(px, py)
                return np.abs(rho - r), rho < r

        assert "disk" in STIMULI.names() and stimulus_class("disk") is Disk
        disks = grid("disk", [0.0, 90.0], [6.0, 10.0])
        assert [d.radius for d in disks] == [6.0, 6.0, 10.0, 10.0]
        img = draw(make_stimulus("disk", radius=10.0), 48, supersample=4)
        assert ink(img) == pytest.approx(math.pi * 10.0 ** 2, rel=0.01)
        with pytest.raises(Exception, match="already registered"):
            register_stimulus(type("Disk2", (Disk,), {"kind": "disk"}))
    assert "disk" not in STIMULI.names()
    with pytest.raises(MethodError, match="disk"):
        stimulus_class("disk")
