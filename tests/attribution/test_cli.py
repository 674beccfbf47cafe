"""``cnnscope explain`` and demo section 40 on the embedded model; errors are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnscope.attribution import METHODS, Method, attribute, list_methods, register_method
from cnnscope.cli import cli, main
from tests.models import GapLinearNet

pytestmark = pytest.mark.usefixtures("single_thread")


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_writes_panel_maps_and_summary(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "efficientnet_lite0", "sample:chelsea", "sample:coffee", "--methods",
                         "gradcam,saliency", "--out", str(tmp_path), "--no-progress", "-o", "gradcam.relu=false")
    assert code == 0, err
    assert "coffee: espresso" in out
    for stem in ("chelsea", "coffee"):
        assert (tmp_path / f"{stem}_panel.png").stat().st_size > 10_000
        assert np.load(tmp_path / f"{stem}_gradcam.npy").shape == (1, 7, 7)
        assert np.load(tmp_path / f"{stem}_saliency.npy").shape == (3, 224, 224)
    summary = json.loads((tmp_path / "coffee.json").read_text())
    assert summary["top"][0]["label"] == "espresso" and summary["target_index"] == 967
    assert summary["methods"]["gradcam"]["layer"] == "bn2"
    assert summary["methods"]["gradcam"]["spec"]["options"]["relu"] is False
    assert summary["maps"]["saliency"] == "coffee_saliency.npy"


def test_explain_label_and_unit_targets(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "efficientnet_lite0", "sample:chelsea", "--methods", "gradcam",
                         "--target", "tabby", "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "explained tabby (281)" in out
    code, out, err = run(capsys, "explain", "efficientnet_lite0", "sample:chelsea", "--methods", "saliency",
                         "--target", "unit:blocks.5.0:7", "--position", "3,4", "--batch-size", "1", "--out",
                         str(tmp_path / "u"), "--no-progress")
    assert code == 0, err
    assert "unit blocks.5.0 channel 7" in out
    spec = json.loads((tmp_path / "u" / "chelsea.json").read_text())["methods"]["saliency"]["spec"]
    assert spec["target"] == {"kind": "unit", "layer": "blocks.5.0", "channel": 7, "position": [3, 4]}
    assert spec["options"]["batch_size"] == 1


@pytest.mark.parametrize("args,message", [
    (["--methods", "gradcan"], "did you mean: gradcam"),
    (["--target", "5000"], "out of range: the model has 1000 outputs"),
    (["--target", "tabbby"], "did you mean: tabby"),
    (["--methods", "gradcam", "--layer", "classifier"], "without spatial extent"),
    (["-o", "rise.n_masks=4"], "not in --methods"),
    (["-o", "occlusion.window=4"], "stride 16x16 larger than the window 4x4"),
    (["--target", "-1"], "negative"),
    (["--position", "max"], "--position needs a unit target"),
])
def test_explain_errors_are_one_line(capsys, tmp_path, args, message):
    code, out, err = run(capsys, "explain", "efficientnet_lite0", "sample:chelsea", "--out", str(tmp_path),
                         "--no-progress", *args)
    assert code == 1
    assert err.count("\n") == 1 and message in err


def test_explain_methods_lists_the_registry(capsys):
    code, out, _ = run(capsys, "explain-methods", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list_methods()
    assert next(r for r in rows if r["name"] == "occlusion")["options"]["window"] == 32


def test_a_method_registered_by_one_class_is_listed():
    with METHODS.scoped():
        @register_method
        class Ones(Method):
            """Every pixel counts the same."""

            name = "ones_for_test"
            title = "Ones"
            reference = "a test"

            def compute(self, x, scorer, layer):
                return torch.ones_like(x)

        assert "ones_for_test" in list_methods()
        a = attribute(GapLinearNet(), torch.randn(1, 3, 8, 8), "ones_for_test", target=2)
        assert torch.equal(a.values, torch.ones(1, 3, 8, 8)) and a.target == [2]
        result = CliRunner().invoke(cli, ["explain-methods"])
        assert result.exit_code == 0, result.output
        assert any(line.split()[:3] == ["ones_for_test", "pixel", "a"] for line in result.output.splitlines())
        rows = json.loads(CliRunner().invoke(cli, ["explain-methods", "--json"]).output)
        assert rows[-1]["name"] == "ones_for_test" and rows[-1]["options"]["batch_size"] is None
    assert "ones_for_test" not in list_methods()


def test_demo_section_40(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--quick", "--only", "40", "--out", str(tmp_path), "--device", "cpu")
    assert code == 0, err
    assert "Grad-CAM (bn2) peaks at" in out
    data = json.loads((tmp_path / "attribution.json").read_text())
    assert data["images"]["coffee"]["top1"] == "espresso"
    assert (tmp_path / "attribution_panels.png").stat().st_size > 10_000
