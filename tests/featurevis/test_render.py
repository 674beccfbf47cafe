"""render() and measure() on tiny CNNs: reproducibility, batching, truncation, known filters, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnscope import unit
from cnnscope.errors import CnnscopeError, ImageError, LayerError, MethodError
from cnnscope.featurevis import (
    RECIPES,
    channel,
    class_logit,
    diversity,
    measure,
    neuron,
    render,
    total_variation,
)
from cnnscope.models import as_model, wrap
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet, ResidualNet

from .helpers import ANGLES, FixedHeadNet, KnownFilterNet, LinearConvNet, NoPadNet, gabor

FEAT = "features.4"  # InplaceReLUNet: conv(8 -> 16) after a max-pool
# the tiny test nets are plain modules on purpose: cnnscope says once per net that it assumes ImageNet normalisation
pytestmark = pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")


def small(model, objs, **kw):
    opts = {"steps": 12, "size": (20, 28), "recipe": "lucid"}
    opts.update(kw)
    return render(model, objs, **opts)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_batched_equals_single_renders(recipe):
    m = InplaceReLUNet()
    objs = [channel(FEAT, 3), neuron(FEAT, 5), channel(FEAT, 3) - 0.2 * total_variation()]
    seeds = [0, 11, 4]
    batched = small(m, objs, recipe=recipe, seed=seeds, batch_size=2)  # two chunks
    singles = [small(m, o, recipe=recipe, seed=s) for o, s in zip(objs, seeds)]
    imgs = np.concatenate([r.images for r in singles]).astype(int)
    assert np.abs(batched.images.astype(int) - imgs).max() <= 3
    assert np.abs(batched.images.astype(int) - imgs).mean() < 0.05
    torch.testing.assert_close(batched.activations, torch.cat([r.activations for r in singles]),
                               rtol=1e-3, atol=1e-4)
    assert batched.images.shape == (3, 20, 28, 3) and batched.images.dtype == np.uint8
    assert batched.trace.shape == (12, 3) and batched.activations.shape == (3,)
    assert batched.trace.device.type == "cpu" and batched.activations.dtype == torch.float32
    json.dumps(batched.spec)
    json.dumps(batched.to_dict())


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_seeded_runs_reproduce_and_leave_the_model_unchanged(recipe):
    m = InplaceReLUNet()
    m.train()  # render must use eval mode temporarily and restore training mode
    objs = [channel(FEAT, 1), channel(FEAT, 2)]
    results = []
    assert_unchanged(m, lambda: results.append(small(m, objs, recipe=recipe, seed=3)))
    again = small(m, objs, recipe=recipe, seed=3)
    other = small(m, objs, recipe=recipe, seed=4)
    assert np.array_equal(results[0].images, again.images)
    assert torch.equal(results[0].trace, again.trace)
    assert not np.array_equal(results[0].images, other.images)
    assert m.training


def test_stop_early_does_not_change_results():
    m = ResidualNet()
    objs = [channel("layer1", 2), neuron("layer1.conv2", 0, (5, 3)), neuron("act", 1, "max", pre_activation=True)]
    truncated = small(m, objs, truncate=True)
    full = small(m, objs, truncate=False)
    assert np.array_equal(truncated.images, full.images)
    torch.testing.assert_close(truncated.trace, full.trace, rtol=0, atol=0)
    torch.testing.assert_close(truncated.activations, full.activations, rtol=0, atol=0)


def test_objective_rises_and_activations_are_measured_on_the_final_image():
    m = InplaceReLUNet()
    objs = [channel(FEAT, c) for c in range(4)]
    res = small(m, objs, steps=40, recipe="plain")
    assert (res.trace[-1] > res.trace[0]).all()
    # render measures on the float image; measure() on the stored uint8 picture: equal up to rounding
    torch.testing.assert_close(measure(m, res.images, objs), res.activations, rtol=0.02, atol=0.02)
    # every channel's image drives its own channel harder than the images made for the other channels
    table = measure(m, res.images, objs, pairwise=True)
    assert table.shape == (4, 4)
    assert (table.argmax(dim=1) == torch.arange(4)).all()


def test_negative_objective_lowers_the_channel():
    m = InplaceReLUNet()
    pos = small(m, neuron(FEAT, 6), steps=30, recipe="plain")
    neg = small(m, -neuron(FEAT, 6), steps=30, recipe="plain")
    start = small(m, neuron(FEAT, 6), steps=1, recipe="plain", lr=1e-9)
    vals = measure(m, np.concatenate([neg.images, start.images, pos.images]), neuron(FEAT, 6))
    assert vals[0] < vals[1] < vals[2]
    assert float(neg.activations[0]) == pytest.approx(float(vals[0]), abs=0.05)  # the raw (minimised) value


def test_class_logit_runs_the_whole_model():
    m = InplaceReLUNet()
    objs = [class_logit(c) for c in range(4)]
    res = small(m, objs, steps=20, recipe="plain")
    assert (res.trace[-1] > res.trace[0]).all()
    table = measure(m, res.images, objs, pairwise=True)  # [class, image]
    assert (table.argmax(dim=1) == torch.arange(4)).all()  # each logit is highest on its own image


def test_neuron_of_a_linear_filter_is_its_sign_pattern():
    """Closed form: maximising ``w . patch + b`` over pixels in [0, 1] gives ``patch = 1[w > 0]``."""
    m = LinearConvNet()
    res = render(m, [neuron("conv", c) for c in range(3)], recipe="plain", steps=60, size=(20, 28))
    out_h, out_w = 20 - 4, 28 - 4
    y0, x0 = out_h // 2, out_w // 2  # centre of the (non-square) output map
    for c in range(3):
        w = m.conv.weight[c].detach().permute(1, 2, 0).numpy()  # [5, 5, 3]
        patch = res.images[c, y0:y0 + 5, x0:x0 + 5].astype(float) / 255
        strong = np.abs(w) > 0.1 * np.abs(w).max()
        np.testing.assert_array_equal(patch[strong] > 0.5, w[strong] > 0)
        np.testing.assert_allclose(patch[strong], (w[strong] > 0).astype(float), atol=0.02)


def best_ncc(image: np.ndarray, kernel: torch.Tensor) -> float:
    """Highest normalised cross-correlation of a grey kernel with the image's grey patches."""
    x = torch.from_numpy(image.astype(np.float64) / 255).mean(-1)[None, None]
    k = (kernel.double() - kernel.double().mean())
    k = k / k.norm()
    patches = torch.nn.functional.unfold(x, k.shape[-1])  # [1, k*k, L]
    patches = patches - patches.mean(1, keepdim=True)
    ncc = (k.flatten() @ patches[0]) / patches[0].norm(dim=0).clamp_min(1e-8)
    return float(ncc.max())


