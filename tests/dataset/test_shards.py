"""Dataset passes in a work folder: sharded, killed and resumed, corrupt shards, other passes refused; each result
compared with one uninterrupted pass (top-k ids and values, band samples and histogram counts identical)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnscope.dataset import DatasetStats, collect_statistics, open_source
from cnnscope.dataset import shards as shards_module
from cnnscope.errors import CnnscopeError
from cnnscope.models import fingerprint, wrap
from tests.models import ReLU6Net

from .helpers import SIZE, RandomImages, tiny

LAYERS = ["act1", "act2"]
OPTIONS = {"pre_activation": True, "k": 5, "bottom_k": 4, "band_samples": 3, "batch_size": 4,
           "receptive_field": "exact"}
REAL_SHARD = shards_module.compute_shard
N_IMAGES = 30  # + one unreadable image in a class folder and one file outside the classes: 4 shards of 8 positions


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """``classes:FOLDER`` spelling of 30 images in 3 class folders, one unreadable image and one stray file."""
    root = tmp_path_factory.mktemp("classes")
    data = RandomImages(N_IMAGES)
    for i, (image, label) in enumerate(data):
        folder = root / f"class{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"img{i:02d}.png")
    (root / "class1" / "img15b.png").write_bytes(b"not a png")  # unreadable: skipped while loading
    Image.fromarray(data.images[0]).save(root / "stray.png")  # outside the classes: a problem of the source
    return f"classes:{root}"


@pytest.fixture(scope="module")
def model():
    return tiny("relu6")


@pytest.fixture(scope="module")
def reference(model, photos):
    return collect_statistics(model, photos, LAYERS, **OPTIONS)


def assert_same(got: DatasetStats, want: DatasetStats) -> None:
    """Everything equal, the moments (per-batch float32 sums merged in another grouping) to float32 rounding."""
    assert (got.images, got.id_ranges, got.names, got.labels) == (want.images, want.id_ranges, want.names,
                                                                 want.labels)
    assert (list(got.skipped), got.n_skipped, got.source) == (list(want.skipped), want.n_skipped, want.source)
    assert got.fingerprint == want.fingerprint is not None
    for layer in LAYERS:
        a, b = got[layer], want[layer]
        for part in ("top", "bottom", "bands"):
            for name in ("values", "image_ids", "ys", "xs", "boxes", "priority"):
                x, y = getattr(getattr(a, part), name), getattr(getattr(b, part), name)
                assert (x is None) == (y is None)
                if x is not None:
                    assert torch.equal(x.nan_to_num(-7.0), y.nan_to_num(-7.0)), (layer, part, name)
        for name in ("hist", "hist_output", "positive", "minimum", "maximum"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (layer, name)
        assert a.moments.count == b.moments.count
        torch.testing.assert_close(a.moments.mean, b.moments.mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.moments.std, b.moments.std, rtol=1e-6, atol=1e-7)
        assert torch.equal(a.by_class.images, b.by_class.images) and torch.equal(a.by_class.maximum,
                                                                                   b.by_class.maximum)
        torch.testing.assert_close(a.by_class.max_sum, b.by_class.max_sum)


class Killed(Exception):
    """What stops a pass in these tests, as a killed process would stop it."""


def shard_files(folder):
    return sorted(p.name for p in folder.glob("shard-*.npz"))


def counting(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Replace the shard function by one that records each shard it computes and, after ``fail_after`` shards,
    raises as a killed process would stop."""
    calls: list[int] = []

    def fake(model, shard):
        if fail_after is not None and len(calls) >= fail_after:
            raise Killed(f"killed before shard {shard.index}")
        calls.append(shard.index)
        return REAL_SHARD(model, shard)

    monkeypatch.setattr(shards_module, "compute_shard", fake)
    return calls


def test_reference_sees_the_unreadable_images(reference):
    """The fixture's source has the two problems the shards must report like one pass (in the same order)."""
    assert reference.images == N_IMAGES and reference.n_skipped == 2
    assert [s.path.rsplit("/", 1)[-1] for s in reference.skipped] == ["stray.png", "img15b.png"]
    assert reference["act2"].count == N_IMAGES * 10 * 14


