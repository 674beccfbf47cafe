"""Atlas builds at scale: the dataset pass kept in shards inside the atlas folder (a killed build resumes it),
the build plan, and the Ray engine giving the same atlas."""

from __future__ import annotations

import json

import pytest

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.cli import main
from tests.atlas import helpers


def _contents(path) -> dict:
    with AtlasStore(path) as st:
        return {(layer, unit): sorted((a.kind, a.name, a.sha256 or "", repr(a.numbers))
                                      for a in st.artifacts(layer, unit)) for layer, unit in st.all_units()}


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for name, arr in helpers.tiny_images(6):
        Image.fromarray(arr).save(folder / f"{name}.png")
    return folder


def _build(out, folder, **kw):
    opts = BuildOptions(units_per_chunk=2, seed=0, batch_size=2)
    return build_atlas(helpers.tiny_model(), out, helpers.TINY_LAYERS, channels=[0, 1], source=str(folder),
                       kinds=["examples"], options=opts, **kw)


def test_a_killed_build_resumes_its_dataset_pass_at_the_next_shard(tmp_path, image_folder, monkeypatch):
    from cnnscope.dataset import shards

    monkeypatch.setattr(shards, "SHARD_IMAGES", 2)  # three shards of the six images
    whole = tmp_path / "whole"
    _build(whole, image_folder)
    passes = list((whole / "work").glob("dataset-*/pass.json"))
    assert len(passes) == 1  # one pass for both layers, kept in shards inside the atlas folder
    real, done = shards.compute_shard, []

    def dies_after_one(model, shard):
        if done:
            raise KeyboardInterrupt  # the build is killed during its second shard
        done.append(real(model, shard))
        return done[-1]

    monkeypatch.setattr(shards, "compute_shard", dies_after_one)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _build(out, image_folder)
    (work,) = (out / "work").glob("dataset-*")
    assert len(list(work.glob("shard-*.npz"))) == 1
    computed = []
    monkeypatch.setattr(shards, "compute_shard", lambda model, shard: computed.append(shard) or real(model, shard))
    _build(out, image_folder)
    assert computed and len(computed) == len(list(work.glob("shard-*.npz"))) - 1  # the finished shard was reused
    assert _contents(out) == _contents(whole)


def test_plan_prints_the_estimate_and_builds_nothing(tmp_path, image_folder, capsys, monkeypatch):
    import cnnscope.models

    monkeypatch.setattr(cnnscope.models, "load_model", lambda *a, **k: helpers.tiny_model())
    out = tmp_path / "atlas"
    rc = main(["atlas", "build", "tiny", "--layers", ",".join(helpers.TINY_LAYERS), "--channels", "0-1",
               "--kinds", "examples", "--images", str(image_folder), "--out", str(out), "--plan",
               "--workers", "4", "--steps", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.splitlines()[0].startswith("4 units x 1 kind") and "on 4 workers" in text
    assert not (out / "atlas.sqlite").exists()


@pytest.mark.slow
def test_a_build_on_ray_is_the_same_atlas(tmp_path, image_folder):
    pytest.importorskip("ray", reason="the Ray engine needs the extra cnnscope[ray]")
    local, remote = tmp_path / "local", tmp_path / "ray"
    _build(local, image_folder)
    _build(remote, image_folder, engine="ray")
    assert _contents(remote) == _contents(local)
    meta = json.loads(next((remote / "work").glob("dataset-*/pass.json")).read_text())
    assert meta


@pytest.mark.slow
def test_unit_chunks_on_ray_give_the_same_atlas(tmp_path, image_folder, single_thread):
    """Each chunk of units is a piece on a Ray actor (one torch thread, as here); the driver alone writes the atlas,
    and the atlas equals the in-process one, renders included."""
    pytest.importorskip("ray", reason="the Ray engine needs the extra cnnscope[ray]")
    local, remote = tmp_path / "local", tmp_path / "ray"
    opts = BuildOptions(units_per_chunk=1, seed=0, batch_size=2, steps=3, size=32)
    for out, engine in ((local, None), (remote, "ray")):
        report = build_atlas(helpers.tiny_model(), out, helpers.TINY_LAYERS, channels=[0, 1], source=str(image_folder),
                             kinds=["featurevis", "examples"], options=opts, engine=engine)
        assert len(report.built) == 4
    assert _contents(remote) == _contents(local)
