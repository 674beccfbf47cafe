"""``cnnscope explain`` over a folder: a panel per readable image, an index (index.html and index.json) naming each
panel with its top class, unreadable images skipped and reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnscope.cli import main
from cnnscope.images import save_image
from cnnscope.models import as_model
from tests.models import GapLinearNet

pytestmark = pytest.mark.usefixtures("single_thread")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def folder(tmp_path):
    """A pickled 3-class net (16 px) and a folder of three images, one of them unreadable."""
    net = GapLinearNet()
    net.input_size = (16, 16)
    torch.save(net, tmp_path / "net.pt")
    rng = np.random.default_rng(0)
    pics = tmp_path / "pics"
    for name in ("a.png", "b.png"):
        save_image(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), pics / name)
    (pics / "broken.png").write_bytes(b"not a png at all")
    return tmp_path


def test_explain_a_folder_writes_a_panel_per_image_and_an_index(capsys, folder):
    out_dir = folder / "out"
    code, out, err = run(capsys, "explain", folder / "net.pt", folder / "pics", folder / "pics" / "a.png",
                         "--trust-pickle", "--methods", "saliency,gradcam", "--out", out_dir, "--no-progress")
    assert code == 0, err
    assert f"skipped {folder / 'pics' / 'broken.png'}: " in err and err.count("skipped ") == 1
    index = json.loads((out_dir / "index.json").read_text())
    assert [r["image"] for r in index["images"]] == ["a", "b", "a_2"]  # the file given again gets its own stem
    assert [s["path"] for s in index["skipped"]] == [str(folder / "pics" / "broken.png")]
    m = as_model(torch.load(folder / "net.pt", weights_only=False))
    html = (out_dir / "index.html").read_text()
    for row, name in zip(index["images"], ["a.png", "b.png", "a.png"]):
        idx, label, prob = m.predict(folder / "pics" / name, k=1)[0][0]
        assert (row["index"], row["label"]) == (idx, label) and row["probability"] == pytest.approx(prob, rel=1e-4)
        assert (out_dir / row["panel"]).stat().st_size > 5000 and row["panel"] in html
        assert json.loads((out_dir / row["json"]).read_text())["top"][0]["index"] == idx
        assert f"<td>{row['image']}</td><td>{label} ({idx})</td>" in html
    assert "broken.png" in html and "skipped as unreadable (1)" in html
    assert "3 image(s), 2 method(s), 1 skipped as unreadable" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert {"index.html", "index.json", "a_panel.png", "b_gradcam.npy"} <= set(manifest["files"])


def test_an_unreadable_file_given_by_name_is_skipped_a_missing_one_is_an_error(capsys, folder):
    code, out, err = run(capsys, "explain", folder / "net.pt", folder / "pics" / "broken.png",
                         folder / "pics" / "b.png", "--trust-pickle", "--methods", "saliency", "--out", folder / "o",
                         "--no-progress")
    assert code == 0 and "skipped" in err and "1 image(s)" in out
    code, _, err = run(capsys, "explain", folder / "net.pt", folder / "pics" / "missing.png", "--trust-pickle",
                       "--methods", "saliency", "--out", folder / "o2", "--no-progress")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "no such file" in errors[0]
    code, _, err = run(capsys, "explain", folder / "net.pt", folder / "pics" / "broken.png", "--trust-pickle",
                       "--methods", "saliency", "--out", folder / "o3", "--no-progress")
    assert code == 1 and "error: no readable image in" in err and "broken.png" in err