@pytest.mark.parametrize("recipe", ["plain", "lucid"])
def test_channel_of_a_known_filter_shows_its_pattern(recipe):
    """The first conv's filters are gratings at 4 orientations: each channel's visualization contains its own
    grating (high normalised cross-correlation) and matches it much better than the other orientations."""
    m = KnownFilterNet()
    res = render(m, [channel("relu", c) for c in range(4)], recipe=recipe, steps=48, size=40, lr=None)
    scores = np.array([[best_ncc(img, gabor(a)) for a in ANGLES] for img in res.images])
    assert (scores.argmax(axis=1) == np.arange(4)).all(), scores
    # a binary image of the grating's sign scores 0.67; random noise of the same size stays below 0.5
    noise = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    assert max(best_ncc(noise, gabor(a)) for a in ANGLES) < 0.5
    assert scores.diagonal().min() > 0.6, scores
    off = np.where(np.eye(4, dtype=bool), 0, scores).max(axis=1)
    assert (scores.diagonal() > 1.5 * off).all(), scores


def test_diversity_pushes_images_apart():
    m = InplaceReLUNet()
    obj = channel(FEAT, 2)
    kw = {"steps": 30, "size": 24, "diversity": 3, "recipe": "plain"}
    together = render(m, obj, diversity_weight=0.0, **kw)
    apart = render(m, obj, diversity_weight=10.0, **kw)
    assert together.images.shape == (3, 24, 24, 3) and together.labels == [repr(obj)] * 3
    sim_together = measure(m, together.images, diversity(FEAT)).mean()
    sim_apart = measure(m, apart.images, diversity(FEAT)).mean()
    assert sim_apart < sim_together - 0.02


def test_thresholds_keep_snapshots():
    m = InplaceReLUNet()
    res = small(m, [channel(FEAT, 0), channel(FEAT, 1)], steps=6, thresholds=[2, 6])
    assert sorted(res.snapshots) == [2, 6]
    assert np.array_equal(res.snapshots[6], res.images)
    assert not np.array_equal(res.snapshots[2], res.images)


