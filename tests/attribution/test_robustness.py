"""Attribution on any model: methods that cannot apply are skipped with the reason, ReLUs called as functions get
the backward rules, argument errors and non-finite inputs stop the call, integrated gradients reports (and warns
about) its completeness gap, and `cnnscope explain` checks --out first and writes atomically under a manifest."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnscope import unit, wrap
from cnnscope.attribution import (
    COMPLETENESS_THRESHOLD,
    METHODS,
    CompletenessWarning,
    Method,
    TargetError,
    attribute,
    explain,
    list_methods,
    register_method,
)
from cnnscope.capture import relu_rule
from cnnscope.capture.relu_rules import NoReLUError
from cnnscope.cli import main
from cnnscope.errors import CnnscopeError, ImageError, LayerError, MethodError
from tests.conformance import assert_unchanged
from tests.models import FunctionalReLUNet, GapLinearNet, InplaceReLUNet, seeded

pytestmark = pytest.mark.usefixtures("single_thread")


def x_of(shape=(2, 3, 12, 12), seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class SiLUNet(nn.Module):
    """conv-SiLU-conv-SiLU-GAP-linear: no ReLU anywhere (like EfficientNet-B0, ConvNeXt, ViT)."""

    def __init__(self, num_classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.SiLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.SiLU())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class DenseTailNet(nn.Module):
    """ReLU modules inside, and DenseNet's tail: ``F.relu(features, inplace=True)`` before pooling."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        return self.fc(out.mean(dim=(2, 3)))


class FunctionalReLU6Net(nn.Module):
    """ReLU6 and an in-place ``relu_`` called as functions, no activation module."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.conv1(x))
        h = self.conv2(h).relu_()
        return self.fc(h.mean(dim=(2, 3)))


class NormNet(nn.Module):
    """conv (no bias) -> GroupNorm(1) -> linear: scale-invariant, so the score jumps next to a zero baseline."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(1, 6, eps=1e-9)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            self.norm.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).mean(dim=(2, 3)))


