"""``cnnscope render`` and the featurevis demo section."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnscope.cli import main
from cnnscope.cli.featurevis import parse_target
from cnnscope.errors import CnnscopeError


def test_parse_target():
    assert parse_target("blocks.4.0") == ("blocks.4.0", None)
    assert parse_target("blocks.4.0:3") == ("blocks.4.0", [3])
    assert parse_target("blocks.4.0:0,4-6,4") == ("blocks.4.0", [0, 4, 5, 6])
    assert parse_target("features.3:all") == ("features.3", "all")
    for bad in ("blocks.4.0:x", "blocks.4.0:5-2", ":3"):
        with pytest.raises(CnnscopeError):
            parse_target(bad)


def test_render_writes_images_grid_and_sidecar(tmp_path, capsys):
    out = tmp_path / "fv"
    rc = main(["render", "efficientnet_lite0", "blocks.1.0:0,2", "--negative", "--neuron", "--steps", "3",
               "--size", "48", "--seed", "5", "--out", str(out), "--no-progress"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["blocks.1.0_n0000_neg.png", "blocks.1.0_n0002_neg.png", "grid.png", "render.json"]
    meta = json.loads((out / "render.json").read_text())
    assert meta["seed"] == 5 and meta["spec"]["seeds"] == [5, 5] and meta["spec"]["steps"] == 3
    assert meta["spec"]["objectives"][0] == {"type": "scale", "factor": -1.0, "term": {
        "type": "neuron", "layer": "blocks.1.0", "channel": 0, "x": None, "y": None}}
    assert len(meta["activations"]) == 2 and meta["timing"]["seconds"] > 0
    assert np.asarray(Image.open(out / "blocks.1.0_n0000_neg.png")).shape == (48, 48, 3)
    assert "2 images, grid.png and render.json" in capsys.readouterr().out


def test_render_all_channels_and_whole_layer(tmp_path):
    assert main(["render", "efficientnet_lite0", "blocks.0.0.conv_pw:all", "--steps", "1", "--size", "32",
                 "--out", str(tmp_path / "all"), "--recipe", "plain"]) == 0
    assert len(list((tmp_path / "all").glob("blocks.0.0.conv_pw_c*.png"))) == 16
    assert main(["render", "efficientnet_lite0", "blocks.0", "--steps", "1", "--size", "32", "--diversity", "2",
                 "--out", str(tmp_path / "dream")]) == 0
    assert sorted(p.name for p in (tmp_path / "dream").glob("*.png")) == [
        "blocks.0_layer_d0.png", "blocks.0_layer_d1.png", "grid.png"]


@pytest.mark.parametrize("args, message", [
    (["blocks.4.O:3"], "unknown layer 'blocks.4.O'; did you mean:"),
    (["blocks.1.0:99", "--size", "32"], "channel 99 is out of range for layer 'blocks.1.0', which has 24 channels "
                                        "(valid: 0..23)"),
    (["blocks.1.0:1", "--recipe", "lucent"], "unknown recipe 'lucent'; did you mean: lucid?"),
    (["blocks.1.0:1", "--size", "8"], "too small"),
    (["blocks.1.0", "--neuron"], "--neuron needs channels"),
])
def test_render_errors_are_one_line(tmp_path, capsys, args, message):
    rc = main(["render", "efficientnet_lite0", *args, "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and "\n" not in err and "Traceback" not in err


def test_demo_section(tmp_path, capsys):
    assert main(["demo", "--quick", "--only", "30", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "textures -> patterns -> parts" in out
    numbers = json.loads((tmp_path / "featurevis_layers.json").read_text())
    assert list(numbers["layers"]) == ["blocks.1.1", "blocks.3.2", "blocks.5.3"]
    assert (tmp_path / "featurevis_layers.png").stat().st_size > 10_000
