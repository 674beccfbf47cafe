"""The ten Zeiler & Fergus commands: PNG figures plus the numbers behind them; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnscope.cli import main
from cnnscope.images import save_image
from cnnscope.zf import load_checkpoint


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, one_thread):
    """`cnnscope train` output: a tiny digits run with checkpoints at epochs 0 and 1."""
    root = tmp_path_factory.mktemp("cli_run")
    code = main(["train", "digits", "--epochs", "1", "--checkpoints", "0,1", "--widths", "4,8,16", "--size", "16",
                 "--out", str(root / "run")])
    assert code == 0
    save_image(np.full((16, 16, 3), 200, np.uint8), root / "digit.png")
    return root


def test_train_prints_accuracy_and_writes_checkpoints(cli_run):
    hist = json.loads((cli_run / "run" / "history.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [1] and hist["seed"] == 0
    assert sorted(p.name for p in (cli_run / "run").glob("*.pt")) == ["epoch_000.pt", "epoch_001.pt"]
    assert load_checkpoint(cli_run / "run" / "epoch_001.pt").extra["epoch"] == 1


def test_deconv_top9_evolution_featuremaps_filters_boundary_on_the_trained_net(capsys, cli_run):
    ck, out = cli_run / "run" / "epoch_001.pt", cli_run / "out"
    code, text, _ = run(capsys, "deconv", ck, cli_run / "digit.png", "--layer", "features.3", "--channel", "1",
                        "--out", out / "d")
    assert code == 0 and "(deconvnet)" in text
    info = json.loads((out / "d" / "deconv.json").read_text())
    assert info["method"] == "deconvnet" and np.load(out / "d" / "deconv.npy").shape == (1, 16, 16)
    code, text, _ = run(capsys, "deconv", ck, cli_run / "digit.png", "--layer", "features.4", "--channel", "1",
                        "--position", "all", "--pre-activation", "--method", "rule", "--out", out / "d2")
    info = json.loads((out / "d2" / "deconv.json").read_text())
    assert code == 0 and "every position" in text and info["position"] is None and info["pre_activation"]
    code, text, _ = run(capsys, "top9", ck, "digits:60", "--layer", "features.3", "--channels", "0-1", "-k", "4",
                        "--out", out / "t")
    data = json.loads((out / "t" / "top9.json").read_text())
    assert code == 0 and data["channels"] == [0, 1] and len(data["entries"]["1"]) == 4
    code, _, _ = run(capsys, "evolution", cli_run / "run", "--layer", "features.3", "--channels", "0,2",
                     "--images", "digits:40", "--out", out / "e")
    ev = json.loads((out / "e" / "evolution.json").read_text())
    assert code == 0 and ev["epochs"] == [0, 1] and len(ev["entries"]) == 2
    code, _, _ = run(capsys, "featuremaps", ck, cli_run / "digit.png", "--layer", "features.1", "--out", out / "f")
    assert code == 0 and np.load(out / "f" / "featuremaps.npy").shape == (4, 16, 16)
    code, text, _ = run(capsys, "filters", ck, "--out", out / "w")
    assert code == 0 and "features.0" in text and np.load(out / "w" / "filters.npy").shape == (4, 1, 5, 5)
    code, _, _ = run(capsys, "boundary", ck, "digits:3", "--resolution", "4", "--out", out / "b")
    plane = json.loads((out / "b" / "boundary.json").read_text())
    assert code == 0 and len(plane["classes"]) == 4 and plane["mode"] == "images"
    for sub, name in [("d", "deconv"), ("t", "top9"), ("e", "evolution"), ("f", "featuremaps"), ("w", "filters"),
                      ("w", "kernels"), ("w", "spectrum"), ("b", "boundary")]:
        assert (out / sub / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_studies_on_the_pretrained_model(capsys, tmp_path, one_thread):
    code, text, _ = run(capsys, "occlude", "efficientnet_lite0", "sample:chelsea", "--layer", "blocks.5",
                        "--size", "112", "--stride", "112", "--out", tmp_path / "o")
    s = json.loads((tmp_path / "o" / "occlusion.json").read_text())
    assert code == 0 and np.asarray(s["probability"]).shape == (2, 2) and s["projection"]["method"] == "guided"
    code, text, _ = run(capsys, "invariance", "efficientnet_lite0", "sample:coffee", "--transforms", "scale",
                        "--amounts", "1,1.5", "--out", tmp_path / "i")
    inv = json.loads((tmp_path / "i" / "invariance.json").read_text())
    assert code == 0 and inv[0]["amounts"] == [1.0, 1.5] and "scale: mean distance" in text
    code, text, _ = run(capsys, "correspond", "efficientnet_lite0", "sample:chelsea", "sample:chelsea",
                        "--box", "60,120,140,230", "--box", "60,120,140,230", "--random", "1", "--out", tmp_path / "c")
    cor = json.loads((tmp_path / "c" / "correspondence.json").read_text())
    assert code == 0 and cor["part"]["bn2.act"]["mean"] == 0.0 and cor["random"]["bn2.act"]["mean"] > 0
    for sub, name in [("o", "occlusion"), ("i", "invariance"), ("c", "correspondence")]:
        assert (tmp_path / sub / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["deconv", "efficientnet_lite0", "sample:chelsea", "--layer", "blocks.2", "--channel", "0", "--method",
      "deconvnet"], "cannot invert 'blocks.1.1' (InvertedResidual)"),
    (["occlude", "efficientnet_lite0", "sample:chelsea", "--layer", "blocks.55"], "did you mean"),
    (["correspond", "efficientnet_lite0", "sample:chelsea", "sample:coffee", "--box", "0,0,10,10"],
     "one box per image"),
    (["correspond", "efficientnet_lite0", "sample:chelsea", "sample:coffee", "--box", "0,0,10,10", "--box",
      "0,0,10,999"], "'coffee': box (top=0, left=0, bottom=10, right=999) is empty or lies outside the 400x600 image"),
    (["invariance", "efficientnet_lite0", "sample:chelsea", "--transforms", "shear"], "unknown transform"),
    (["evolution", "/nonexistent/run"], "does not exist"),
])
def test_errors_are_one_line(capsys, args, message):
    code, _, err = run(capsys, *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_section_50_quick(capsys, tmp_path, one_thread):
    code, out, _ = run(capsys, "demo", "--quick", "--only", "50", "--out", tmp_path, "--device", "cpu")
    assert code == 0 and "occlusion: p(" in out and "digits CNN: test accuracy" in out
    for name in ("occlusion", "invariance", "filters", "spectrum", "top9", "evolution"):
        assert (tmp_path / "zf" / f"{name}.png").stat().st_size > 1000