def test_loaded_model_and_spec_objectives():
    m = wrap(InplaceReLUNet(), input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny")
    res = render(m, [channel(FEAT, 1).spec()], steps=3, size=24)
    assert res.spec["model"] == "tiny" and res.spec["mean"] == [0.5, 0.5, 0.5]
    assert res.spec["objectives"] == [channel(FEAT, 1).spec()]


def test_overriding_recipe_parts():
    m = InplaceReLUNet()
    res = small(m, channel(FEAT, 1), transforms="none", lr=0.01, optimizer="sgd", steps=2)
    rec = res.spec["recipe"]
    assert rec["name"] == "lucid*" and rec["transforms"] == "none" and rec["optimizer"] == "sgd"
    pixel = small(m, channel(FEAT, 1), param="pixel", steps=2)  # the recipe's Fourier options are dropped
    assert pixel.spec["recipe"]["param"] == "pixel" and pixel.spec["recipe"]["param_options"] == {}
    with pytest.raises(MethodError, match="bad options for the 'pixel' parameterization"):
        small(m, channel(FEAT, 1), param="pixel", param_options={"decay_power": 1.0}, steps=2)
    with pytest.raises(MethodError, match="unknown optimizer 'adamw'"):
        small(m, channel(FEAT, 1), optimizer="adamw", steps=2)


def check_error(model, fn, error, match):
    err = assert_unchanged(model, fn)
    assert isinstance(err, error), err
    assert pytest.importorskip("re").search(match, str(err)), str(err)


def test_bad_input_is_reported_and_leaves_the_model_unchanged():
    m = InplaceReLUNet()
    check_error(m, lambda: small(m, channel("features.44", 0)), LayerError,
                r"unknown layer 'features.44'; did you mean: .*features.4")
    check_error(m, lambda: small(m, channel(FEAT, 16)), LayerError,
                r"channel 16 is out of range for layer 'features.4', which has 16 channels \(valid: 0..15\)")
    check_error(m, lambda: small(m, channel(FEAT, 1), steps=-1), CnnscopeError, "steps must be a non-negative integer")
    check_error(m, lambda: small(m, channel(FEAT, 1), size=8), CnnscopeError, "at least 16 pixels")
    check_error(m, lambda: small(m, channel(FEAT, 1), recipe="lucent"), MethodError,
                "unknown recipe 'lucent'; did you mean: lucid")
    check_error(m, lambda: small(m, total_variation()), MethodError, "reads no layer")
    check_error(m, lambda: small(m, [channel(FEAT, 1)], seed=[1, 2]), CnnscopeError, "2 seeds for 1 objectives")
    deep = NoPadNet()
    check_error(deep, lambda: small(deep, channel("features.6", 0), size=20), CnnscopeError,
                "size 20x20 is too small for this model.*features.6.*use a larger --size")
    fixed = FixedHeadNet()
    check_error(fixed, lambda: small(fixed, channel("conv", 0), size=24), CnnscopeError,
                "cannot run on 24x24 inputs.*runs the whole model")
    assert small(fixed, channel("conv", 0), size=16, steps=2).images.shape == (1, 16, 16, 3)
    check_error(m, lambda: measure(m, np.zeros((1, 24, 24, 3), np.uint8), channel(FEAT, 99)), LayerError,
                "valid: 0..15")
    check_error(m, lambda: small(m, channel("features.4", 1, pre_activation=True)), LayerError,
                "pre_activation=True needs activation modules.*features.4 \\(Conv2d\\)")
    check_error(m, lambda: measure(m, torch.full((1, 3, 24, 24), float("nan")), channel(FEAT, 1)), ImageError,
                "NaN")
    check_error(m, lambda: small(m, "chanel:features.4:1"), MethodError, "did you mean: channel")
    with pytest.raises(TypeError):
        render(m, channel(FEAT, 1), "plain")  # everything after the objectives is keyword-only
    with pytest.raises(TypeError):
        measure(m, np.zeros((1, 24, 24, 3), np.uint8), channel(FEAT, 1), True)


def test_measure_leaves_the_model_unchanged():
    m = ResidualNet()
    imgs = (np.random.default_rng(0).random((5, 24, 24, 3)) * 255).astype(np.uint8)
    out = []
    assert_unchanged(m, lambda: out.append(measure(m, imgs, [channel("layer2", 0), class_logit(1)],
                                                   pairwise=True, batch_size=2)))
    assert out[0].shape == (2, 5)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        logits = m.eval()(x)
    torch.testing.assert_close(out[0][1], logits[:, 1], rtol=1e-5, atol=1e-5)
    # a model-space tensor is measured as given (no second normalisation)
    torch.testing.assert_close(measure(m, x, class_logit(1)), logits[:, 1], rtol=1e-5, atol=1e-5)


def test_pre_activation_reads_the_input_of_the_activation_module():
    """``features.5`` is an in-place ReLU after the conv ``features.4``: its input is the conv's output."""
    m = InplaceReLUNet().eval()
    x = torch.randn(3, 3, 16, 20)
    with torch.no_grad():
        conv = m.features[:5](x)
    objs = [channel("features.5", 2, pre_activation=True), channel("features.5", 2), neuron(FEAT, 7, (3, 4)),
            neuron("features.5", 7, (3, 4), pre_activation=True), channel(FEAT, 2)]
    table = measure(m, x, objs, pairwise=True)  # both capture kinds in one pass
    torch.testing.assert_close(table[0], conv[:, 2].mean(dim=(1, 2)))
    torch.testing.assert_close(table[1], conv[:, 2].relu().mean(dim=(1, 2)))
    torch.testing.assert_close(table[2], conv[:, 7, 3, 4])
    torch.testing.assert_close(table[3], table[2])
    torch.testing.assert_close(table[4], table[0])
    assert (table[1] > table[0]).all()  # the ReLU only raises values


def test_plain_module_and_its_wrap_render_the_same():
    net = InplaceReLUNet()
    objs = [channel(FEAT, 3), neuron(FEAT, 1, "max")]
    plain = small(net, objs, seed=7, steps=5)
    wrapped = small(wrap(net), objs, seed=7, steps=5)
    assert np.array_equal(plain.images, wrapped.images)
    assert torch.equal(plain.trace, wrapped.trace) and torch.equal(plain.activations, wrapped.activations)
    torch.testing.assert_close(measure(net, plain.images, objs), measure(wrap(net), plain.images, objs))
    assert as_model(net).mean == wrap(net).mean


def test_units_and_text_are_objectives():
    m = InplaceReLUNet()
    by_unit = small(m, [unit(FEAT, 3), unit(FEAT, 1, position=(2, 3))], steps=3)
    by_objective = small(m, [channel(FEAT, 3), neuron(FEAT, 1, (2, 3))], steps=3)
    by_text = small(m, ["channel:features.4:3", "neuron:features.4:1:2,3"], steps=3)
    assert np.array_equal(by_unit.images, by_objective.images) and np.array_equal(by_text.images, by_unit.images)
    assert by_unit.spec["objectives"] == by_objective.spec["objectives"]


def test_a_grey_model_gets_the_grey_picture_it_sees():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3))
    m = wrap(net, input_size=(24, 24), mean=[0.45], std=[0.25])
    res = small(m, [channel("1", 0), channel("2", 1)], size=(24, 24), steps=8, thresholds=[4])
    for pics in (res.images, res.snapshots[4]):
        assert pics.shape == (2, 24, 24, 3) and pics.dtype == np.uint8
        assert np.array_equal(pics[..., 0], pics[..., 1]) and np.array_equal(pics[..., 0], pics[..., 2])
        assert pics.std() > 1  # a picture, not a flat grey
    # the saved picture is what the model read: its objective on the stored uint8 image is the reported one
    stored = measure(m, res.images, [channel("1", 0), channel("2", 1)])
    torch.testing.assert_close(stored, res.activations, rtol=0.02, atol=0.02)
    colour = small(wrap(InplaceReLUNet()), [channel(FEAT, 0)], steps=8)
    assert not np.array_equal(colour.images[..., 0], colour.images[..., 1])  # RGB models keep their colours


def test_render_leaves_the_global_random_state_alone():
    import random

    m = InplaceReLUNet()
    before = torch.get_rng_state().clone(), np.random.get_state(), random.getstate()
    small(m, [channel(FEAT, 1), neuron(FEAT, 2)], steps=3, diversity=2, seed=[3, 4])
    after = torch.get_rng_state(), np.random.get_state(), random.getstate()
    assert torch.equal(before[0], after[0]) and before[2] == after[2]
    assert np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
