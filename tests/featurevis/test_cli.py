"""``cnnscope render``, ``cnnscope objectives`` and the featurevis demo section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnscope.cli import main
from cnnscope.featurevis import OBJECTIVES, describe_objectives, register_objective
from cnnscope.featurevis.objectives import LayerObjective
from cnnscope.outputs import FORMAT


def test_render_writes_images_grid_and_sidecar(tmp_path, capsys):
    out = tmp_path / "fv"
    rc = main(["render", "efficientnet_lite0", "blocks.1.0", "--channels", "0,2", "--negative", "--position",
               "center", "--steps", "3", "--size", "48", "--seed", "5", "--out", str(out), "--no-progress"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["blocks.1.0_n0000_neg.png", "blocks.1.0_n0002_neg.png", "grid.png", "manifest.json",
                     "render.json"]
    assert json.loads((out / "manifest.json").read_text())["files"] == [
        "blocks.1.0_n0000_neg.png", "blocks.1.0_n0002_neg.png", "grid.png", "render.json"]
    meta = json.loads((out / "render.json").read_text())
    assert meta["seed"] == 5 and meta["spec"]["seeds"] == [5, 5] and meta["spec"]["steps"] == 3
    assert meta["spec"]["objectives"][0] == {"type": "scale", "factor": -1.0, "term": {
        "type": "neuron", "layer": "blocks.1.0", "channel": 0, "position": "center", "pre_activation": False}}
    assert len(meta["activations"]) == 2 and meta["timing"]["seconds"] > 0
    assert np.asarray(Image.open(out / "blocks.1.0_n0000_neg.png")).shape == (48, 48, 3)
    assert "2 images, grid.png and render.json" in capsys.readouterr().out


def test_render_all_channels_pre_activation_and_objective_text(tmp_path):
    assert main(["render", "efficientnet_lite0", "blocks.0.0.conv_pw", "--steps", "1", "--size", "32",
                 "--out", str(tmp_path / "all"), "--recipe", "plain"]) == 0
    assert len(list((tmp_path / "all").glob("blocks.0.0.conv_pw_c*.png"))) == 16
    assert main(["render", "efficientnet_lite0", "blocks.0.0.bn1.act", "--channels", "1", "--pre-activation",
                 "--steps", "1", "--size", "32", "--out", str(tmp_path / "pre")]) == 0
    meta = json.loads((tmp_path / "pre" / "render.json").read_text())
    assert meta["spec"]["objectives"] == [{"type": "channel", "layer": "blocks.0.0.bn1.act", "channel": 1,
                                           "pre_activation": True}]
    assert main(["render", "efficientnet_lite0", "layer:blocks.0", "--steps", "1", "--size", "32", "--diversity",
                 "2", "--out", str(tmp_path / "dream")]) == 0
    assert sorted(p.name for p in (tmp_path / "dream").glob("*.png")) == [
        "grid.png", "layer_blocks.0_d0.png", "layer_blocks.0_d1.png"]


@pytest.mark.parametrize("args, message", [
    (["blocks.4.O", "--channels", "3"], "unknown layer 'blocks.4.O'; did you mean:"),
    (["blocks.1.0", "--channels", "99", "--size", "32"], "channels [99] are outside 0-23 (24 channels)"),
    (["channel:blocks.1.0:99", "--size", "32"], "channel 99 is out of range for layer 'blocks.1.0', which has 24 "
                                                "channels (valid: 0..23)"),
    (["blocks.1.0", "--channels", "1", "--recipe", "lucent"], "unknown recipe 'lucent'; did you mean: lucid?"),
    (["blocks.1.0", "--channels", "1", "--size", "8"], "too small"),
    (["blocks.1.0", "--channels", "1", "--pre-activation"], "pre_activation=True needs activation modules"),
    (["chanel:blocks.1.0:1"], "unknown objective 'chanel'; did you mean: channel"),
    (["channel:blocks.1.0:1", "--channels", "1"], "--channels, --position and --pre-activation go with a LAYER"),
])
def test_render_errors_are_one_line(tmp_path, capsys, args, message):
    rc = main(["render", "efficientnet_lite0", *args, "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and "\n" not in err and "Traceback" not in err


def test_objectives_lists_the_registry(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    for row in describe_objectives():
        assert row["name"] in out and row["usage"] in out
    assert len(describe_objectives()) == len(OBJECTIVES)


def test_a_decorated_objective_is_listed_and_rendered_by_name(tmp_path, capsys):
    class Corner(LayerObjective):
        """The top-left neuron of a channel."""

        kind = "corner_neuron"

        def __init__(self, layer: str, channel: int, *, pre_activation: bool = False) -> None:
            super().__init__(layer, pre_activation=pre_activation)
            self.channel = int(channel)

        def value(self, acts) -> torch.Tensor:
            return self.act(acts)[:, self.channel, 0, 0]

        def args(self) -> dict:
            return {"layer": self.layer, "channel": self.channel, "pre_activation": self.pre_activation}

    with OBJECTIVES.scoped():
        register_objective(Corner)
        assert main(["objectives"]) == 0
        out = capsys.readouterr().out
        assert "corner_neuron:LAYER:CHANNEL[:pre_activation=VALUE]" in out
        assert "The top-left neuron of a channel." in out
        assert main(["render", "efficientnet_lite0", "corner_neuron:blocks.1.0:2", "--steps", "2", "--size", "32",
                     "--out", str(tmp_path), "--no-progress"]) == 0
        meta = json.loads((tmp_path / "render.json").read_text())
        assert meta["spec"]["objectives"] == [{"type": "corner_neuron", "layer": "blocks.1.0", "channel": 2,
                                               "pre_activation": False}]
        assert (tmp_path / "corner_neuron_blocks.1.0_2.png").exists()
    assert "corner_neuron" not in OBJECTIVES


def test_demo_section(tmp_path, capsys):
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "atlas.sqlite").write_text("an earlier demo's atlas")
    (tmp_path / "stale.png").write_text("an earlier demo's picture")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "command": "demo", "files": ["stale.png"]}))
    assert main(["demo", "--quick", "--only", "30", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "textures -> patterns -> parts" in out
    numbers = json.loads((tmp_path / "featurevis_layers.json").read_text())
    assert list(numbers["layers"]) == ["blocks.1.1", "blocks.3.2", "blocks.5.3"]
    assert (tmp_path / "featurevis_layers.png").stat().st_size > 10_000
    # the tour's files are listed; the earlier tour's listed files are gone, its resumable atlas is kept
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["command"] == "demo"
    assert manifest["files"] == ["featurevis_layers.json", "featurevis_layers.png"]
    assert not (tmp_path / "stale.png").exists() and (tmp_path / "atlas" / "atlas.sqlite").exists()
