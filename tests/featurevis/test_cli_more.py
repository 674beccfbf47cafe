"""``cnnscope render --init``, ``cnnscope interpolate`` and ``cnnscope semantic-dictionary``: figure + JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnscope import load_model, sample_images
from cnnscope.cli import main
from cnnscope.featurevis import channel, measure
from cnnscope.featurevis.render import init_images


def test_render_init_with_zero_steps_saves_the_picture(tmp_path):
    out = tmp_path / "init"
    assert main(["render", "efficientnet_lite0", "channel:blocks.1.0:2", "--init", "sample:chelsea", "--steps", "0",
                 "--size", "48", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "render.json").read_text())
    assert meta["init"] == "sample:chelsea" and meta["spec"]["steps"] == 0
    saved = np.asarray(Image.open(out / "channel_blocks.1.0_2.png")).astype(int)
    expected = init_images(load_model(), sample_images(["chelsea"])["chelsea"], (48, 48), 1)[0]
    assert np.abs(saved - np.round(expected.permute(1, 2, 0).numpy() * 255)).max() <= 1


def test_render_negative_reports_raw_values(tmp_path):
    out = tmp_path / "neg"
    assert main(["render", "efficientnet_lite0", "blocks.1.0", "--channels", "0", "--negative", "--steps", "2",
                 "--size", "32", "--recipe", "plain", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "render.json").read_text())
    assert meta["spec"]["reported"][0]["type"] == "channel"  # the unit itself, not its negation
    img = np.asarray(Image.open(out / "blocks.1.0_c0000_neg.png"))[None]
    assert meta["activations"][0] == pytest.approx(
        float(measure(load_model(), img, channel("blocks.1.0", 0))[0]), abs=0.05)


def test_interpolate_writes_frames_figure_and_json(tmp_path, capsys):
    out = tmp_path / "interp"
    assert main(["interpolate", "efficientnet_lite0", "channel:blocks.1.0:0", "channel:blocks.1.0:3", "--frames",
                 "3", "--steps", "2", "--size", "32", "--out", str(out), "--no-progress"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["frame_00.png", "frame_01.png", "frame_02.png", "interpolation.json", "interpolation.png",
                     "manifest.json"]
    meta = json.loads((out / "interpolation.json").read_text())
    assert meta["t"] == [0, 0.5, 1] and len(meta["values_a"]) == len(meta["values_b"]) == 3
    assert "3 frames" in capsys.readouterr().out


def test_semantic_dictionary_writes_figure_units_and_json(tmp_path):
    out = tmp_path / "dict"
    assert main(["semantic-dictionary", "efficientnet_lite0", "sample:chelsea", "blocks.2.0", "--grid", "3",
                 "--k", "2", "--steps", "2", "--size", "32", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "dictionary.json").read_text())
    assert meta["grid"] == [3, 3] and len(meta["positions"]) == 9 and meta["k"] == 2
    units = meta["units"]
    assert sorted({u for p in meta["positions"] for u in p["units"]}) == units
    assert sorted(meta["files"]) == [f"unit_{u:04d}.png" for u in units]
    assert (out / "dictionary.png").stat().st_size > 0
    assert all(p["values"][0] >= p["values"][1] for p in meta["positions"])


def test_bad_init_is_one_line(tmp_path, capsys):
    rc = main(["render", "efficientnet_lite0", "channel:blocks.1.0:2", "--init", "sample:nosuch", "--steps", "1",
               "--out", str(tmp_path / "x")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
