"""render(init=...) (a learned prior: start from a picture) and the raw value reported for minimised objectives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.featurevis import channel, measure, neuron, render
from cnnscope.featurevis.render import reported_objective
from cnnscope.models import as_model
from tests.models import InplaceReLUNet

from .helpers import LinearConvNet

pytestmark = pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")
SIZE = (20, 28)


def picture(seed: int = 0, size=SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.mark.parametrize("recipe", ["lucid", "plain"])
def test_zero_steps_return_the_init_picture(recipe):
    pic = picture()
    res = render(InplaceReLUNet(), channel("features.4", 3), recipe=recipe, steps=0, size=SIZE, init=pic)
    assert res.images.shape == (1, *SIZE, 3) and res.trace.shape == (0, 1)
    diff = np.abs(res.images[0].astype(int) - pic.astype(int))
    assert diff.max() <= 1, diff.max()  # the parameterization's round trip (sigmoid/logit, uint8 rounding)
    assert res.spec["init"] == "array [20, 28, 3]"


def test_init_steps_move_the_picture_and_raise_the_objective():
    m, obj, pic = InplaceReLUNet(), channel("features.4", 3), picture(1)
    res = render(m, obj, recipe="lucid", steps=30, size=SIZE, init=pic)
    moved = np.abs(res.images[0].astype(float) - pic.astype(float)).mean()
    assert moved > 2.0  # levels of 255 on average
    assert float(res.activations[0]) > float(measure(m, pic[None], obj)[0])
    # the picture is still recognisable: closer to its start than an independent noise render is
    noise = render(m, obj, recipe="lucid", steps=30, size=SIZE)
    assert moved < np.abs(noise.images[0].astype(float) - pic.astype(float)).mean()


def test_one_init_per_objective_and_model_space_tensors():
    m = InplaceReLUNet()
    pics = np.stack([picture(2), picture(3)])
    objs = [channel("features.4", 1), channel("features.4", 2)]
    res = render(m, objs, recipe="plain", steps=0, size=SIZE, init=pics)
    assert np.abs(res.images.astype(int) - pics.astype(int)).max() <= 1
    x = torch.rand(1, 3, *SIZE)
    res = render(m, objs, recipe="plain", steps=0, size=SIZE, init=as_model(m).normalize(x))
    np.testing.assert_allclose(res.images[1].astype(float) / 255, x[0].permute(1, 2, 0).numpy(), atol=1 / 255 + 1e-6)


def test_bad_init():
    m = InplaceReLUNet()
    with pytest.raises(CnnscopeError, match="3 images for 2 objectives"):
        render(m, [channel("features.4", 1), channel("features.4", 2)], steps=0, size=SIZE,
               init=np.stack([picture(i) for i in range(3)]))
    with pytest.raises(MethodError, match="cannot be set from an image"):
        render(m, channel("features.4", 1), recipe="maco", steps=1, size=SIZE, init=picture())


def test_minimised_linear_neuron_reports_its_raw_minimum():
    """Closed form: ``w . (patch - mean) / std`` (b = 0, ImageNet normalisation) over pixels in [0, 1] is smallest
    at ``patch = 1[w < 0]``; the render reports that (negative) value, not its negation."""
    m = LinearConvNet()
    objs = [-neuron("conv", c) for c in range(3)]
    res = render(m, objs, recipe="plain", steps=80, size=SIZE)
    lm = as_model(m)
    mean, std = torch.tensor(lm.mean).view(3, 1, 1), torch.tensor(lm.std).view(3, 1, 1)
    w = m.conv.weight.detach() / std
    expected = torch.stack([torch.where(w[c] < 0, w[c] * (1 - mean), -w[c] * mean).sum() for c in range(3)])
    assert (expected < 0).all()
    torch.testing.assert_close(res.activations, expected, rtol=0.03, atol=0.05)
    assert res.spec["reported"][0] == neuron("conv", 0).spec()
    assert (res.trace[-1] > 0).all()  # the maximised value is still the negation


def test_reported_objective():
    obj = channel("features.4", 1)
    assert reported_objective(-obj) == obj
    assert reported_objective(-2 * obj) == obj
    assert reported_objective(obj) == obj
    assert reported_objective(0.5 * obj) == 0.5 * obj
