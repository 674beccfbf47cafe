"""Any model file as MODEL (a `cnnscope train` checkpoint, TorchScript), TorchScript and hooks, `layers --layout`,
one-line warnings from every command, atomic JSON and pictures."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnscope import LayerError, load_model
from cnnscope.capture import Capture
from cnnscope.cli.app import main, one_line_warnings, write_json
from cnnscope.images import save_image
from tests.models import InplaceReLUNet


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint written by `cnnscope train` (one short epoch on the digits)."""
    out = tmp_path_factory.mktemp("train")
    code = main(["-q", "train", "digits", "--epochs", "1", "--checkpoints", "1", "--widths", "4,8", "--size", "16",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out / "epoch_001.pt"


def test_load_model_reads_a_training_checkpoint(trained, samples):
    from cnnscope.zf.train import load_checkpoint

    m = load_model(str(trained))
    ref = load_checkpoint(trained)
    assert m.source == "checkpoint" and m.input_size == (16, 16) and len(m.mean) == 1 and m.labels == ref.labels
    for (k, a), b in zip(ref.module.state_dict().items(), m.module.state_dict().values()):
        assert torch.equal(a, b), k
    assert m.predict(samples["coffee"], k=3) == ref.predict(samples["coffee"], k=3)
    with pytest.raises(Exception, match="drop --weights"):
        load_model(str(trained), weights=str(trained))


def test_cli_explain_on_a_training_checkpoint(capsys, tmp_path, trained, samples):
    from cnnscope.attribution import attribute
    from cnnscope.zf.train import load_checkpoint

    out = tmp_path / "explain"
    code, text, err = run(capsys, "explain", str(trained), "sample:chelsea", "--out", str(out), "--device", "cpu")
    assert code == 0, err
    doc = json.loads((out / "chelsea.json").read_text())
    ref = load_checkpoint(trained)
    with torch.no_grad():
        probs = ref.module(ref.batch(samples["chelsea"])).softmax(1)[0]
    assert doc["target_index"] == int(probs.argmax()) and abs(doc["target_probability"] - float(probs.max())) < 1e-6
    assert doc["skipped"] == {} and set(doc["maps"]) == {"gradcam", "guided_backprop", "integrated_gradients",
                                                          "occlusion"}
    want = attribute(ref, samples["chelsea"], "gradcam", target=int(probs.argmax())).values[0].numpy()
    got = np.load(out / doc["maps"]["gradcam"])
    assert np.allclose(got.reshape(want.shape), want, atol=1e-6)


@pytest.fixture
def scripted(tmp_path):
    torch.manual_seed(3)
    net = InplaceReLUNet().eval()
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    return net, path


def test_torchscript_predicts_but_hooks_are_one_clear_error(capsys, scripted, samples):
    net, path = scripted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = load_model(str(path))
    assert m.is_script and any("TorchScript" in n for n in m.notes)
    with torch.no_grad():
        want = net(m.batch(samples["chelsea"]))
        assert torch.allclose(m.module(m.batch(samples["chelsea"])), want, atol=1e-6)
    with pytest.raises(LayerError, match="is a TorchScript module: PyTorch runs no Python hooks inside it; load its "
                                         r"weights into the Python architecture \(MODEL=NAME --weights FILE\)"):
        Capture(m, "features.0")
    code, out, err = run(capsys, "layers", str(path), "--device", "cpu")
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "TorchScript module" in errors[0] and "Traceback" not in err
    code, out, err = run(capsys, "predict", str(path), "sample:chelsea", "--json", "--device", "cpu")
    assert code == 0, err


def test_every_warning_of_a_command_is_one_line(capsys, scripted):
    _, path = scripted  # torch.jit.load warns (a FutureWarning with a source line) when the model is read
    code, out, err = run(capsys, "predict", str(path), "sample:chelsea", "--device", "cpu")
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert warned and all(ln.startswith(("warning: ", "note: ")) for ln in err.splitlines())
    assert "warnings.warn(" not in err


def test_one_line_warnings_joins_lines(capsys):
    with one_line_warnings():
        warnings.warn("first line\n  second line", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: first line second line\n"


def test_layers_layout_option_and_column(capsys):
    code, out, err = run(capsys, "layers", "timm:vit_tiny_patch16_224", "--depth", "1", "--device",
                         "cpu")
    assert code == 0, err
    rows = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert "tokens+cls" in rows["blocks.0"]  # [1, 197, 192]: a class token and a 14x14 grid
    code, out, err = run(capsys, "layers", "timm:vit_tiny_patch16_224", "--depth", "1",
                         "--layout", "blocks.0=nc", "--device", "cpu")
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "which is not 'nc'" in errors[0]
    code, out, err = run(capsys, "layers", "timm:vit_tiny_patch16_224", "--depth", "1", "--json",
                         "--layout", "norm=tokens+cls", "--layout", "blocks.1=tokens+cls", "--device", "cpu")
    doc = {d["name"]: d for d in json.loads(out)}
    assert code == 0 and doc["norm"]["layout"] == "tokens+cls" and doc["norm"]["grid_size"] == [14, 14]
    code, out, err = run(capsys, "layers", "resnet18", "--layout", "layer1", "--device", "cpu")
    assert code == 1 and "LAYER=LAYOUT" in err


def test_layers_size_is_passed_as_given(capsys):
    code, out, _ = run(capsys, "layers", "resnet18", "--size", "64", "--depth", "0", "--json", "--device", "cpu")
    doc = {d["name"]: d for d in json.loads(out)}
    assert code == 0 and doc["layer4"]["output_shape"] == [512, 2, 2]


def test_save_image_and_write_json_are_atomic(tmp_path, monkeypatch):
    pic = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    path = save_image(pic, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(path)), pic)

    def broken(self, fp, *a, **k):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        save_image(pic, tmp_path / "b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no truncated b.png, no temporary left
    assert np.array_equal(np.asarray(Image.open(path)), pic)
    monkeypatch.undo()
    write_json(tmp_path / "x.json", {"a": 1})
    real = Path.write_text

    def half(self, text, *a, **k):
        real(self, text[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(KeyboardInterrupt):
        write_json(tmp_path / "x.json", {"a": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "x.json"]


def test_a_state_dict_with_an_architecture_name(tmp_path, samples):
    import torchvision

    torch.manual_seed(4)
    path = tmp_path / "sd.pt"

    net = torchvision.models.resnet18(num_classes=7).eval()
    torch.save({"state_dict": net.state_dict()}, path)
    m = load_model("resnet18", weights=str(path))
    assert m.pretrained and m.labels is None and any("7 classes" in n for n in m.notes)
    with torch.no_grad():
        assert torch.allclose(m.module(m.batch(samples["coffee"])), net(m.batch(samples["coffee"])), atol=1e-6)
