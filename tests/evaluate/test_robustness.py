"""``evaluate`` on folders with unreadable files (skipped, reported on stderr and in the results), its output
folder (one manifest, nothing stale) and the global random state."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

import cnnscope.cli.evaluate as cli_evaluate
from cnnscope.cli import main
from cnnscope.dataset.sources import read_images
from cnnscope.evaluate import evaluate
from cnnscope.outputs import MANIFEST
from tests.dataset.helpers import RandomImages, tiny


@pytest.fixture()
def photos(tmp_path):
    data = RandomImages(3, size=(24, 32))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(data.images):
        Image.fromarray(img).save(folder / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return folder, data


@pytest.fixture()
def model(monkeypatch):
    m = tiny()
    monkeypatch.setattr(cli_evaluate, "open_model", lambda name, weights, device: m)
    return m


def test_evaluate_skips_an_unreadable_file_and_reports_it(model, photos, tmp_path, capsys):
    folder, _ = photos
    out = tmp_path / "ev"
    args = ["evaluate", "tiny", str(folder), "--methods", "gradcam,random", "--step", "100", "--out", str(out)]
    rc = main(args + ["--metrics", "deletion,insertion"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert [ln.split(": ")[0] for ln in captured.err.splitlines() if ln.startswith("skipped")] == [
        f"skipped {folder / 'broken.jpg'}"]
    meta = json.loads((out / "evaluation.json").read_text())
    assert meta["images"] == ["p0.png", "p1.png", "p2.png"]
    assert [s["path"] for s in meta["skipped"]] == [str(folder / "broken.jpg")] and meta["skipped"][0]["reason"]
    assert "skipped as unreadable: 1" in (out / "evaluation.md").read_text()
    per_image = list(csv.DictReader((out / "per_image.csv").open()))
    assert {r["image"] for r in per_image} == {"p0.png", "p1.png", "p2.png"}
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert files == ["evaluation.md", "evaluation.csv", "per_image.csv", "evaluation.json", "curves_deletion.png",
                     "curves_insertion.png"]
    # a second run into the same folder: the first run's insertion curves do not survive beside the new tables
    assert main(args + ["--metrics", "deletion"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["evaluation.md", "evaluation.csv", "per_image.csv",
                                                            "evaluation.json", "curves_deletion.png", MANIFEST])


def test_evaluate_with_nothing_readable_is_one_line(model, photos, tmp_path, capsys):
    folder, _ = photos
    out = tmp_path / "ev"
    rc = main(["evaluate", "tiny", str(folder / "broken.jpg"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("error: no readable image in ") and "broken.jpg" in err[-1]
    assert not (out / MANIFEST).exists() and list(out.iterdir()) == []


def test_evaluate_of_an_image_set_equals_evaluate_of_its_arrays(photos):
    folder, data = photos
    m = tiny()
    images = read_images(folder)
    ev = evaluate(m, images, ["gradcam"], metrics=["deletion"], step=100)
    ref = evaluate(m, list(data.images), ["gradcam"], metrics=["deletion"], step=100)
    assert ev.images == [str(folder / f"p{i}.png") for i in range(3)]
    assert ev.skipped == [{"path": str(folder / "broken.jpg"), "reason": images.skipped[0].reason}]
    assert ref.skipped == [] and ev.table.values("gradcam", "deletion_auc") == ref.table.values("gradcam",
                                                                                                   "deletion_auc")
    torch.testing.assert_close(ev.maps["gradcam"], ref.maps["gradcam"])


def test_evaluate_leaves_the_global_random_state_alone():
    m = tiny()
    x = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    before = torch.get_rng_state().clone(), np.random.get_state(), random.getstate()
    evaluate(m, x, ["gradcam", "random", "random_pixel"], metrics=["deletion", "road", "sanity"], step=100,
             road_percentages=[50], sanity_units=2)
    after = torch.get_rng_state(), np.random.get_state(), random.getstate()
    assert torch.equal(before[0], after[0]) and before[2] == after[2]
    assert np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
