"""The ``examples``, ``spectrum``, ``circuit`` and ``nmf`` commands and the demo section on the pretrained model."""

from __future__ import annotations

import json

import pytest

from cnnscope.cli import main
from cnnscope.dataset import DatasetStats

LAYER = "blocks.2.1.bn1.act"
IMAGES = "sample:chelsea,coffee,astronaut"


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    rc = main(["examples", "efficientnet_lite0", LAYER, "--images", IMAGES, "-k", "3", "--channels", "0,5",
               "--batch-size", "3", "--pre-activation", "--out", str(out)])
    assert rc == 0
    return out


def test_examples_writes_crops_and_numbers(examples_dir):
    data = json.loads((examples_dir / "examples.json").read_text())
    assert data["images"] == 3 and data["layer"] == LAYER and set(data["channels"]) == {"0", "5"}
    assert data["pre_activation"] is True
    rf = data["receptive_field"]
    for ch in ("0", "5"):
        top = data["channels"][ch]["top"]
        assert len(top) == 3 and top[0]["value"] >= top[-1]["value"]
        for e in top:
            t, left, b, r = e["box"]
            assert 0 <= t < b <= 224 and 0 <= left < r <= 224 and b - t <= rf[0]
        assert (examples_dir / f"{LAYER}_c{int(ch):04d}.png").stat().st_size > 1000
    stats = DatasetStats.load(examples_dir / "stats.npz")
    assert stats.examples(LAYER, 5)[0].to_dict() == data["channels"]["5"]["top"][0]


def test_spectrum_from_a_saved_statistics_file(examples_dir, tmp_path):
    rc = main(["spectrum", "efficientnet_lite0", LAYER, "--stats", str(examples_dir / "stats.npz"), "-c", "5",
               "--pre-activation", "--out", str(tmp_path)])
    assert rc == 0
    spec = json.loads((tmp_path / f"spectrum_{LAYER}_c0005.json").read_text())
    stats = DatasetStats.load(examples_dir / "stats.npz")
    assert spec["fraction_positive"] == pytest.approx(float(stats[LAYER].fraction_positive[5]))
    covered = sum(b["fraction"] for b in spec["bands"]) + spec["zero_fraction"]
    assert covered == pytest.approx(1.0, abs=0.02)
    assert sum(b["contribution"] for b in spec["bands"]) == pytest.approx(1.0, abs=1e-6)
    assert spec["pre_activation"] and (tmp_path / f"spectrum_{LAYER}_c0005.png").exists()


def test_a_statistics_file_is_read_as_it_was_collected(examples_dir, tmp_path, capsys):
    rc = main(["spectrum", "efficientnet_lite0", LAYER, "--stats", str(examples_dir / "stats.npz"), "-c", "5",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "--pre-activation" in err[0]


def test_circuit_attribution_sums_to_the_value(tmp_path):
    rc = main(["circuit", "efficientnet_lite0", LAYER, "-c", "17", "--image", "sample:chelsea",
               "--expand-from", "blocks.2.0.bn2", "-n", "8", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / f"{LAYER}_c0017.json").read_text())
    attr = data["attribution"]
    assert attr["sum"] + attr["bias"] == pytest.approx(attr["value"], rel=1e-3, abs=1e-3)
    assert data["connection"]["conv"] == "blocks.2.1.conv_pw" and len(data["connection"]["strongest"]) == 8
    expanded = data["expanded"]
    assert expanded["from_layer"] == "blocks.2.0.bn2" and expanded["box"][2] > expanded["box"][0]
    for suffix in ("weights", "attribution", "expanded_from_blocks.2.0.bn2"):
        assert (tmp_path / f"{LAYER}_c0017_{suffix}.png").exists()


def test_nmf_of_an_image(tmp_path):
    rc = main(["nmf", "efficientnet_lite0", LAYER, "sample:coffee", "-k", "3", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / f"nmf_{LAYER}_k3.json").read_text())
    groups = data["images"]["coffee"]["groups"]
    assert len(groups) == 3 and sum(g["share"] for g in groups) == pytest.approx(1.0, abs=1e-5)
    assert all(c["loading"] >= 0 for g in groups for c in g["top_channels"])


def test_errors_are_one_line(capsys, tmp_path):
    assert main(["examples", "efficientnet_lite0", "blocks.2.1.bn1.actt", "--images", "sample:coffee",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean" in err[0] and "blocks.2.1.bn1.act" in err[0]
    assert main(["nmf", "efficientnet_lite0", LAYER, "--out", str(tmp_path)]) == 1
    assert main(["circuit", "efficientnet_lite0", "blocks.4.0.bn1.act", "-c", "99999", "--out", str(tmp_path)]) == 1
    assert "out of range" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_section(tmp_path):
    rc = main(["demo", "--quick", "--only", "60", "--out", str(tmp_path)])
    assert rc == 0
    for name in ("dataset_examples", "dataset_spectrum", "circuit_weights", "circuit_attribution", "nmf_groups"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