def test_sharded_pass_equals_one_pass(model, photos, reference, tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    got = collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    assert calls == [0, 1, 2, 3]  # 31 readable-or-not images: positions 0-7, 8-15, 16-23, 24-30
    assert_same(got, reference)
    files = shard_files(tmp_path)
    assert len(files) == 4
    spec = json.loads((tmp_path / "pass.json").read_text())
    assert spec["shard_size"] == 8 and spec["image_count"] == 31 and spec["layers"] == LAYERS
    assert spec["fingerprint"] == fingerprint(model) and spec["images"] == open_source(photos).identity()
    for name in files:  # each file is a whole statistics file of its shard, named by its checksum
        part = DatasetStats.load(tmp_path / name)
        index = int(name.split("-")[1])
        assert all(index * 8 <= a < b <= (index + 1) * 8 for a, b in part.id_ranges)
    # a rerun loads every shard and computes nothing
    calls.clear()
    again = collect_statistics(model, photos, LAYERS, workdir=tmp_path, **OPTIONS)  # shard size from pass.json
    assert calls == [] and shard_files(tmp_path) == files
    assert_same(again, reference)


def test_killed_pass_resumes_at_the_next_shard(model, photos, reference, tmp_path, monkeypatch):
    counting(monkeypatch, fail_after=1)
    with pytest.raises(Killed):
        collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    assert [int(n.split("-")[1]) for n in shard_files(tmp_path)] == [0]
    calls = counting(monkeypatch)
    got = collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    assert calls == [1, 2, 3]
    assert_same(got, reference)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_shard_is_recomputed_never_merged(model, photos, reference, tmp_path, monkeypatch, damage):
    collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    victim = tmp_path / shard_files(tmp_path)[2]
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    else:  # same length, one byte changed in the compressed arrays
        victim.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        got = collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    assert calls == [2] and len(shard_files(tmp_path)) == 4
    assert victim.read_bytes() == data  # computed again: the same bytes under the same name
    assert_same(got, reference)


@pytest.mark.parametrize("change,named", [
    ({"layers": ["act1"]}, 'layers ["act1", "act2"] there, ["act1"] now'),
    ({"model": "other weights"}, "model weights (fingerprint)"),
    ({"model": "other name"}, 'model "tiny-relu6" there, "tiny-other" now'),
    ({"k": 6}, "k 5 there, 6 now"),
    ({"pre_activation": False}, "pre_activation true there, false now"),
    ({"source": "samples:1"}, "image set (identity)"),
    ({"shard_size": 12}, "shard size 8 there, 12 now"),
])
def test_work_folder_of_another_pass_is_refused(model, photos, tmp_path, monkeypatch, change, named):
    collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    before = shard_files(tmp_path)
    other_model = {"other weights": wrap(ReLU6Net(seed=1), input_size=SIZE, name="tiny-relu6"),
                   "other name": wrap(ReLU6Net(), input_size=SIZE, name="tiny-other")}.get(change.get("model"), model)
    options = {**OPTIONS, "shard_size": 8, **{k: v for k, v in change.items() if k in ("k", "pre_activation",
                                                                                          "shard_size")}}
    calls = counting(monkeypatch)
    with pytest.raises(CnnscopeError, match="holds another pass") as err:
        collect_statistics(other_model, change.get("source", photos), change.get("layers", LAYERS),
                           workdir=tmp_path, **options)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert calls == [] and shard_files(tmp_path) == before


def test_merge_refuses_statistics_of_other_weights(model, photos, reference):
    assert reference.fingerprint == fingerprint(model)
    twin = wrap(ReLU6Net(seed=1), input_size=SIZE, name="tiny-relu6")  # same name, other weights
    source = open_source(photos)
    a = collect_statistics(model, source.subset(range(0, 10)), LAYERS, **OPTIONS)
    b = collect_statistics(twin, source.subset(range(10, 20)), LAYERS, **OPTIONS)
    with pytest.raises(CnnscopeError, match="fingerprints"):
        a.merge(b)
    loaded = DatasetStats.from_bytes(a.to_bytes())
    assert loaded.fingerprint == a.fingerprint
    with pytest.raises(CnnscopeError, match="checksum mismatch"):
        DatasetStats.from_bytes(a.to_bytes()[:-10], "x.npz", sha256="0" * 64)


def test_sources_without_identity_and_foreign_folders_are_refused(model, photos, tmp_path):
    with pytest.raises(CnnscopeError, match="needs an image set with an identity"):
        collect_statistics(model, RandomImages(4), LAYERS, workdir=tmp_path / "a", **OPTIONS)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(CnnscopeError, match="holds files but no pass.json"):
        collect_statistics(model, photos, LAYERS, workdir=tmp_path / "b", **OPTIONS)
    with pytest.raises(CnnscopeError, match="need a work folder"):
        collect_statistics(model, photos, LAYERS, shard_size=8, **OPTIONS)


def test_subset_source_shards_keep_its_ids(model, photos, tmp_path):
    """A pass over part of a source (ids 5..24, every other one) in shards equals the pass without shards."""
    part = open_source(photos).subset(range(5, 25, 2))
    want = collect_statistics(model, part, LAYERS, **OPTIONS)
    got = collect_statistics(model, part, LAYERS, workdir=tmp_path, shard_size=4, **OPTIONS)
    assert len(shard_files(tmp_path)) == 3 and got.id_ranges == want.id_ranges
    assert torch.equal(got["act2"].top.image_ids, want["act2"].top.image_ids)
    assert torch.equal(got["act2"].hist, want["act2"].hist) and got.source == want.source


def test_pretrained_lite0_one_pass_three_shards_and_resumed_pass_agree(lite0, tmp_path, monkeypatch):
    """EfficientNet-Lite0 (at 96 px) over random crops of the sample photos: one pass, three passes over parts merged
    by hand, and a work-folder pass killed after its first shard and resumed give the same numbers."""
    small = dataclasses.replace(lite0, input_size=(96, 96))
    layers = ["blocks.2.0.bn1.act", "blocks.4.0.bn1.act"]
    opts = {"pre_activation": True, "k": 4, "batch_size": 4, "receptive_field": None}
    source = open_source("samples:2")  # 8 photos x 2 crops
    one = collect_statistics(small, source, layers, **opts)
    parts = [collect_statistics(small, source.subset(range(a, b)), layers, **opts) for a, b in ((0, 4), (4, 12),
                                                                                                   (12, 16))]
    by_hand = parts[0].merge(parts[1]).merge(parts[2])
    counting(monkeypatch, fail_after=1)
    with pytest.raises(Killed):
        collect_statistics(small, "samples:2", layers, workdir=tmp_path, shard_size=4, **opts)
    calls = counting(monkeypatch)
    resumed = collect_statistics(small, "samples:2", layers, workdir=tmp_path, shard_size=4, **opts)
    assert calls == [1, 2, 3]
    for got in (by_hand, resumed):
        for layer in layers:
            a, b = got[layer], one[layer]
            for part in ("top", "bottom", "bands"):
                assert torch.equal(getattr(a, part).image_ids, getattr(b, part).image_ids)
                assert torch.equal(getattr(a, part).values.nan_to_num(), getattr(b, part).values.nan_to_num())
            assert torch.equal(a.hist, b.hist) and torch.equal(a.hist_output, b.hist_output)
            assert a.count == b.count == 16 * np.prod(a.grid)
    assert resumed.fingerprint == one.fingerprint == fingerprint(lite0)
    assert float(one[layers[1]].maximum.max()) > 1  # real activations, not an empty pass


KILLED_SCRIPT = """
import sys, time
from cnnscope.dataset import collect_statistics, shards
from tests.dataset.helpers import tiny

real = shards.compute_shard

def slow(model, shard):
    name = real(model, shard)
    time.sleep(60)  # the test kills the process while it waits here, after the first shard
    return name

shards.compute_shard = slow
collect_statistics(tiny("relu6"), sys.argv[1], ["act1", "act2"], workdir=sys.argv[2], shard_size=8,
                   pre_activation=True, k=5, bottom_k=4, band_samples=3, batch_size=4, receptive_field="exact")
"""


def test_pass_killed_with_sigkill_resumes(model, photos, reference, tmp_path, monkeypatch):
    """A process killed (SIGKILL) after its first shard: the rerun computes the other three, same numbers."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, photos, str(tmp_path)], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 120
        while not shard_files(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [int(n.split("-")[1]) for n in shard_files(tmp_path)] == [0]
    calls = counting(monkeypatch)
    got = collect_statistics(model, photos, LAYERS, workdir=tmp_path, shard_size=8, **OPTIONS)
    assert calls == [1, 2, 3]
    assert_same(got, reference)


def test_cli_spectrum_in_a_work_folder_resumes(tmp_path, monkeypatch, capsys):
    """``spectrum --work``: the second run loads the shards (computes none) and writes the same spectrum; the scale
    options without ``--work`` are one-line errors."""
    from cnnscope.cli import main

    layer = "blocks.2.1.bn1.act"
    args = ["spectrum", "efficientnet_lite0", layer, "--images", "sample:chelsea,coffee,astronaut", "-c", "5",
            "--pre-activation", "--batch-size", "1", "--shard-size", "2", "--work", str(tmp_path / "work"),
            "--rf", "fast"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert len(shard_files(tmp_path / "work")) == 2
    calls = counting(monkeypatch)
    assert main(args[:-6] + args[-4:] + ["--out", str(tmp_path / "b")]) == 0  # no --shard-size: the folder's
    assert calls == []
    name = f"spectrum_{layer}_c0005.json"
    first, second = (json.loads((tmp_path / d / name).read_text()) for d in ("a", "b"))
    assert first == second and first["images"] == 3
    capsys.readouterr()
    assert main(["spectrum", "efficientnet_lite0", layer, "-c", "5", "--engine", "ray", "--out",
                 str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --shard-size, --engine and --address need --work DIR (the folder of the pass's shards)"
