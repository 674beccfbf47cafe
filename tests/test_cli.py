"""The command line: real commands on the embedded model; errors are one line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnscope.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_on_sample_photos(capsys):
    code, out, _ = run(capsys, "predict", "efficientnet_lite0", "sample:chelsea", "sample:coffee", "--json", "-k", "3")
    assert code == 0
    data = json.loads(out)
    chelsea, coffee = data["results"]
    assert chelsea["top"][0]["label"] in {"Egyptian cat", "tiger cat", "tabby"}
    assert coffee["top"][0]["label"] == "espresso" and len(coffee["top"]) == 3
    assert data["model"]["pretrained"] is True


def test_predict_text_and_image_file(capsys, tmp_path, samples):
    path = tmp_path / "cup.png"
    Image.fromarray(samples["coffee"]).save(path)
    code, out, _ = run(capsys, "predict", "efficientnet_lite0", str(path))
    assert code == 0 and "cup.png:" in out and "espresso" in out.splitlines()[1]


def test_layers_table_and_json(capsys):
    code, out, _ = run(capsys, "layers", "efficientnet_lite0", "--depth", "1")
    assert code == 0 and "blocks.4" in out and "112x14x14" in out and "blocks.4.0" not in out
    code, out, _ = run(capsys, "layers", "efficientnet_lite0", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["conv_head"]["output_shape"] == [1280, 7, 7]


def test_models_lists_pretrained_default(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    first = out.splitlines()[2]
    assert first.split()[:3] == ["efficientnet_lite0", "embedded", "pretrained"]
    assert "resnet18" in out and "random init" in out


def test_random_weights_are_announced(capsys):
    code, _, err = run(capsys, "layers", "resnet18", "--depth", "0")
    assert code == 0 and "RANDOM weights" in err


@pytest.mark.parametrize("args, message", [
    (("predict", "efficientnet_lite", "sample:chelsea"), "unknown model 'efficientnet_lite'; did you mean"),
    (("predict", "efficientnet_lite0", "sample:chelsey"), "unknown sample image"),
    (("predict", "efficientnet_lite0", "/nonexistent/cat.jpg"), "no such file"),
])
def test_errors_are_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 1 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_image_and_wrong_channels(capsys, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    code, _, err = run(capsys, "predict", "efficientnet_lite0", str(bad))
    assert code == 1 and "bad.jpg" in err
    arr = tmp_path / "five.npy"
    np.save(arr, np.zeros((8, 8, 5)))
    from cnnscope import ImageError, load_image

    with pytest.raises(ImageError, match="HxWx4"):
        load_image(np.load(arr))


def test_debug_shows_traceback():
    proc = subprocess.run([sys.executable, "-m", "cnnscope", "--debug", "predict", "nope", "x.png"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelError" in proc.stderr


def test_demo_quick_prints_predictions(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--quick", "--out", str(tmp_path), "--only", "10,20")
    assert code == 0
    assert "chelsea: " in out and "coffee: espresso" in out and "blocks.4" in out
