"""Sanity checks (Adebayo et al. 2018) on a small CNN trained in the test session."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnscope.errors import CnnscopeError, LayerError
from cnnscope.evaluate import explainer, randomization_units, sanity_check
from cnnscope.evaluate.sanity import reinitialize_
from tests.conformance import assert_unchanged

from .trained import square_data, train_small_cnn


@pytest.fixture(scope="module")
def trained():
    model, acc = train_small_cnn()
    assert acc > 0.9, f"the synthetic task should be learnt (accuracy {acc:.2f})"
    x, _ = square_data(6, seed=9)
    return model, x


@pytest.fixture(scope="module")
def cascade(trained):
    model, x = trained
    methods = {n: explainer(n) for n in ("saliency", "guided_backprop")}
    return sanity_check(model, x, methods, mode="cascading")


def test_gradient_decorrelates_after_full_randomization(cascade):
    assert cascade.steps == ["original", "fc", "features.5", "features.2", "features.0"]
    for measure in ("spearman_abs", "spearman", "ssim", "hog"):
        first = cascade.similarity["saliency"][measure][0]
        torch.testing.assert_close(first, torch.ones_like(first))
    final = cascade.final("spearman_abs")
    assert final["saliency"] < 0.3, final
    assert cascade.mean("saliency", "spearman")[-1].abs() < 0.3


def test_guided_backprop_stays_more_similar_than_gradient(cascade):
    # the paper's finding, reported rather than hidden: guided backprop barely depends on the top layers
    gb = cascade.mean("guided_backprop")[1:-1].mean()
    grad = cascade.mean("saliency")[1:-1].mean()
    assert gb > grad + 0.1, (float(gb), float(grad))


class _ParamProbe:
    """An explainer that records the parameters of the module it is given (and returns a fixed map)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model, images, targets):
        self.seen.append({k: v.detach().clone() for k, v in model.module.state_dict().items()})
        return torch.ones(images.shape[0], images.shape[-2], images.shape[-1]) + torch.arange(images.shape[-1]).float()


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_randomization_schedule_and_restore(trained, mode):
    model, x = trained
    probe = _ParamProbe()
    err = assert_unchanged(model, lambda: sanity_check(model, x, {"probe": probe}, mode=mode,
                                                         measures=["spearman"]))
    assert err is None
    units = ["fc", "features.5", "features.2", "features.0"]
    original = probe.seen[0]
    for k, snap in enumerate(probe.seen[1:]):
        changed = {u for u in units if any(not torch.equal(snap[n], original[n]) for n in snap
                                           if n.startswith(u + "."))}
        expected = set(units[:k + 1]) if mode == "cascading" else {units[k]}
        assert changed == expected, (k, changed)


def test_sanity_leaves_the_model_unchanged_also_when_it_raises(trained):
    model, x = trained
    model.train()
    try:
        assert assert_unchanged(model, lambda: sanity_check(model, x, {"g": explainer("saliency")})) is None
        err = assert_unchanged(model, lambda: sanity_check(model, x, {"g": explainer("saliency")},
                                                           layers=["features.9"]))
        assert isinstance(err, LayerError) and "did you mean" in str(err)
    finally:
        model.eval()


def test_units_of_efficientnet_lite0(lite0):
    x = torch.zeros(1, 3, 64, 64)  # the probe forward only needs a size the model accepts
    units = randomization_units(lite0.module, x)
    assert units == ["conv_stem", "bn1"] + [f"blocks.{i}" for i in range(7)] + ["conv_head", "bn2", "classifier"]
    assert randomization_units(lite0.module, x, max_units=3) == ["conv_stem", "bn1", "blocks", "conv_head", "bn2",
                                                                 "classifier"]


def test_reinitialize_draws_he_normal_and_resets_norms():
    conv, bn = nn.Conv2d(64, 128, 3), nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.running_mean.fill_(2.0)
    reinitialize_(nn.Sequential(conv, bn), torch.Generator().manual_seed(0))
    std = float(conv.weight.detach().std())
    assert std == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.03)
    assert float(conv.weight.detach().mean()) == pytest.approx(0.0, abs=0.003)
    assert torch.equal(conv.bias, torch.zeros(128))
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.running_mean, torch.zeros(8))
    a, b = nn.Linear(10, 10), nn.Linear(10, 10)
    reinitialize_(a, torch.Generator().manual_seed(1))
    reinitialize_(b, torch.Generator().manual_seed(1))
    assert torch.equal(a.weight, b.weight)


def test_sanity_errors(trained):
    model, x = trained
    with pytest.raises(CnnscopeError, match="did you mean: cascading"):
        sanity_check(model, x, {"g": explainer("saliency")}, mode="cascade")
    with pytest.raises(CnnscopeError, match="at least one explainer"):
        sanity_check(model, x, {})
    with pytest.raises(CnnscopeError, match="no parameters"):
        randomization_units(nn.ReLU(), x)
