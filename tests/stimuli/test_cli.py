"""``cnnscope stimuli`` and ``cnnscope tuning``: files written, numbers consistent with the API, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnscope.cli import main
from cnnscope.stimuli import STIMULI, Line, centered_crop, make_stimulus, register_stimulus, render, rf_centers


def test_stimuli_command_writes_sheet_and_numbers(tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["stimuli", "--kind", "angle", "--orientations", "4", "--levels", "10,20", "--size", "40",
               "--set", "corner_radius=3", "--set", "opening=60", "--width", "2", "--color", "1,0,0",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "stimuli.json").read_text())
    assert meta["kind"] == "angle" and meta["param"] == "arm" and meta["orientations"] == [0, 90, 180, 270]
    assert [s["arm"] for s in meta["stimuli"]] == [10.0] * 4 + [20.0] * 4
    assert all(s["corner_radius"] == 3.0 and s["opening"] == 60.0 and s["color"] == [1, 0, 0]
               for s in meta["stimuli"])
    images = np.load(out / "stimuli.npz")["images"]
    assert images.shape == (8, 40, 40, 3) and images.dtype == np.uint8
    # the saved pictures are exactly the stimuli their JSON describes
    params = {k: v for k, v in meta["stimuli"][5].items() if k != "kind"}
    np.testing.assert_array_equal(images[5], render(make_stimulus("angle", **params), 40))
    assert (out / "stimuli.png").stat().st_size > 1000


@pytest.mark.parametrize("args,match", [
    (["--kind", "curv"], "did you mean: curve"),
    (["--kind", "spiral"], "stimulus kind"),
    (["--set", "radious=4"], "radius"),
    (["--set", "span"], "name=value"),
    (["--levels", "4,x"], "numbers"),
    (["--color", "1,0"], "color"),
])
def test_stimuli_command_errors_are_one_line(tmp_path, capsys, args, match):
    rc = main(["stimuli", "--size", "16", "--out", str(tmp_path / "e"), *args])
    err = capsys.readouterr().err
    assert rc == 1 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_registered_kind_is_listed_and_drawn_by_the_cli(tmp_path, capsys):
    """One decorated class makes a kind the ``--kind`` option accepts and lists, with no other edit."""
    with STIMULI.scoped():
        @register_stimulus
        class Dash(Line):
            kind = "dash"

        assert main(["stimuli", "--help"]) == 0
        assert "dash" in capsys.readouterr().out
        rc = main(["stimuli", "--kind", "dash", "--orientations", "2", "--levels", "10", "--size", "24",
                   "--out", str(tmp_path / "d")])
        assert rc == 0, capsys.readouterr().err
        meta = json.loads((tmp_path / "d" / "stimuli.json").read_text())
        assert meta["kind"] == "dash" and [s["kind"] for s in meta["stimuli"]] == ["dash", "dash"]
        np.testing.assert_array_equal(np.load(tmp_path / "d" / "stimuli.npz")["images"][1],
                                      render(Line(orientation=90.0, length=10.0), 24))
    assert main(["stimuli", "--kind", "dash", "--out", str(tmp_path / "e")]) == 1


def test_centered_crop_and_receptive_field_centres():
    img = np.arange(10 * 12 * 1).reshape(10, 12, 1)
    np.testing.assert_array_equal(centered_crop(img, (5.0, 6.0), 4)[..., 0], img[3:7, 4:8, 0])
    corner = centered_crop(img, (0.0, 0.0), 4)[..., 0]  # half outside: border pixels repeat
    np.testing.assert_array_equal(corner[2:, 2:], img[:2, :2, 0])
    np.testing.assert_array_equal(corner[0], corner[2])


def test_rf_centres_follow_the_unclipped_boxes():
    from cnnscope.capture.receptive_field import receptive_fields
    from tests.models import InplaceReLUNet

    rf = receptive_fields(InplaceReLUNet(), "features.5", (24, 30), cache=False)["features.5"]
    cy, cx = rf_centers(rf)
    assert rf.output_size == (12, 15) and rf.size == (8, 8)
    np.testing.assert_allclose(cy, 2 * np.arange(12) + 1)  # stride 2: centres 1, 3, 5, ... (pixel edges)
    np.testing.assert_allclose(cx, 2 * np.arange(15) + 1)
    for i in range(12):
        t, left, b, r = rf.box(i, 0)
        assert t <= cy[i] <= b and left <= cx[0] <= r
        if b - t == 8:  # unclipped: the midpoint is the centre
            assert cy[i] == pytest.approx((t + b) / 2)
    assert rf.box(0, 0)[:2] == (0, 0) and (rf.box(0, 0)[2] - 0) / 2 != cy[0]  # clipped: midpoint is not the centre


@pytest.mark.slow
def test_tuning_command_on_the_pretrained_model(tmp_path, capsys):
    out = tmp_path / "t"
    rc = main(["tuning", "efficientnet_lite0", "blocks.3.1.bn1.act", "--images", "sample:chelsea", "--step", "45",
               "--levels", "8,24", "--family", "3", "--min-selectivity", "0.2", "--examples", "2",
               "--joint-step", "90", "--size", "96", "--pre-activation", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads((out / "tuning.json").read_text())
    fam = summary["family"]
    assert summary["pre_activation"] is True and summary["size"] == 96
    assert 1 <= len(fam["channels"]) <= 3 and fam["preferred"] == sorted(fam["preferred"])
    assert min(fam["selectivity"]) >= 0.2
    arrays = np.load(out / "tuning.npz")
    assert arrays["raw"].shape == (480, 2, 8)  # every channel of the layer was measured
    np.testing.assert_array_equal(arrays["family"], fam["channels"])
    # the family's peak (in std above the dataset mean) is the maximum of its heatmap
    rows = [int(np.flatnonzero(arrays["channels"] == c)[0]) for c in fam["channels"]]
    np.testing.assert_allclose(fam["peak"], np.maximum(arrays["values"][rows].max(axis=(1, 2)), 0), rtol=1e-6)
    joint = summary["joint"]
    assert joint["channels"] == sorted(fam["channels"]) and len(joint["angles"]) == 4
    for name in ("heatmaps.png", "radial.png", "family.png", "joint.png"):
        assert (out / name).stat().st_size > 1000
    assert "selectivity" in captured.out


def test_tuning_command_without_dataset_and_with_units(tmp_path, capsys):
    rc = main(["tuning", "efficientnet_lite0", "blocks.1.1.bn1.act", "--images", "none", "--channels", "7,3",
               "--step", "90", "--levels", "6", "--size", "48", "--kind", "line", "--out", str(tmp_path / "u")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "u" / "tuning.json").read_text())
    assert summary["dataset"] is None and summary["joint"] is None and summary["pre_activation"] is False
    assert summary["tuning"]["channels"] == [3, 7] and summary["tuning"]["orientations"] == [0.0, 90.0]
    assert not summary["tuning"]["in_std"] and not summary["tuning"]["pre_activation"]
    rc = main(["tuning", "efficientnet_lite0", "blocks.1.1.bn1.actt", "--images", "none", "--out",
               str(tmp_path / "x")])
    assert rc == 1 and "did you mean" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_section_65(tmp_path, capsys):
    rc = main(["demo", "--quick", "--only", "65", "--out", str(tmp_path), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Curve detectors" in captured.out and "orientation-tuned channels" in captured.out
    summary = json.loads((tmp_path / "stimuli" / "tuning.json").read_text())
    assert summary["layer"] == "blocks.3.1.bn1.act" and len(summary["family"]["channels"]) == 10
    assert summary["pre_activation"] is True
    for name in ("heatmaps.png", "radial.png", "family.png", "joint.png"):
        assert (tmp_path / "stimuli" / name).exists()
