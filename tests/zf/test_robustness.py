"""Zeiler & Fergus analyses on any model: the true deconvnet refuses what it cannot invert in one line that names
the block and the way out, `top9 --method rule|guided` projects on any model (checked against independent
computations), the occlusion study's projection works without ReLUs, and every command checks --out first and
writes atomically under a manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope import wrap
from cnnscope.cli import main
from cnnscope.cli.zf import PROJECTION_METHODS as CLI_METHODS
from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.zf import DeconvError, DeconvNet, occlusion_study, project, top_projections
from cnnscope.zf.rule_projector import PROJECTION_METHODS
from tests.conformance import assert_unchanged
from tests.models import GuidedReLU, ResidualNet, seeded

pytestmark = pytest.mark.usefixtures("one_thread")


class Fire(nn.Module):
    """SqueezeNet's Fire module: squeeze, then two expand branches joined by a concatenation."""

    def __init__(self, c: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c, squeeze, 1)
        self.squeeze_act = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_act = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_act(self.squeeze(x))
        return torch.cat([self.expand1x1_act(self.expand1x1(x)), self.expand3x3_act(self.expand3x3(x))], 1)


class FireNet(nn.Module):
    def __init__(self, squeeze: int, expand: int, seed: int = 0) -> None:
        super().__init__()
        seeded(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Fire(8, squeeze, expand),
                                      nn.MaxPool2d(2))
        self.fc = nn.Linear(2 * expand, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def one_line_deconv_error(err: BaseException | None) -> str:
    assert isinstance(err, DeconvError), repr(err)
    msg = str(err)
    assert "\n" not in msg and "top9" in msg
    assert all(f"--method {m}" in msg for m in ("rule", "guided", "gradient"))
    return msg


# -- item 5: the true deconvnet refuses non-chains up front ------------------------------------------------
@pytest.mark.parametrize("squeeze, expand, named", [
    (4, 6, "cannot invert 'features.2' (Fire): 'features.2.expand3x3' does not run on the output of "
           "'features.2.expand1x1_act'"),  # the branch cannot even run on the other branch's output
    (6, 6, "cannot invert 'features.2' (Fire): its forward() does more than run its submodules"),  # it can: compare
])
def test_branches_joined_by_a_concatenation_are_named(squeeze, expand, named):
    net = FireNet(squeeze, expand)
    err = assert_unchanged(net, lambda: project(net, torch.randn(1, 3, 8, 8), "features.3", channel=0))
    assert named in one_line_deconv_error(err)
    assert project(net, torch.randn(1, 3, 8, 8), "features.2.squeeze_act", channel=0).method == "deconvnet"


def _tv(name: str, **kw):
    import torchvision

    return getattr(torchvision.models, name)(**kw)


@pytest.mark.parametrize("build, layer, size, named", [
    (lambda: _tv("squeezenet1_1"), "features.5", 64, "'features.3' (Fire)"),
    (lambda: _tv("resnet18"), "layer2", 64, "'layer1.0' (BasicBlock)"),
    (lambda: _tv("resnet18"), "layer2.0.downsample.0", 64, "'layer1.0' (BasicBlock)"),
    (lambda: _tv("googlenet", init_weights=True, aux_logits=False), "inception3a", 64, "'conv1' (BasicConv2d)"),
    (lambda: __import__("timm").create_model("resnet18", pretrained=False), "layer2", 64, "'layer1.0' (BasicBlock)"),
    pytest.param(lambda: _tv("inception_v3", init_weights=True, aux_logits=False), "Mixed_5b", 96,
                 "'Conv2d_1a_3x3' (BasicConv2d)", marks=pytest.mark.slow),
])
def test_real_architectures_get_one_line_not_a_raw_error(build, layer, size, named):
    net = build().eval()
    err = assert_unchanged(net, lambda: DeconvNet(net, layer, input_size=size))
    assert named in one_line_deconv_error(err)


# -- item 5: top9's projection methods --------------------------------------------------------------------
def test_projection_methods_are_the_same_everywhere():
    assert CLI_METHODS == PROJECTION_METHODS == ("auto", "deconvnet", "rule", "guided", "gradient")
    with pytest.raises(MethodError, match="unknown projection method 'guidd'; did you mean: guided"):
        top_projections(ResidualNet(), torch.randn(2, 3, 8, 8), "layer1", method="guidd")


def test_rule_projections_equal_the_true_deconvnet_on_a_plain_stack(digits_run, digits_test_images):
    m = digits_run.model
    kw = dict(channels=[0, 3], k=3)
    true = top_projections(m, digits_test_images, "features.4", **kw)
    rule = top_projections(m, digits_test_images, "features.4", method="rule", **kw)
    assert rule.method == "rule" and rule.to_dict()["method"] == "rule" and true.method == "deconvnet"
    for c in (0, 3):
        for a, b in zip(true.entries[c], rule.entries[c]):
            assert (a.image_index, a.position, a.box) == (b.image_index, b.position, b.box)
            assert a.activation == pytest.approx(b.activation, rel=1e-5)
            torch.testing.assert_close(b.values, a.values, rtol=1e-4, atol=1e-5 * float(a.values.abs().max()))


def guided_layer1(net: ResidualNet, x: torch.Tensor) -> torch.Tensor:
    """Independent forward to ``layer1`` with guided ReLUs."""
    g = GuidedReLU.apply
    h = g(net.stem(x))
    b = net.layer1
    r = g(b.bn1(b.conv1(h)))
    return g(b.bn2(b.conv2(r)) + h)


def test_guided_top_projections_on_a_residual_net_match_an_independent_computation():
    net = ResidualNet().eval()
    x = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    tp = top_projections(wrap(net, 12), x, "layer1", channels="0,5", k=3, method="guided", batch_size=2)
    with torch.no_grad():
        acts = net.layer1(net.act(net.stem(x)))
    for c in (0, 5):
        best = acts[:, c].flatten(1).amax(1)
        assert [e.image_index for e in tp.entries[c]] == best.argsort(descending=True)[:3].tolist()
        for e in tp.entries[c]:
            r, k = e.position
            assert e.activation == pytest.approx(float(acts[e.image_index, c, r, k]), rel=1e-5)
            assert e.activation == pytest.approx(float(best[e.image_index]), rel=1e-6)
            # receptive field of a 3x3 stem and two 3x3 convs (padding 1): radius 3, clipped to the image
            assert e.box == (max(r - 3, 0), max(k - 3, 0), min(r + 4, 12), min(k + 4, 12))
            xi = x[e.image_index:e.image_index + 1].clone().requires_grad_()
            # the activation's value is what is projected: its guided gradient times the value
            ref = torch.autograd.grad(guided_layer1(net, xi)[0, c, r, k], xi)[0][0] * e.activation
            t, left, b, rt = e.box
            torch.testing.assert_close(e.values, ref[:, t:b, left:rt])
            assert float(ref.abs().sum()) == pytest.approx(float(e.values.abs().sum()), rel=1e-5)  # all inside
    assert assert_unchanged(net, lambda: top_projections(wrap(net, 12), x, "layer1", channels=1, k=1,
                                                         method="rule")) is None


def test_occlusion_study_projects_with_the_plain_gradient_without_relus():
    seeded(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 5, 3, padding=1), nn.SiLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    s = occlusion_study(wrap(net, 12), x, "3", size=6, stride=6)
    p = s.projection
    assert p.method == "gradient"
    r, c = p.positions[0]
    xi = x.clone().requires_grad_()
    value = net[:4](xi)[0, s.channel, r, c]
    ref = torch.autograd.grad(value, xi)[0] * float(value.detach())  # the value projected: gradient times value
    torch.testing.assert_close(p.values, ref)


# -- item 6: commands check --out first and write under a manifest ------------------------------------------
@pytest.fixture
def fake_open(monkeypatch):
    """Every zf command opens a wrapped ResidualNet; ``opened`` counts the loads."""
    state = {"opened": 0}

    def open_model(model, weights, device):
        state["opened"] += 1
        return wrap(ResidualNet().eval(), input_size=12)

    monkeypatch.setattr("cnnscope.cli.zf.open_model", open_model)
    monkeypatch.setattr("cnnscope.cli.zf_train.open_model", open_model)
    return state


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


COMMANDS = {
    "deconv": ["deconv", "M", "sample:chelsea", "--layer", "layer1", "--channel", "0"],
    "top9": ["top9", "M", "digits:4", "--layer", "layer1"],
    "occlude": ["occlude", "M", "sample:chelsea", "--layer", "layer1"],
    "invariance": ["invariance", "M", "sample:chelsea"],
    "correspond": ["correspond", "M", "sample:chelsea", "--box", "0,0,4,4"],
    "boundary": ["boundary", "M", "sample:chelsea"],
    "filters": ["filters", "M"],
    "featuremaps": ["featuremaps", "M", "sample:chelsea", "--layer", "layer1"],
    "evolution": ["evolution", "/nonexistent/run"],
    "train": ["train", "digits", "--epochs", "1"],
    "paramgrads": ["paramgrads", "M", "sample:chelsea"],
    "featurespace": ["featurespace", "M", "samples"],
    "ablate": ["ablate", "digits", "--variant", "drop:conv3"],
    "transfer": ["transfer", "M", "digits"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_out_fails_first_in_one_line(capsys, tmp_path, fake_open, command):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, out, err = run(capsys, *COMMANDS[command], "--out", blocker / "sub")
    assert code == 1 and out == "" and fake_open["opened"] == 0
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot write to output folder") and "file.txt" in err


def test_top9_methods_on_the_command_line(capsys, tmp_path, fake_open):
    out = tmp_path / "o"
    code, _, err = run(capsys, "top9", "M", "digits:6", "--layer", "layer1", "--channels", "0-1", "-k", "2",
                       "--method", "deconvnet", "--out", out)
    assert code == 1 and len(err.splitlines()) == 1
    assert "cannot invert the path to 'layer1' (BasicBlock)" in err and "--method rule" in err
    assert not (out / "manifest.json").exists() and not (out / "top9.png").exists()
    for method in ("rule", "guided", "gradient"):
        code, text, err = run(capsys, "top9", "M", "digits:6", "--layer", "layer1", "--channels", "0-1", "-k", "2",
                              "--method", method, "--out", out)
        assert code == 0, err
        data = json.loads((out / "top9.json").read_text())
        assert data["method"] == method and len(data["entries"]["1"]) == 2
        assert json.loads((out / "manifest.json").read_text())["files"] == ["top9.json", "top9.png"]
    # another command into the same folder: the new files are listed, the other command's files stay
    code, text, err = run(capsys, "deconv", "M", "sample:chelsea", "--layer", "layer1", "--channel", "1",
                          "--method", "guided", "--out", out)
    assert code == 0, err and "(guided)" in text
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(files) == ["deconv.json", "deconv.npy", "deconv.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["manifest.json", "top9.json", "top9.png"])
    assert np.load(out / "deconv.npy").shape == (3, 12, 12)


def test_train_lists_its_checkpoints_and_a_new_run_removes_the_old_ones(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["train", "digits", "--epochs", "1", "--widths", "4,8,16", "--size", "16", "--out", out]
    code, _, err = run(capsys, *args, "--checkpoints", "0,1")
    assert code == 0, err
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(files) == ["curves.png", "epoch_000.pt", "epoch_001.pt", "history.json"]
    code, _, err = run(capsys, *args, "--checkpoints", "1")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "epoch_001.pt", "history.json", "manifest.json"]
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_without_relus_guided_is_refused_and_gradient_projects():
    seeded(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3))
    x = torch.randn(3, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    err = assert_unchanged(net, lambda: top_projections(wrap(net, 9), x, "2", method="guided", k=1))
    assert isinstance(err, CnnscopeError) and "the activations are GELU; guided backprop needs ReLUs" in str(err)
    tp = top_projections(wrap(net, 9), x, "2", channels=[1], k=2, method="gradient")
    assert tp.method == "gradient"
    for e in tp.entries[1]:
        r, c = e.position
        xi = x[e.image_index:e.image_index + 1].clone().requires_grad_()
        value = net(xi)[0, 1, r, c]
        ref = torch.autograd.grad(value, xi)[0][0] * float(value.detach())
        assert e.box == (r, c, r + 5, c + 5)  # two valid 3x3 convolutions
        torch.testing.assert_close(e.values, ref[:, r:r + 5, c:c + 5])
        assert float(ref.abs().sum()) == pytest.approx(float(e.values.abs().sum()), rel=1e-5)  # nothing outside