class LinearNet(nn.Module):
    """conv -> average -> linear with no nonlinearity: integrated gradients is exact for any n_steps."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class _Guided(torch.autograd.Function):
    """Independent guided ReLU(6): ``g * 1[0 < x < upper] * 1[g > 0]``."""

    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mask = (x > 0) if ctx.upper is None else (x > 0) & (x < ctx.upper)
        return g.clamp(min=0) * mask, None


def grad_of(fn, x, cls):
    xg = x.clone().requires_grad_()
    return torch.autograd.grad(fn(xg)[:, cls].sum(), xg)[0]


# -- item 1: explain skips a method that cannot apply, runs the rest ------------------------------------------
def test_explain_skips_guided_backprop_on_a_silu_net_and_runs_the_rest():
    net = SiLUNet().eval()
    m = wrap(net, input_size=(12, 12), labels=list("abcd"))
    x = x_of()
    expls = explain(m, x, methods=["gradcam", "guided_backprop", "saliency"], target=2)
    for i, e in enumerate(expls):
        assert list(e.results) == ["gradcam", "saliency"]
        reason = e.skipped["guided_backprop"]
        assert "the activations are SiLU" in reason and "guided backprop needs ReLUs" in reason
        assert "called as functions" not in reason
        torch.testing.assert_close(e.results["saliency"].values[0], grad_of(net, x[i:i + 1], 2)[0])
        assert e.to_dict()["skipped"] == {"guided_backprop": reason}
        assert set(e.heatmaps()) == {"gradcam", "saliency"}


def test_explain_raises_when_no_method_can_run():
    net = SiLUNet()
    m = wrap(net, input_size=(12, 12))
    err = assert_unchanged(net, lambda: explain(m, x_of(), methods=["guided_backprop", "guided_gradcam"]))
    assert isinstance(err, NoReLUError) and "guided backprop needs ReLUs" in str(err)  # one reason: that error
    with pytest.raises(MethodError, match="guided_backprop: .*guided backprop needs ReLUs; deconvnet: .*the "
                                          "deconvnet rule needs ReLUs"):
        explain(m, x_of(), methods=["guided_backprop", "deconvnet"])

    class Flat(nn.Module):  # no spatial layer for a CAM, no ReLU for guided backprop
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 3)
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(self.fc(x.flatten(1)))

    with pytest.raises(MethodError, match="no method could explain these images: gradcam: .*; guided_backprop: "
                                          ".*GELU"):
        explain(wrap(Flat(), input_size=(8, 8)), x_of((1, 3, 8, 8)), methods=["gradcam", "guided_backprop"])


def test_only_cnnscope_errors_are_skipped():
    calls = []
    with METHODS.scoped():
        @register_method
        class Refuses(Method):
            name = "refuses_for_test"

            def compute(self, x, scorer, layer):
                calls.append(self.name)
                raise CnnscopeError("this method does not apply to this model")

        @register_method
        class Broken(Method):
            name = "broken_for_test"

            def compute(self, x, scorer, layer):
                calls.append(self.name)
                raise RuntimeError("a bug")

        net = wrap(GapLinearNet(), input_size=(8, 8))
        e = explain(net, x_of((1, 3, 8, 8)), methods=["refuses_for_test", "saliency"])[0]
        assert e.skipped == {"refuses_for_test": "this method does not apply to this model"}
        assert list(e.results) == ["saliency"]
        with pytest.raises(RuntimeError, match="a bug"):
            explain(net, x_of((1, 3, 8, 8)), methods=["saliency", "broken_for_test"])
        calls.clear()
        # argument errors stop the call before any method runs (they are not "skipped")
        for kwargs, error, text in [({"target": -1}, TargetError, "negative"),
                                    ({"target": "-1"}, TargetError, "negative"),
                                    ({"target": 3}, TargetError, "out of range: the model has 3 outputs"),
                                    ({"layer": "featuers.2"}, LayerError, "did you mean: features.2"),
                                    ({"target": unit("nope", 0)}, LayerError, "unknown layer 'nope'")]:
            with pytest.raises(error, match=text):
                explain(net, x_of((1, 3, 8, 8)), methods=["refuses_for_test", "gradcam"], **kwargs)
        assert calls == []


# -- item 2: ReLUs called as functions get the rule ---------------------------------------------------------
@pytest.mark.parametrize("rule", ["guided", "deconv"])
def test_functional_relu_gets_the_rule(rule):
    net = FunctionalReLUNet().eval()
    x = x_of((2, 3, 8, 8), seed=1)
    report: dict = {}
    xg = x.clone().requires_grad_()
    with relu_rule(net, rule, report=report) as n:
        got = torch.autograd.grad(net(xg)[:, 1].sum(), xg)[0]
    assert n == 0 and report == {"modules": 0, "functional_calls": 1, "other_activations": []}
    h = net.conv(x)
    if rule == "guided":
        ref = grad_of(lambda t: net.fc(_Guided.apply(net.conv(t), None).mean(dim=(2, 3))), x, 1)
    else:  # deconv: max(g, 0) whatever the forward mask; g = fc weight / (H W) at every position
        g = (net.fc.weight[1] / (h.shape[2] * h.shape[3])).clamp(min=0).view(1, -1, 1, 1).expand_as(h)
        ref = torch.nn.grad.conv2d_input(x.shape, net.conv.weight, g.detach(), padding=1)
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(got, grad_of(net, x, 1), atol=1e-4)  # differs from the plain gradient


def test_densenet_tail_relu_and_functional_relu6_are_rectified():
    net = DenseTailNet().eval()
    x = x_of((2, 3, 8, 8), seed=2)
    a = attribute(net, x, "guided_backprop", target=1)
    g = _Guided.apply

    def manual(t):
        f = net.features
        h = f[3](f[2](g(f[0](t), None)))
        return net.fc(g(h, None).mean(dim=(2, 3)))

    torch.testing.assert_close(a.values, grad_of(manual, x, 1))
    assert a.spec["relu_rule"] == {"rule": "guided", "modules": 1, "functional_calls": 1, "other_activations": []}
    assert assert_unchanged(net, lambda: attribute(net, x, "guided_backprop")) is None

    net6 = FunctionalReLU6Net().eval()
    x6 = x_of((2, 3, 8, 8), seed=3, scale=6.0)
    with torch.no_grad():
        pre = net6.conv1(x6)
    assert (pre > 6).any() and (pre < 0).any()
    b = attribute(net6, x6, "guided_backprop", target=0)
    ref = grad_of(lambda t: net6.fc(g(net6.conv2(g(net6.conv1(t), 6.0)), None).mean(dim=(2, 3))), x6, 0)
    torch.testing.assert_close(b.values, ref)
    assert b.spec["relu_rule"]["functional_calls"] == 2
    with torch.no_grad(), relu_rule(net6, "guided"):  # the forward value is unchanged by the rule
        torch.testing.assert_close(net6(x6), net6(x6.clone()))


@pytest.mark.slow
def test_torchvision_densenet_final_relu_is_counted():
    import torchvision

    net = torchvision.models.densenet121().eval()
    a = attribute(net, x_of((1, 3, 32, 32)), "guided_backprop")
    assert a.spec["relu_rule"]["modules"] == 120 and a.spec["relu_rule"]["functional_calls"] == 1


# -- item 3: non-finite inputs on every attribution path ------------------------------------------------------
@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused_by_every_method(method, bad):
    net = InplaceReLUNet()
    x = x_of((1, 3, 12, 12))
    x[0, 1, 3, 4] = bad
    err = assert_unchanged(net, lambda: attribute(net, x, method))
    assert isinstance(err, ImageError) and "NaN or infinite" in str(err)


def test_non_finite_inputs_are_refused_by_explain_and_baselines():
    net = InplaceReLUNet()
    x = x_of((2, 3, 12, 12))
    x[1, 0, 0, 0] = float("nan")
    for images in (x, list(x), [x[0], x[1]]):
        with pytest.raises(ImageError, match="NaN or infinite"):
            explain(net, images, methods=["saliency"])
    for method in ("integrated_gradients", "occlusion", "rise"):
        with pytest.raises(MethodError, match=f"{method}: the baseline contains NaN"):
            attribute(net, x_of((1, 3, 12, 12)), method, baseline=torch.full((1, 3, 12, 12), torch.nan))
        with pytest.raises(MethodError, match="baseline contains NaN"):
            attribute(net, x_of((1, 3, 12, 12)), method, baseline=float("inf"))


# -- item 4: integrated gradients' completeness gap -----------------------------------------------------------
def test_completeness_gap_is_large_next_to_a_jump_and_warns():
    net = NormNet().eval()
    x = x_of((2, 3, 10, 10), seed=4)
    with pytest.warns(CompletenessWarning) as rec:
        a = attribute(net, x, "integrated_gradients", target=0, n_steps=16)
    msg = str(rec[0].message)
    assert len(rec) == 1 and "\n" not in msg and "raise n_steps (now 16" in msg and "baseline='blur'" in msg
    c = a.spec["completeness"]
    with torch.no_grad():
        diff = net(x)[:, 0] - net(torch.zeros_like(x))[:, 0]  # independent f(x) - f(x')
    torch.testing.assert_close(torch.tensor(c["score_difference"]), diff, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(c["sum_attributions"]), a.values.flatten(1).sum(1), rtol=1e-5, atol=1e-6)
    gaps = torch.tensor(c["relative_gap"])
    torch.testing.assert_close(gaps, ((a.values.flatten(1).sum(1) - diff) / diff).abs(), rtol=1e-4, atol=1e-6)
    assert bool((gaps > 0.5).all()) and c["threshold"] == COMPLETENESS_THRESHOLD
    # a baseline away from the jump closes the gap
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        b = attribute(net, x, "integrated_gradients", target=0, n_steps=16, baseline="blur")
    assert max(b.spec["completeness"]["relative_gap"]) < COMPLETENESS_THRESHOLD


def test_completeness_gap_is_zero_on_a_linear_net_and_nothing_warns():
    net = LinearNet().eval()
    x = x_of((2, 3, 10, 10), seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        a = attribute(net, x, "integrated_gradients", target=2, n_steps=3)
    torch.testing.assert_close(a.values, x * grad_of(net, x, 2))  # closed form of IG for a linear function
    assert max(a.spec["completeness"]["relative_gap"]) < 1e-4


# -- item 6: `cnnscope explain` output folder ---------------------------------------------------------------
@pytest.fixture
def fake_model(monkeypatch):
    """`cnnscope explain MODEL` opens this wrapped tiny net; ``opened`` counts the loads."""
    state = {"net": SiLUNet(), "opened": 0}

    def open_model(name, weights, device):
        state["opened"] += 1
        return wrap(state["net"], input_size=(16, 16), labels=list("abcd"))

    monkeypatch.setattr("cnnscope.cli.attribution.open_model", open_model)
    return state


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_cli_skips_with_a_note_and_writes_a_manifest(capsys, tmp_path, fake_model):
    out = tmp_path / "run"
    code, text, err = run(capsys, "explain", "tiny", "sample:chelsea", "--methods", "guided_backprop,saliency,gradcam",
                          "--out", out, "--no-progress")
    assert code == 0, err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("note: skipped guided_backprop: ")]
    assert len(err.splitlines()) == 1 and "SiLU" in err
    summary = json.loads((out / "chelsea.json").read_text())
    assert list(summary["skipped"]) == ["guided_backprop"] and set(summary["methods"]) == {"saliency", "gradcam"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "explain"
    assert sorted(manifest["files"]) == sorted(["chelsea_panel.png", "chelsea_saliency.npy", "chelsea_gradcam.npy",
                                                "chelsea.json", "index.html", "index.json"])
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["files"] + ["manifest.json"])
    assert "2 method(s)" in text
    # a second run into the same folder leaves no stale file of the first one
    code, _, err = run(capsys, "explain", "tiny", "sample:coffee", "--methods", "saliency", "--out", out,
                       "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["coffee.json", "coffee_panel.png", "coffee_saliency.npy",
                                                     "index.html", "index.json", "manifest.json"]


def test_explain_cli_warns_in_one_line(capsys, tmp_path, fake_model):
    fake_model["net"] = NormNet()
    code, _, err = run(capsys, "explain", "tiny", "sample:chelsea", "--methods", "integrated_gradients", "-o",
                       "integrated_gradients.n_steps=4", "--out", tmp_path, "--no-progress")
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: integrated gradients: the attributions of image 0")


@pytest.mark.parametrize("args", [["--methods", "saliency"], ["--target", "-1"]])
def test_explain_cli_unwritable_out_fails_before_loading_the_model(capsys, tmp_path, fake_model, args):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code, out, err = run(capsys, "explain", "tiny", "sample:chelsea", "--out", blocker / "sub", *args)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "file.txt" in err
    assert fake_model["opened"] == 0 and blocker.read_text() == "not a folder"


def test_linearized_also_removes_functional_relus():
    from cnnscope.capture.linearize import linearized

    x = x_of((2, 3, 8, 8), seed=6, scale=3.0)
    net = DenseTailNet().eval()
    f = net.features
    with torch.no_grad():
        with linearized(net) as n:
            got = net(x)
        want = net.fc(f[3](f[2](f[0](x))).mean(dim=(2, 3)))  # every ReLU (module and F.relu) removed
        assert n == 1 and not torch.allclose(net(x), want, atol=1e-4)
    torch.testing.assert_close(got, want)
    net6 = FunctionalReLU6Net().eval()
    with torch.no_grad(), linearized(net6) as n:
        torch.testing.assert_close(net6(x), net6.fc(net6.conv2(net6.conv1(x)).mean(dim=(2, 3))))
    assert n == 0
