"""``cnnscope evaluate``: files written on the embedded model, one-line errors."""

from __future__ import annotations

import csv
import json

import pytest

from cnnscope.cli import main


def test_evaluate_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["evaluate", "efficientnet_lite0", "sample:coffee", "--methods", "gradcam,random", "--metrics",
               "deletion,insertion,road", "--step", "25088", "--road-percentages", "50", "--out", str(out),
               "--device", "cpu"])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert {"evaluation.md", "evaluation.csv", "per_image.csv", "evaluation.json", "curves_deletion.png",
            "curves_insertion.png", "road.png"} <= names
    rows = {r["method"]: r for r in csv.DictReader((out / "evaluation.csv").open())}
    assert set(rows) == {"gradcam", "random"}
    for r in rows.values():
        assert 0.0 <= float(r["deletion_auc_mean"]) <= 1.0 and 0.0 <= float(r["insertion_auc_mean"]) <= 1.0
    meta = json.loads((out / "evaluation.json").read_text())
    assert meta["targets"][0]["label"] == "espresso" and meta["settings"]["step"] == 25088
    md = (out / "evaluation.md").read_text()
    assert "CUSTOM settings (not the RISE protocol)" in md and "| gradcam |" in md
    assert "| gradcam |" in capsys.readouterr().out


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    rc = main(["evaluate", "efficientnet_lite0", "sample:coffee", "--metrics", "deletoin", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "did you mean: deletion" in err and "Traceback" not in err
    rc = main(["evaluate", "efficientnet_lite0", "sample:coffee", "--methods", "gradcm", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "did you mean: gradcam" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_section_70(tmp_path, capsys):
    rc = main(["demo", "--quick", "--only", "70", "--out", str(tmp_path), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "after full randomization, Spearman" in out and "| gradcam |" in out
    folder = tmp_path / "evaluate"
    assert (folder / "evaluation.md").exists() and (folder / "sanity_spearman_abs.png").exists()
