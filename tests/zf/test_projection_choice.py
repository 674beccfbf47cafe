"""``method="auto"``: the true deconvnet where the path is an invertible chain with max-pooling, else guided backprop
of the unit (a projection that depends on the image), else the plain gradient; the commands print which one and
why, and their JSON records it. On the pretrained EfficientNet-Lite0 the projections change with the image while
the deconvnet rule's do not."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from cnnscope import wrap
from cnnscope.cli import main
from cnnscope.errors import MethodError
from cnnscope.zf import evolution, occlusion_study, rule_projection, top_projections
from cnnscope.zf.projection_choice import ImageIndependentWarning, choose_projector, project_unit
from tests.models import ResidualNet, seeded

pytestmark = pytest.mark.usefixtures("one_thread")

RESIDUAL = "the true deconvnet cannot invert 'layer1' (BasicBlock): its forward() does more than run its submodules"
NO_POOL = "no max-pooling on the path to"


def pooled() -> nn.Module:
    seeded(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU())


def unpooled(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    seeded(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), act(), nn.Conv2d(6, 8, 3), act())


def images(n: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def recorded(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [w for w in caught if issubclass(w.category, ImageIndependentWarning)]


def test_auto_runs_the_true_deconvnet_on_a_chain_with_max_pooling():
    net = wrap(pooled().eval(), 12)
    (tp, ref), caught = recorded(lambda: (top_projections(net, images(), "4", channels="1,3", k=2),
                                          top_projections(net, images(), "4", channels="1,3", k=2,
                                                          method="deconvnet")))
    assert tp.method == "deconvnet" and "is a chain the deconvnet inverts, with max-pooling" in tp.reason
    assert tp.to_dict()["reason"] == tp.reason and ref.reason == "requested" and not caught
    for c in (1, 3):
        for a, b in zip(tp.entries[c], ref.entries[c]):
            torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)


def test_auto_falls_back_to_guided_backprop_on_a_residual_net():
    net = wrap(ResidualNet().eval(), 12)
    x = images()
    tp = top_projections(net, x, "layer2", channels="0,5", k=2)
    guided = top_projections(net, x, "layer2", channels="0,5", k=2, method="guided")
    assert tp.method == "guided" and tp.reason.startswith(RESIDUAL)
    assert tp.line().startswith("projection: guided backprop (" + RESIDUAL) and tp.line().endswith("see docs/zf.md)")
    for c in (0, 5):
        for a, b in zip(tp.entries[c], guided.entries[c]):
            assert a.position == b.position
            torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
    p = project_unit(net, x, "layer2", channel=5, position="center")
    ref = rule_projection(net, x, "layer2", channel=5, position="center", rule="guided")
    assert p.method == "guided" and p.reason.startswith(RESIDUAL)
    torch.testing.assert_close(p.values, ref.values, rtol=0, atol=0)


@pytest.mark.parametrize("act, method, why", [
    (nn.ReLU, "guided", [NO_POOL + " '3'", "hardly depend on the image (Mahendran & Vedaldi 2016)"]),
    (nn.SiLU, "gradient", ["the true deconvnet cannot invert layer '1' (SiLU)",
                           "no ReLU runs on the way to '3' for guided backprop"]),
])
def test_auto_without_max_pooling_or_without_relus(act, method, why):
    net = wrap(unpooled(act).eval(), 12)
    choice = choose_projector(net, "3")
    assert choice.method == method and all(w in choice.reason for w in why), choice.reason
    tp = top_projections(net, images(), "3", channels=[2], k=2)
    assert tp.method == method and tp.reason == choice.reason


def test_forcing_a_deconvnet_projection_without_max_pooling_warns_once():
    net = wrap(unpooled().eval(), 12)
    for method in ("rule", "deconvnet"):
        tp, caught = recorded(lambda method=method: top_projections(net, images(), "3", channels=[2], k=2,
                                                                    method=method))
        assert tp.method == method and tp.reason == "requested"
        assert len(caught) == 1 and NO_POOL in str(caught[0].message)
        assert "hardly depend on the image (Mahendran & Vedaldi 2016)" in str(caught[0].message)
    for method in ("guided", "gradient"):
        assert not recorded(lambda method=method: choose_projector(net, "3", method=method))[1]
    assert not recorded(lambda: choose_projector(wrap(pooled().eval(), 12), "4", method="rule"))[1]
    with pytest.raises(MethodError, match="unknown projection method 'guidd'"):
        choose_projector(net, "3", method="guidd")


def test_occlusion_study_and_evolution_record_the_projection():
    net = wrap(ResidualNet().eval(), 12)
    x = images(1)
    s = occlusion_study(net, x, "layer2", size=6, stride=6)
    ref = rule_projection(net, x, "layer2", channel=s.channel, rule="guided")
    assert s.projection.method == "guided" and s.projection.reason.startswith(RESIDUAL)
    assert s.to_dict()["projection"]["reason"] == s.projection.reason
    torch.testing.assert_close(s.projection.values, ref.values, rtol=0, atol=0)
    forced = occlusion_study(net, x, "layer2", size=6, stride=6, method="gradient")
    assert forced.projection.method == "gradient" and forced.projection.reason == "requested"
    ev = evolution([wrap(ResidualNet(seed=s).eval(), 12) for s in (0, 1)], images(), "layer2", channels="0,1")
    assert ev.method == "guided" and ev.reason.startswith(RESIDUAL) and ev.to_dict()["method"] == "guided"
    assert ev.line().startswith("projection: guided backprop (")
    with pytest.raises(MethodError):
        occlusion_study(net, x, "layer2", method="true")


# -- the commands print the projection and record it ----------------------------------------------------------
@pytest.fixture
def residual_cli(monkeypatch):
    monkeypatch.setattr("cnnscope.cli.zf.open_model", lambda model, weights, device: wrap(ResidualNet().eval(), 12))


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_print_the_projection_they_used(capsys, tmp_path, residual_cli):
    line = "projection: guided backprop (" + RESIDUAL
    code, out, err = run(capsys, "top9", "M", "digits:4", "--layer", "layer2", "--channels", "0-1", "-k", "2",
                         "--out", tmp_path / "t")
    assert code == 0, err
    assert [t for t in out.splitlines() if t.startswith("projection:")] == [out.splitlines()[0]]
    assert out.splitlines()[0].startswith(line)
    data = json.loads((tmp_path / "t" / "top9.json").read_text())
    assert data["method"] == "guided" and data["reason"].startswith(RESIDUAL)
    code, out, err = run(capsys, "deconv", "M", "sample:chelsea", "--layer", "layer2", "--channel", "1",
                         "--out", tmp_path / "d")
    assert code == 0 and out.splitlines()[0].startswith(line) and out.rstrip().endswith("(guided)")
    data = json.loads((tmp_path / "d" / "deconv.json").read_text())
    assert data["method"] == "guided" and data["reason"].startswith(RESIDUAL)
    code, out, err = run(capsys, "occlude", "M", "sample:chelsea", "--layer", "layer2", "--size", "6", "--stride",
                         "6", "--out", tmp_path / "o")
    assert code == 0 and out.splitlines()[0].startswith(line)
    assert json.loads((tmp_path / "o" / "occlusion.json").read_text())["projection"]["method"] == "guided"


def test_forcing_a_method_on_the_command_line(capsys, tmp_path, residual_cli):
    code, out, err = run(capsys, "top9", "M", "digits:4", "--layer", "layer1.conv2", "--channels", "0", "-k", "1",
                         "--method", "rule", "--out", tmp_path / "r")
    assert code == 0 and "projection: deconvnet rule (backward-rule gradient) (requested; see docs/zf.md)" in out
    assert len(err.splitlines()) == 1 and err.startswith("warning: " + NO_POOL)
    code, out, err = run(capsys, "top9", "M", "digits:4", "--layer", "layer2", "--method", "deconvnet",
                         "--out", tmp_path / "x")
    assert code == 1 and err.startswith("error: cannot invert 'layer1' (BasicBlock)") and len(err.splitlines()) == 1


# -- the pretrained EfficientNet-Lite0 --------------------------------------------------------------------------
def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.mark.slow
def test_lite0_top9_projections_change_with_the_image(lite0, samples):
    imgs = {n: samples[n] for n in ("chelsea", "coffee")}
    auto = top_projections(lite0, imgs, "blocks.2.0", channels="8-23", k=2)
    assert auto.method == "guided"
    assert auto.reason.startswith("the true deconvnet cannot invert 'blocks.1.1' (InvertedResidual)")
    rule, caught = recorded(lambda: top_projections(lite0, imgs, "blocks.2.0", channels="8-23", k=2, method="rule"))
    assert len(caught) == 1
    compared = 0
    for c in auto.channels:
        a, b = auto.entries[c]
        ra, rb = rule.entries[c]
        assert {a.image_index, b.image_index} == {0, 1} and (a.position, b.position) == (ra.position, rb.position)
        if a.values.shape != b.values.shape:  # a receptive field clipped by the border: not comparable
            continue
        compared += 1
        # the deconvnet rule draws one pattern for every image (correlation 1 up to float error), guided backprop
        # draws what is in each image
        assert _corr(ra.values, rb.values) > 0.99
        assert _corr(a.values, b.values) < 0.5
    assert compared >= 2


@pytest.mark.slow
def test_lite0_top9_command_says_which_projection(capsys, tmp_path, one_thread):
    code, out, err = run(capsys, "top9", "efficientnet_lite0", "sample:chelsea", "sample:coffee", "--layer",
                         "blocks.2.0", "--channels", "12", "-k", "2", "--out", tmp_path / "t")
    assert code == 0, err
    assert out.splitlines()[0].startswith("projection: guided backprop (the true deconvnet cannot invert "
                                          "'blocks.1.1' (InvertedResidual)")
    data = json.loads((tmp_path / "t" / "top9.json").read_text())
    assert data["method"] == "guided" and "InvertedResidual" in data["reason"] and len(data["entries"]["12"]) == 2


def test_auto_ignores_relus_after_the_layer():
    """Found in review: a ReLU only after the layer made auto say "guided" for what is the plain gradient."""
    from cnnscope.models import wrap
    from cnnscope.zf import choose_projector

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    choice = choose_projector(wrap(net, input_size=16), "2")
    assert choice.method == "gradient" and "no ReLU runs on the way to '2'" in choice.reason
    assert choose_projector(wrap(net, input_size=16), "3").method == "guided"
