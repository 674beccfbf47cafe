"""Rotation (against scikit-image) and joint tuning curves on the hand-built curve-detecting CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import rotate as sk_rotate

from cnnscope.errors import CnnscopeError
from cnnscope.models import wrap
from cnnscope.stimuli import Curve, draw, joint_tuning, render, rotate_images

from .curvenet import CurveNet

WHITE_ON_BLACK = dict(width=2.0, color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0))
DESIGNED = np.arange(0.0, 360.0, 30.0)


def smooth_image(seed: int, size: int = 33) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 4, size // 4, generator=gen)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("angle", [30.0, -75.0, 180.0])
def test_rotation_matches_scikit_image(angle):
    img = smooth_image(1)
    ours = rotate_images(img, angle, out_size=33)[0].permute(1, 2, 0).numpy()
    ref = sk_rotate(img[0].permute(1, 2, 0).numpy().astype(np.float64), angle, order=1, mode="edge")
    yy, xx = np.mgrid[:33, :33] - 16
    inside = (yy ** 2 + xx ** 2) <= 11 ** 2  # pixels whose source lies inside the image for every angle
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-4)


def test_default_window_and_zero_rotation():
    img = smooth_image(2, 40)
    out = rotate_images(img.repeat(2, 1, 1, 1), [0.0, 90.0])
    assert out.shape == (2, 3, 28, 28)  # floor(40 / sqrt(2))
    torch.testing.assert_close(out[0], img[0, :, 6:34, 6:34], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.rot90(img[0, :, 6:34, 6:34], 1, dims=(1, 2)), atol=1e-5, rtol=0)
    with pytest.raises(CnnscopeError, match="angles"):
        rotate_images(img, [0.0, 1.0, 2.0])


def test_rotating_a_rendered_curve_equals_rendering_it_rotated():
    """The renderer and the rotation share one convention (counter-clockwise, as displayed)."""
    s = Curve(orientation=30.0, radius=10.0, span=120.0, width=3.0)
    img = torch.from_numpy(draw(s, 45, supersample=4)).permute(2, 0, 1)[None]
    turned = rotate_images(img, 40.0, out_size=45)[0].permute(1, 2, 0).numpy()
    want = draw(s.with_(orientation=70.0), 45, supersample=4)
    assert np.abs(turned - want).mean() < 0.01
    assert np.abs(turned - draw(s.with_(orientation=-10.0), 45)).mean() > 0.03  # the other way is wrong


@pytest.fixture(scope="module")
def net():
    return wrap(CurveNet(), input_size=31, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # pictures in [0, 1]


@pytest.fixture(scope="module")
def examples():
    """Per unit: curves at the unit's designed orientation (three radii and widths) as uint8 crops."""
    out = {}
    for u, o in enumerate(DESIGNED):
        stims = [Curve(orientation=float(o), radius=r, width=w, color=(1, 1, 1), background=(0, 0, 0))
                 for r, w in ((6.0, 1.5), (8.0, 2.0), (10.0, 2.5))]
        out[u] = list(render(stims, 31))
    return out


@pytest.fixture(scope="module")
def joint(net, examples):
    return joint_tuning(net, examples, "conv", step=10.0)


def wrapped(d: np.ndarray) -> np.ndarray:
    return (d + 180.0) % 360.0 - 180.0


def test_joint_curves_peak_at_differences_of_preferred_orientation(joint):
    assert joint.curves.shape == (12, 36, 12)
    expected = wrapped(DESIGNED[None, :] - DESIGNED[:, None])  # rotate source examples by this to reach unit u
    err = wrapped(joint.peak_offsets().numpy() - expected)
    assert np.abs(err).max() <= 5.0
    assert (joint.own().argmax(dim=1) == 0).all()  # aligned: each source peaks at 0
    assert joint.curves.device.type == "cpu" and joint.channels.tolist() == list(range(12))


def test_joint_curves_tile_the_orientations(joint):
    norm = (joint.curves / joint.curves.amax(dim=1, keepdim=True)).numpy()
    assert norm.max(axis=2).min() > 0.4  # at every rotation some unit responds with > 40% of its peak
    three = norm[:, :, :3].max(axis=2).min()
    assert three < 0.1  # three neighbouring units alone leave most rotations uncovered


def test_unaligned_curves_and_zscores(net, examples):
    sub = {0: examples[0], 3: examples[3]}
    raw = joint_tuning(net, sub, "conv", channels=[6], step=10.0, align=False)
    assert raw.channels.tolist() == [0, 3, 6] and raw.sources.tolist() == [0, 3]
    assert not raw.aligned
    # the examples sit exactly at the designed orientations, so unaligned peaks are the same differences
    expected = wrapped(DESIGNED[[0, 3, 6]][None] - DESIGNED[[0, 3]][:, None])
    np.testing.assert_allclose(wrapped(raw.peak_offsets().numpy()), expected, atol=10.0)
    mean, std = np.arange(12.0), np.full(12, 2.0)
    z = joint_tuning(net, sub, "conv", channels=[6], step=10.0, align=False, mean=mean, std=std, batch_size=5)
    assert z.in_std
    np.testing.assert_allclose(z.curves.numpy(), (raw.curves.numpy() - mean[[0, 3, 6]]) / 2.0, rtol=1e-4,
                               atol=1e-4)
    assert set(z.to_dict()) >= {"curves", "peak_offsets", "sources", "channels", "angles"}


def test_crops_of_other_sizes_are_resized(net, examples):
    big = [np.kron(c, np.ones((2, 2, 1), np.uint8)) for c in examples[0][:2]]  # 62 x 62
    jt = joint_tuning(net, {0: big}, "conv", step=90.0, crop_size=31, align=False)
    ref = joint_tuning(net, {0: examples[0][:2]}, "conv", step=90.0, align=False)
    assert jt.n_examples.tolist() == [2]
    np.testing.assert_allclose(jt.curves.numpy(), ref.curves.numpy(), rtol=0.2, atol=0.3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(examples={}), "at least one"),
    (dict(examples={0: []}), "no example"),
    (dict(step=7.0), "divide"),
    (dict(step=0.0), "divide"),
])
def test_joint_errors(net, examples, kwargs, match):
    args = dict(examples={0: examples[0][:1]}, step=90.0)
    args.update(kwargs)
    with pytest.raises(CnnscopeError, match=match):
        joint_tuning(net, args.pop("examples"), "conv", **args)
