"""interpolate() (frames between two objectives, shared parameterization) and semantic_dictionary() (an image's top
units per position) on tiny CNNs, checked on values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, ImageError, LayerError
from cnnscope.featurevis import channel, render
from cnnscope.featurevis.dictionary import semantic_dictionary
from cnnscope.featurevis.interpolate import SharedFourierImage, interpolate
from tests.models import InplaceReLUNet

pytestmark = pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")
FEAT = "features.4"
SIZE = (24, 24)


@pytest.fixture(scope="module")
def frames():
    return interpolate(InplaceReLUNet(), channel(FEAT, 1), channel(FEAT, 6), frames=5, steps=40, size=SIZE)


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_frames_go_from_a_to_b(frames):
    a, b = frames.values_a.numpy(), frames.values_b.numpy()
    assert frames.images.shape == (5, *SIZE, 3) and frames.t == [0, 0.25, 0.5, 0.75, 1]
    assert a[0] > a[-1] and b[-1] > b[0]  # frame 0 drives a harder than the last frame, and the reverse for b
    assert a[0] - b[0] > a[-1] - b[-1]
    assert spearman(frames.t, a) <= -0.8 and spearman(frames.t, b) >= 0.8  # monotone along the frames, or nearly
    d = frames.to_dict()
    assert d["values_a"] == pytest.approx(a.tolist()) and len(d["t"]) == 5


def test_shared_component_lines_frames_up(frames):
    """Consecutive frames share a spectrum: neighbours differ less than independent renders of a and b do."""
    m = InplaceReLUNet()
    alone = render(m, [channel(FEAT, 1), channel(FEAT, 6)], steps=40, size=SIZE, seed=[0, 1])
    step = np.abs(np.diff(frames.images.astype(float), axis=0)).mean(axis=(1, 2, 3))
    apart = np.abs(alone.images[0].astype(float) - alone.images[1].astype(float)).mean()
    assert step.max() < apart


def test_shared_fourier_param():
    p = SharedFourierImage([0, 0, 0], (16, 20))
    x = p()
    assert x.shape == (3, 3, 16, 20) and x.min() >= 0 and x.max() <= 1
    with torch.no_grad():
        p.shared.add_(torch.randn_like(p.shared))
    y = p()
    assert (y[0] - x[0]).abs().max() > 0.01 and torch.allclose(y[0], y[2])  # the shared part moves every frame
    target = torch.rand(3, 3, 16, 20) * 0.9 + 0.05
    p.set_image_(target)
    torch.testing.assert_close(p(), target, atol=1e-4, rtol=0)


def test_interpolate_errors():
    m = InplaceReLUNet()
    with pytest.raises(CnnscopeError, match="frames must be"):
        interpolate(m, channel(FEAT, 1), channel(FEAT, 2), frames=1)
    with pytest.raises(CnnscopeError, match="one objective as a"):
        interpolate(m, [channel(FEAT, 1), channel(FEAT, 3)], channel(FEAT, 2))


def hooked(model, x, layer):
    """The layer's output by a plain forward hook (independent of cnnscope's capture layer)."""
    out = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda mod, i, o: out.setdefault("a", o.clone()))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return out["a"][0].numpy()


def test_top_units_equal_an_independent_argsort():
    m = InplaceReLUNet()
    x = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    d = semantic_dictionary(m, x, FEAT, k=4, visualize=False)
    a = hooked(m, x, FEAT)  # [C, H, W]
    order = np.argsort(-a, axis=0, kind="stable")[:4].transpose(1, 2, 0)  # [H, W, k]
    assert d.top_units.shape == (*a.shape[1:], 4)
    np.testing.assert_array_equal(d.top_units.numpy(), order)
    np.testing.assert_allclose(d.top_values.numpy(), np.take_along_axis(a.transpose(1, 2, 0), order, -1), rtol=1e-5)
    assert d.units == sorted(set(order.ravel().tolist()))
    assert d.images.shape[0] == 0 and d.image.shape == (32, 40, 3)
    js = d.to_dict()
    assert js["positions"][0]["units"] == order[0, 0].tolist() and js["grid"] == list(a.shape[1:])


def test_grid_pools_and_units_are_rendered():
    m = InplaceReLUNet()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    d = semantic_dictionary(m, x, FEAT, k=2, grid=2, steps=4, size=24)
    a = hooked(m, x, FEAT)
    pooled = a.reshape(a.shape[0], 2, a.shape[1] // 2, 2, a.shape[2] // 2).mean(axis=(2, 4))
    expected = np.argsort(-pooled, axis=0, kind="stable")[:2].transpose(1, 2, 0)
    np.testing.assert_array_equal(d.top_units.numpy(), expected)
    assert d.images.shape == (len(d.units), 24, 24, 3)
    assert d.render is not None and d.render.labels[0] == repr(channel(FEAT, d.units[0]))
    assert d.image_of(d.units[-1]) is not None


def test_dictionary_errors():
    m = InplaceReLUNet()
    with pytest.raises(ImageError, match="one image"):
        semantic_dictionary(m, torch.randn(2, 3, 32, 32), FEAT, visualize=False)
    with pytest.raises(LayerError, match="has 16 channels"):
        semantic_dictionary(m, torch.randn(1, 3, 32, 32), FEAT, k=17, visualize=False)
