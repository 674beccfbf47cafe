"""Unreadable images (one policy: skip, report on stderr and in the results), a string layer, the global random
state left alone, an interrupted ``examples`` run, and the receptive-field probe's progress total."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

import cnnscope.cli.dataset as cli_dataset
from cnnscope.cli import main
from cnnscope.dataset import DatasetStats, collect_statistics
from cnnscope.dataset.sources import (
    FileSource,
    SkippedImage,
    load_or_skip,
    read_images,
    skipped_dicts,
    skipped_lines,
)
from cnnscope.errors import ImageError
from cnnscope.outputs import MANIFEST

from .helpers import RandomImages, brute_values, tiny

LAYER = "act2"


@pytest.fixture()
def photos(tmp_path):
    """Three readable PNGs and two unreadable files (garbage bytes, a truncated PNG) in one folder."""
    data = RandomImages(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(data.images):
        Image.fromarray(img).save(folder / f"p{i}.png")
    (folder / "bad.png").write_bytes(b"not a picture")
    (folder / "cut.png").write_bytes((folder / "p0.png").read_bytes()[:60])
    return folder, data


def rng_state():
    return torch.get_rng_state().clone(), np.random.get_state(), random.getstate()


def assert_same_rng(before, after):
    assert torch.equal(before[0], after[0]), "the global torch RNG was advanced"
    b, a = before[1], after[1]
    assert b[0] == a[0] and np.array_equal(b[1], a[1]) and b[2:] == a[2:], "the global numpy RNG was advanced"
    assert before[2] == after[2], "the global random module's state changed"


# -- the shared skipping policy ---------------------------------------------------------------------------------


def test_load_or_skip_names_the_file_and_the_reason(photos):
    folder, data = photos
    src = FileSource(sorted(folder.iterdir()))
    got = {src.name(i).rsplit("/", 1)[1]: load_or_skip(src, i) for i in range(len(src))}
    np.testing.assert_array_equal(got["p1.png"], data.images[1])
    for name in ("bad.png", "cut.png"):
        s = got[name]
        assert isinstance(s, SkippedImage) and s.path == str(folder / name) and s.reason and "\n" not in s.reason
        assert s.to_dict() == {"path": str(folder / name), "reason": s.reason}
    fitted = load_or_skip(src, 2, tiny())  # fitted to the model's input size
    assert fitted.shape == (20, 28, 3)


def test_load_or_skip_lets_interrupts_through():
    class Interrupted(FileSource):
        def load(self, index):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_or_skip(Interrupted(["x.png"]), 0)


def test_read_images_skips_and_lists_unreadable_files(photos):
    folder, data = photos
    got = read_images(folder)
    assert [n.rsplit("/", 1)[1] for n in got.names] == ["p0.png", "p1.png", "p2.png"] and len(got) == 3
    for arr, ref in zip(got.images, data.images):
        np.testing.assert_array_equal(arr, ref)
    assert sorted(s.path for s in got.skipped) == [str(folder / "bad.png"), str(folder / "cut.png")]
    with pytest.raises(ImageError, match=r"no readable image in .*bad.png; first problem: .*bad.png: "):
        read_images(folder / "bad.png")
    assert read_images(folder / "bad.png", allow_empty=True).skipped[0].path == str(folder / "bad.png")
    with pytest.raises(ImageError, match="no such file or folder"):
        read_images(folder / "missing.png", allow_empty=True)  # a typo is an error, not a skipped image


def test_skipped_lines_and_dicts():
    items = [SkippedImage(f"img{i}.png", "truncated") for i in range(7)]
    lines = skipped_lines(items)
    assert lines[:5] == [f"skipped img{i}.png: truncated" for i in range(5)]
    assert lines[5:] == ["... and 2 more unreadable images"]
    assert skipped_lines(items[:2], total=150)[-1] == "... and 148 more unreadable images"
    assert skipped_lines([]) == []
    assert skipped_dicts([("a.png", "why")]) == [{"path": "a.png", "reason": "why"}]
    assert skipped_lines(skipped_dicts(items[:1])) == ["skipped img0.png: truncated"]  # dicts read back from JSON


def test_statistics_skip_unreadable_files_and_save_them(photos, tmp_path):
    folder, data = photos
    model = tiny()
    stats = collect_statistics(model, folder, LAYER, k=2, batch_size=2)
    assert stats.images == 3 and stats.n_skipped == 2
    assert sorted(p for p, _ in stats.skipped) == [str(folder / "bad.png"), str(folder / "cut.png")]
    assert all(isinstance(s, SkippedImage) for s in stats.skipped)
    stats.save(tmp_path / "s.npz")
    assert DatasetStats.load(tmp_path / "s.npz").skipped == stats.skipped


def test_nmf_over_a_folder_lists_its_skipped_files(photos):
    from cnnscope.dataset import factorize_dataset

    folder, _ = photos
    groups = factorize_dataset(tiny(), folder, LAYER, k=2, batch_size=2)
    assert groups.images == 3 and groups.positions == 3 * 10 * 14
    expected = [str(folder / "bad.png"), str(folder / "cut.png")]
    assert sorted(s.path for s in groups.skipped) == expected
    assert sorted(d["path"] for d in groups.to_dict()["skipped"]) == expected


# -- a string layer, the global random state -------------------------------------------------------------------


def test_a_string_layer_is_one_layer():
    model, data = tiny(), RandomImages(4)
    one = collect_statistics(model, data, LAYER, k=3, batch_size=3)
    listed = collect_statistics(model, data, [LAYER], k=3, batch_size=3)
    assert list(one.layers) == [LAYER] == list(listed.layers)
    torch.testing.assert_close(one[LAYER].top.values, listed[LAYER].top.values)
    values = brute_values(model, data.images, LAYER, pre=False)
    np.testing.assert_allclose(one[LAYER].maximum.numpy(), values.max(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("workers", [0, 1])
def test_statistics_leave_the_global_random_state_alone(workers):
    model, data = tiny(), RandomImages(5)
    before = rng_state()
    collect_statistics(model, data, [LAYER], k=2, batch_size=2, num_workers=workers)
    assert_same_rng(before, rng_state())


# -- the examples command -------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_cli(monkeypatch):
    model = tiny()
    monkeypatch.setattr(cli_dataset, "open_model", lambda name, weights, device: model)
    return model


def test_examples_reports_skipped_files_on_stderr_and_in_the_json(tiny_cli, photos, tmp_path, capsys):
    folder, _ = photos
    out = tmp_path / "ex"
    before = rng_state()
    rc = main(["examples", "tiny", LAYER, "--images", str(folder), "-k", "2", "--channels", "0,3", "--out", str(out)])
    assert_same_rng(before, rng_state())
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("skipped ")]
    assert sorted(ln.split(": ")[0] for ln in lines) == [f"skipped {folder / n}" for n in ("bad.png", "cut.png")]
    data = json.loads((out / "examples.json").read_text())
    assert data["images"] == 3 and data["n_skipped"] == 2
    assert sorted(s["path"] for s in data["skipped"]) == [str(folder / "bad.png"), str(folder / "cut.png")]
    assert all(set(s) == {"path", "reason"} and s["reason"] for s in data["skipped"])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == ["stats.npz", "act2_c0000.png", "act2_c0003.png", "examples.json"]


def test_an_interrupted_examples_run_leaves_no_partial_file_and_no_manifest(tiny_cli, tmp_path, capsys,
                                                                            monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "ex"
    base = ["examples", "tiny", LAYER, "--images", "samples", "-k", "2", "--out", str(out)]
    assert main(base + ["--channels", "0,1,2"]) == 0
    assert {"act2_c0000.png", "act2_c0002.png", "examples.json", MANIFEST} <= {p.name for p in out.iterdir()}
    capsys.readouterr()

    real, calls = Figure.savefig, []

    def ctrl_c_on_second_sheet(self, fname, **kwargs):
        calls.append(fname)
        if len(calls) == 2:
            with open(fname, "wb") as fh:  # what an interrupted write leaves: a truncated 124-byte PNG
                fh.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 116)
            raise KeyboardInterrupt
        return real(self, fname, **kwargs)

    monkeypatch.setattr(Figure, "savefig", ctrl_c_on_second_sheet)
    rc = main(base + ["--channels", "3,4,5"])
    assert rc == 130 and capsys.readouterr().err.strip() in ("aborted", "interrupted")
    left = sorted(p.name for p in out.iterdir())
    # no manifest (an unfinished run), the first new sheet is complete, nothing half-written remains, and the
    # earlier finished run's files are still there (they go only when a run of the command succeeds)
    assert left == [".manifest.partial.json", "act2_c0000.png", "act2_c0001.png", "act2_c0002.png",
                    "act2_c0003.png", "examples.json", "stats.npz"]
    assert Image.open(out / "act2_c0003.png").size[0] > 100
    assert DatasetStats.load(out / "stats.npz").images == 8
    monkeypatch.setattr(Figure, "savefig", real)
    assert main(base + ["--channels", "3"]) == 0  # a run that succeeds removes what earlier runs left
    assert sorted(p.name for p in out.iterdir()) == ["act2_c0003.png", "examples.json", MANIFEST, "stats.npz"]


def test_a_stats_file_in_the_out_folder_survives_a_new_run_there(tiny_cli, tmp_path, capsys):
    out = tmp_path / "ex"
    assert main(["examples", "tiny", LAYER, "--images", "samples", "-k", "2", "--channels", "0", "--out",
                 str(out)]) == 0
    first = DatasetStats.load(out / "stats.npz")
    # the previous run here listed stats.npz: reading it as --stats must not lose it when the folder is reused
    assert main(["spectrum", "tiny", LAYER, "--stats", str(out / "stats.npz"), "-c", "1", "--out", str(out)]) == 0
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert files == ["stats.npz", "spectrum_act2_c0001.png", "spectrum_act2_c0001.json"]
    # another command's files stay (they go when a later run of that command succeeds)
    assert (out / "act2_c0000.png").exists() and (out / "examples.json").exists()
    assert main(["examples", "tiny", LAYER, "--stats", str(out / "stats.npz"), "--channels", "2", "--out",
                 str(out)]) == 0
    again = DatasetStats.load(out / "stats.npz")
    assert json.loads((out / MANIFEST).read_text())["files"] == ["stats.npz", "examples.json"]
    assert again.images == first.images == 8 and again.examples(LAYER, 2) == first.examples(LAYER, 2)
    capsys.readouterr()


# -- progress --------------------------------------------------------------------------------------------------


def test_receptive_field_bar_has_a_total(capsys):
    from cnnscope.capture.receptive_field import receptive_fields

    model = tiny()
    receptive_fields(model, [LAYER], (20, 28), method="exact", cache=False, progress=True)
    err = capsys.readouterr().err
    assert "receptive fields" in err and "/48 " in err  # H + W probe images
    receptive_fields(model, [LAYER], (20, 28), method="exact", cache=False)
    assert capsys.readouterr().err == ""  # library code shows bars only with progress=True
