"""Layer aliases everywhere a layer is named (atlas, list_layers, declared layouts, deconvnet, circuits, sanity,
dataset passes) and the presets' study layers as the defaults of ``atlas build``, ``tuning`` and ``examples``.

Models are random-weight torchvision GoogLeNets (the ``inceptionv1`` architecture, with Lucid's names as aliases)
at small inputs and the tiny nets of tests/models.py; nothing is downloaded."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import cnnscope.models
from cnnscope import LayerError, load_model, wrap
from cnnscope.capture import Capture, declare_layout, list_layers, set_layer_aliases
from cnnscope.cli.app import main
from tests.models import InplaceReLUNet

SIZE = (64, 64)


@pytest.fixture(scope="module")
def googlenet():
    """``torchvision:googlenet`` with random weights at 64 px, its Lucid aliases, and two study layers (as a preset
    has them)."""
    torch.manual_seed(0)
    m = load_model("torchvision:googlenet", device="cpu")
    assert m.aliases["mixed3b"] == "inception3b" and not m.pretrained
    return dataclasses.replace(m, input_size=SIZE, study_layers=["inception3a", "inception3b"])


@pytest.fixture(scope="module")
def pictures(samples):
    return [("chelsea", samples["chelsea"]), ("coffee", samples["coffee"]), ("astronaut", samples["astronaut"])]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def as_preset(monkeypatch, googlenet):
    """Every model name the CLI opens is the random googlenet fixture (named ``inceptionv1``)."""
    def fake(name, **kwargs):
        return dataclasses.replace(googlenet, name="inceptionv1")

    monkeypatch.setattr(cnnscope.models, "load_model", fake)
    return googlenet


# -- list_layers and declared layouts ---------------------------------------------------------------------------------

def test_list_layers_refuses_torchscript_in_one_layer_error():
    script = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
    with pytest.raises(LayerError, match="TorchScript module: PyTorch runs no Python hooks"):
        list_layers(script, 16)


def test_layouts_given_or_declared_by_alias_are_the_layers_layouts():
    net = InplaceReLUNet()
    set_layer_aliases(net, {"conv1": "features.0", "top": "features.5"})
    by_name = {i.name: i for i in list_layers(net, 16, layout={"features.5": "nhwc"})}
    by_alias = {i.name: i for i in list_layers(net, 16, layout={"top": "nhwc"})}
    assert by_alias["features.5"].layout == "nhwc" == by_name["features.5"].layout
    assert by_alias["features.5"].grid_size == by_name["features.5"].grid_size == (16, 8)  # [16, 8, 8] as NHWC
    assert by_alias["features.0"].layout == "nchw"
    declare_layout(net, {"conv1": "nchw", "top": "nhwc"})  # by alias: every later call still works
    infos = {i.name: i for i in list_layers(net, 16)}
    assert infos["features.5"].layout == "nhwc" and infos["features.0"].layout == "nchw"
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with Capture(net, ["top", "features.5"]) as cap:  # the declared layout is found under either name
        cap.run(x)
        acts = cap.activations
    assert cap.layouts == {"top": "nhwc", "features.5": "nhwc"}
    with torch.no_grad():
        raw = net.eval().features(x)  # Capture runs in eval mode
    assert torch.equal(acts["top"], raw.permute(0, 3, 1, 2)) and torch.equal(acts["top"], acts["features.5"])


# -- atlas --------------------------------------------------------------------------------------------------------

def _units(root):
    from cnnscope.atlas import AtlasStore

    with AtlasStore(root) as store:
        layers = store.layer_names()
        numbers = {(layer, u): {(a.kind, a.name): a.numbers for a in store.artifacts(layer, u)}
                   for layer in layers for u in store.units(layer)}
    return layers, numbers


def test_atlas_built_with_an_alias_is_the_atlas_of_its_layer(tmp_path, googlenet, pictures):
    from cnnscope.atlas import BuildOptions, build_atlas

    opts = BuildOptions(top_k=2, units_per_chunk=2, batch_size=3)
    kw = {"channels": "0-2", "source": pictures, "kinds": ["examples"], "options": opts}
    a = build_atlas(googlenet, tmp_path / "a", ["mixed3b"], **kw)
    b = build_atlas(googlenet, tmp_path / "b", ["inception3b"], **kw)
    assert a.built == b.built == [("inception3b", u) for u in range(3)]
    (la, ua), (lb, ub) = _units(tmp_path / "a"), _units(tmp_path / "b")
    assert la == lb == ["inception3b"] and ua == ub
    # the best example is the channel's maximum over the pictures (an independent forward)
    with torch.no_grad(), Capture(googlenet, "inception3b") as cap:
        cap.run(googlenet.batch([p for _, p in pictures]))
        want = float(cap["inception3b"][:, 1].max())
    got = [e["value"] for e in ua[("inception3b", 1)][("examples", "top")]["examples"]]
    assert len(got) == 2 and got[0] == pytest.approx(want, rel=1e-4) and got[1] <= got[0]
    # the same atlas resumed with the other spelling (and both at once) has nothing left to build
    again = build_atlas(googlenet, tmp_path / "a", ["inception3b", "mixed3b"], **kw)
    assert again.built == [] and again.skipped == 3


def test_atlas_defaults_to_study_layers_and_says_when_there_are_none(tmp_path, googlenet):
    from cnnscope.atlas import build_atlas
    from cnnscope.atlas.build import _resolve_layers

    assert [i.name for i in _resolve_layers(googlenet, googlenet.study_layers)] == ["inception3a", "inception3b"]
    bare = wrap(InplaceReLUNet(), input_size=(16, 16))
    with pytest.raises(LayerError, match="give layers=.*; this model has no preset study layers"):
        build_atlas(bare, tmp_path / "x", kinds=["examples"], source=[("a", torch.zeros(16, 16, 3).byte().numpy())])


def test_cli_atlas_build_without_layers(tmp_path, capsys, as_preset, monkeypatch):
    import cnnscope.atlas as atlas_pkg

    seen = {}

    def fake_build(m, out, layers, **kwargs):
        seen["layers"] = layers
        raise LayerError("stop here (test)")

    monkeypatch.setattr(atlas_pkg, "build_atlas", fake_build)
    code, out, err = run(capsys, "atlas", "build", "inceptionv1", "--out", str(tmp_path / "a"), "--kinds", "examples",
                         "--images", "sample:chelsea", "--device", "cpu")
    assert code == 1 and seen["layers"] == ["inception3a", "inception3b"]
    assert "note: layers: inceptionv1's study layers (inception3a, inception3b)" in err
    monkeypatch.setattr(cnnscope.models, "load_model", lambda name, **kw: wrap(InplaceReLUNet(), input_size=(16, 16)))
    code, out, err = run(capsys, "atlas", "build", "tiny", "--out", str(tmp_path / "b"), "--kinds", "examples",
                         "--images", "sample:chelsea", "--device", "cpu")
    assert code == 1 and err.strip().splitlines()[-1] == "error: give --layers; this model has no preset study layers"


# -- tuning and examples on the command line ---------------------------------------------------------------------

def test_cli_tuning_accepts_an_alias_and_defaults_to_study_layers(tmp_path, capsys, as_preset, monkeypatch):
    import cnnscope.stimuli as stimuli_pkg

    real = stimuli_pkg.tuning_report
    seen = []

    def spy(m, layer, **kwargs):
        seen.append(layer)
        return real(m, layer, **kwargs)

    monkeypatch.setattr(stimuli_pkg, "tuning_report", spy)
    opts = ["--channels", "0,1", "--levels", "8,16", "--step", "90", "--size", "32", "--images", "none",
            "--joint-step", "0", "--device", "cpu"]
    code, out, err = run(capsys, "tuning", "inceptionv1", "mixed3a", "--out", str(tmp_path / "one"), *opts)
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())["files"]
    assert seen == ["mixed3a"] and all("/" not in f for f in one)
    code, out, err = run(capsys, "tuning", "inceptionv1", "--out", str(tmp_path / "all"), *opts)
    assert code == 0, err
    assert seen[1:] == ["inception3a", "inception3b"]
    files = json.loads((tmp_path / "all" / "manifest.json").read_text())["files"]
    assert {f.split("/")[0] for f in files} == {"inception3a", "inception3b"}
    assert sorted(f.split("/", 1)[1] for f in files if f.startswith("inception3a/")) == sorted(one)
    assert all((tmp_path / "all" / f).is_file() for f in files)
    a = next(f for f in one if f.endswith(".npz"))  # the alias run measured the same numbers as its layer's
    with np.load(tmp_path / "one" / a) as za, np.load(tmp_path / "all" / "inception3a" / a) as zb:
        assert set(za.files) == set(zb.files)
        floats = [k for k in za.files if za[k].dtype.kind == "f"]
        assert floats and any(np.abs(za[k]).sum() > 0 for k in floats)
        for k in floats:
            np.testing.assert_allclose(za[k], zb[k], rtol=1e-5, atol=1e-6)


def test_cli_examples_defaults_to_study_layers_in_one_pass(tmp_path, capsys, as_preset, samples):
    opts = ["--images", "sample:chelsea,coffee", "-k", "2", "--channels", "0,3", "--device", "cpu", "--json"]
    code, out, err = run(capsys, "examples", "inceptionv1", "mixed3b", "--out", str(tmp_path / "one"), *opts)
    assert code == 0, err
    single = json.loads(out)
    assert single["layer"] == "mixed3b" and set(single["channels"]) == {"0", "3"}
    code, out, err = run(capsys, "examples", "inceptionv1", "--out", str(tmp_path / "all"), *opts)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["layers"] == ["inception3a", "inception3b"] and doc["images"] == 2
    assert doc["by_layer"]["inception3b"]["channels"] == single["channels"]  # the alias's numbers are its layer's
    with torch.no_grad(), Capture(as_preset, ["inception3a", "inception3b"]) as cap:
        cap.run(as_preset.batch([samples["chelsea"], samples["coffee"]]))
        for name in ("inception3a", "inception3b"):
            want = cap[name].amax(dim=(0, 2, 3))
            for c in (0, 3):
                assert doc["by_layer"][name]["channels"][str(c)]["max"] == pytest.approx(float(want[c]), rel=1e-4)
    assert (tmp_path / "all" / "inception3a_c0003.png").is_file()


# -- deconvnet, circuits and sanity on aliases -------------------------------------------------------------------

def test_deconvnet_on_an_alias_equals_its_layer():
    from cnnscope.zf import DeconvNet, project

    net = InplaceReLUNet()
    set_layer_aliases(net, {"relu2": "features.5", "stack": "features"})
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for alias, name in (("relu2", "features.5"), ("stack.4", "features.4")):
        a = project(net, x, alias, channel=5)
        b = project(net, x, name, channel=5)
        assert torch.equal(a.values, b.values) and a.positions == b.positions and a.values.abs().sum() > 0
    pa = project(net, x, "relu2", channel=5, pre_activation=True)
    pb = project(net, x, "features.5", channel=5, pre_activation=True)
    assert torch.equal(pa.values, pb.values) and torch.equal(pa.activations, pb.activations)
    assert DeconvNet(net, "relu2", input_size=16).chain.layer == "features.5"


def test_circuits_on_aliases_equal_the_layers(googlenet, samples):
    from cnnscope.dataset.circuits import attribution, connection, feeding_layer

    a, b = connection(googlenet, "conv2d0.bn", 3), connection(googlenet, "conv1.bn", 3)
    assert (a.conv, a.norm) == (b.conv, b.norm) == ("conv1.conv", "conv1.bn")
    assert torch.equal(a.weights, b.weights) and a.bias == b.bias
    bn, conv = googlenet.module.conv1.bn, googlenet.module.conv1.conv
    with torch.no_grad():  # folded batch norm, computed independently
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        torch.testing.assert_close(a.weights, conv.weight[3] * scale[3])
        assert a.bias == pytest.approx(float(bn.bias[3] - bn.running_mean[3] * scale[3]), abs=1e-6)
    c = connection(googlenet, "mixed3a.branch1.bn", 7)
    assert c.conv == "inception3a.branch1.conv" and c.layer == "mixed3a.branch1.bn"
    assert feeding_layer(googlenet, "mixed3a.branch1.conv") == feeding_layer(googlenet, "inception3a.branch1.conv")
    ra = attribution(googlenet, samples["chelsea"], "mixed3a.branch1.bn", channel=7, position="max")
    rb = attribution(googlenet, samples["chelsea"], "inception3a.branch1.bn", channel=7, position="max")
    assert torch.equal(ra.tensor, rb.tensor) and ra.position == rb.position and ra.tensor.abs().sum() > 0
    assert ra.value - ra.connection.bias == pytest.approx(float(ra.tensor.sum()), rel=1e-4, abs=1e-7)


def test_sanity_check_randomizes_an_alias_as_its_layer():
    from cnnscope.evaluate.sanity import randomization_units, sanity_check

    net = InplaceReLUNet()
    set_layer_aliases(net, {"conv1": "features.0", "head": "fc"})
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert randomization_units(net, x, layers=["head", "conv1"]) == ["fc", "features.0"]
    a = sanity_check(net, x, ["saliency"], layers=["head", "conv1"], measures=["spearman_abs"])
    b = sanity_check(net, x, ["saliency"], layers=["fc", "features.0"], measures=["spearman_abs"])
    assert a.steps == b.steps
    torch.testing.assert_close(a.similarity["saliency"]["spearman_abs"], b.similarity["saliency"]["spearman_abs"])
    assert float(a.similarity["saliency"]["spearman_abs"][0].min()) == pytest.approx(1.0)


# -- a dataset pass on a model with aliases --------------------------------------------------------------------

def test_statistics_pass_on_a_model_with_aliases(tmp_path, googlenet, pictures):
    from PIL import Image

    from cnnscope.dataset import collect_statistics
    from cnnscope.dataset.sources.stream import fitter_of

    for name, pic in pictures:
        Image.fromarray(pic).save(tmp_path / f"{name}.png")

    fit = fitter_of(googlenet)
    assert isinstance(fit.module, torch.nn.Identity) and fit.aliases == {} and fit.study_layers == []
    by_alias = collect_statistics(googlenet, tmp_path, ["mixed3a"], k=2, batch_size=2, receptive_field=None)
    by_name = collect_statistics(googlenet, tmp_path, ["inception3a"], k=2, batch_size=2, receptive_field=None)
    assert by_alias.images == 3
    with torch.no_grad(), Capture(googlenet, "inception3a") as cap:
        cap.run(googlenet.batch([p for _, p in pictures]))
        acts = cap["inception3a"]
    torch.testing.assert_close(by_alias["mixed3a"].maximum, acts.amax(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(by_alias["mixed3a"].mean, by_name["inception3a"].mean)
    torch.testing.assert_close(by_alias["mixed3a"].mean, acts.mean(dim=(0, 2, 3)).double().to(
        by_alias["mixed3a"].mean.dtype), rtol=1e-4, atol=1e-5)

