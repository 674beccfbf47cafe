"""Curve tracing with the hand-built curve network on images of known curves, and the Canny comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.draw import circle_perimeter_aa

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError
from cnnscope.images import save_image
from cnnscope.stimuli.curvenet import curve_network
from cnnscope.stimuli.tracing import compare_with_canny, densify, trace_curves

BUILT = list(range(0, 360, 30))


def known_curves(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A white circle and a half circle (2 px strokes, skimage.draw) on black, and dense points of the true curves."""
    img = np.zeros((size, size))
    truth = []
    for r0, c0, radius, a0, a1 in [(30, 30, 14, 0, 360), (62, 60, 20, 200, 380)]:
        for rad in (radius - 0.5, radius + 0.5):
            rr, cc, val = circle_perimeter_aa(r0, c0, int(round(rad)), shape=img.shape)
            keep = ((np.degrees(np.arctan2(r0 - rr, cc - c0)) - a0) % 360) <= a1 - a0
            img[rr[keep], cc[keep]] = np.maximum(img[rr[keep], cc[keep]], val[keep])
        phi = np.radians(np.linspace(a0, a1, 400))
        truth.append(np.stack([r0 - radius * np.sin(phi), c0 + radius * np.cos(phi)], 1))
    return (np.repeat(img[..., None], 3, 2) * 255).round().astype(np.uint8), np.concatenate(truth)


def nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point of ``a`` to the nearest of ``b``."""
    return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1)


@pytest.fixture(scope="module")
def traced():
    picture, truth = known_curves()
    return picture, truth, trace_curves(curve_network(), picture, "conv", channels=list(range(12)), orientations=BUILT)


def test_tracing_recovers_known_curves(traced):
    picture, truth, tr = traced
    pts = tr.points()
    assert tr.size == (96, 96) and tr.channels == list(range(12)) and len(tr.polylines) >= 2
    assert nearest(pts, truth).mean() < 3.0  # traced points lie on the true curves
    assert (nearest(truth, pts) <= 3.0).mean() > 0.9  # and the true curves are found
    longest = max(tr.polylines, key=len)
    assert np.hypot(*np.diff(longest, axis=0).T).sum() > 40  # followed along, not just dotted
    # the orientation map faces away from the circle's centre on its right and top
    orient = tr.maps.orientation.numpy()
    assert abs((orient[30, 45] - 0 + 180) % 360 - 180) < 20 and abs((orient[15, 30] - 90 + 180) % 360 - 180) < 20


def test_canny_comparison_counts(traced):
    picture, truth, tr = traced
    scores = compare_with_canny(tr, picture)
    edges = scores["edges"]
    assert edges.shape == (96, 96) and scores["n_edge_pixels"] == int(edges.sum())
    assert scores["traced_near_edge"] > 0.95 and scores["edge_near_trace"] > 0.6  # Canny marks both sides of a stroke
    # an independent count: edge pixels within 3 px of a traced point, by brute force
    ep = np.argwhere(edges).astype(float)
    want = (nearest(ep, tr.points()) <= 3.0).mean()
    assert scores["edge_near_trace"] == pytest.approx(want, abs=1e-12)
    far = compare_with_canny(tr, picture, distance=0.0)
    assert far["traced_near_edge"] < scores["traced_near_edge"]


def test_densify_spacing():
    pts = densify([np.array([[0.0, 0.0], [0.0, 3.0]])], spacing=0.5)
    np.testing.assert_allclose(pts[:, 1], np.arange(0.0, 3.01, 0.5))


def test_blank_image_has_no_curves_and_errors():
    blank = np.zeros((40, 40, 3), np.uint8)
    assert trace_curves(curve_network(), blank, "conv", channels=list(range(12)), orientations=BUILT).polylines == []
    with pytest.raises(CnnscopeError, match="one orientation per channel"):
        trace_curves(curve_network(), blank, "conv", channels=[0, 1], orientations=[0.0])
    with pytest.raises(CnnscopeError, match="threshold"):
        trace_curves(curve_network(), blank, "conv", channels=[0, 1], orientations=[0.0, 30.0], threshold=2.0)


def test_trace_command(tmp_path, capsys):
    picture, _ = known_curves(72)
    path = save_image(picture, tmp_path / "curves.png")
    rc = main(["trace", "curvenet", str(path), "conv", "--channels", ",".join(map(str, range(12))),
               "--orientations", ",".join(map(str, BUILT)), "--out", str(tmp_path / "t")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "t" / "trace.json").read_text())
    assert data["size"] == [72, 72] and len(data["polylines"]) >= 1 and 0 <= data["canny"]["edge_near_trace"] <= 1
    assert (tmp_path / "t" / "trace.png").stat().st_size > 5000
    rc = main(["trace", "curvenet", str(path), "conv", "--orientations", "0,30", "--out", str(tmp_path / "u")])
    err = capsys.readouterr().err
    assert rc == 1 and "--channels" in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")  # a plain module: ImageNet defaults assumed
def test_strided_layer_maps_resampled_to_pixels_and_model_unchanged():
    """A stride-2 layer's maps are read at every pixel through its receptive-field centres; the model is untouched."""
    from cnnscope.stimuli.tracing import family_maps
    from tests.conformance import assert_unchanged
    from tests.models import InplaceReLUNet

    net = InplaceReLUNet().train()
    picture, _ = known_curves(40)
    kw = dict(channels=[3, 1, 5], orientations=[0.0, 120.0, 240.0])
    error = assert_unchanged(net, lambda: trace_curves(net, picture, "features.4", **kw))
    assert error is None, error
    fm = family_maps(net, picture, "features.4", normalize=None, **kw)
    assert fm.strength.shape == (40, 40) and fm.channels == [3, 1, 5]
    from cnnscope.capture import capture
    from cnnscope.models import as_model

    m = as_model(net)
    act = capture(net.eval(), m.batch(picture, size=(40, 40)), "features.4")["features.4"][0, [3, 1, 5]].double()
    net.train()
    # grid cell (i, j) of the 20x20 map covers pixels 2i, 2i+1: its centre lies between them, so the pixel maps
    # average neighbouring cells; at the centre of a cell's pair the mean of both pixels is the cell's own value
    pair = (fm.strength[10:30:2, 10:30:2] + fm.strength[11:31:2, 11:31:2]) / 2
    cell = act.amax(0)[5:15, 5:15]
    assert torch.corrcoef(torch.stack([pair.flatten(), cell.flatten()]))[0, 1] > 0.9
