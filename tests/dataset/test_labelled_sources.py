"""Class folders, manifests, WebDataset shards and Hugging Face datasets: the same photos give the same statistics
in every layout, each example keeps its class, and per-class statistics match a brute-force computation."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cnnscope.cli import main
from cnnscope.dataset import collect_statistics
from cnnscope.dataset.sources import (
    FileSource,
    TarShards,
    expand_braces,
    iterate_batches,
    open_source,
    read_images,
)
from cnnscope.errors import CnnscopeError, ImageError

from .helpers import brute_values, tiny
from .layouts import (
    PHOTOS,
    add_member,
    labelled_photos,
    png_bytes,
    write_class_folders,
    write_hf,
    write_manifests,
    write_shards,
)

LAYER = "act2"
CLASSES = sorted(set(PHOTOS.values()))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    images = write_class_folders(root / "images")
    csv_path, jsonl_path = write_manifests(root, images)
    specs = {"classes": f"classes:{images}", "csv": str(csv_path), "jsonl": str(jsonl_path),
             "tar": write_shards(root / "shards")}
    try:
        specs["hf"] = f"hf:{write_hf(root / 'hf')}"
    except ImportError:
        pass
    return specs


@pytest.fixture(scope="module")
def model():
    return tiny("relu6")


@pytest.fixture(scope="module")
def brute(model):
    """Every value of the layer on the photos, fitted as the pass fits them: ``[N, C, h, w]``."""
    m = model
    fitted = np.stack([m.fit_image(img) for _, _, img in labelled_photos()])
    return brute_values(m, fitted, LAYER, pre=False)


def test_brace_expansion():
    assert expand_braces("s/train-{0000..0002}.tar") == ["s/train-0000.tar", "s/train-0001.tar", "s/train-0002.tar"]
    assert expand_braces("{a,b}{1..2}-{x}") == ["a1-{x}", "a2-{x}", "b1-{x}", "b2-{x}"]
    assert expand_braces("{8..10}") == ["8", "9", "10"] and expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("p{a,{b,c}d}") == ["pa", "pbd", "pcd"] and expand_braces("plain.tar") == ["plain.tar"]
    braceexpand = pytest.importorskip("braceexpand").braceexpand
    for pattern in ("x-{000..012}.tar", "{a,b}/{1..3}{c,d}", "p{a,{b,c}d}", "{09..11}"):
        assert expand_braces(pattern) == list(braceexpand(pattern)), pattern


def test_every_layout_lists_the_photos_with_their_classes(layouts):
    want = [(stem, cls) for stem, cls, _ in labelled_photos()]
    assert set(layouts) >= {"classes", "csv", "jsonl", "tar"}
    for kind, spec in layouts.items():
        src = open_source(spec)
        assert len(src) == len(want) and src.classes == CLASSES, kind
        assert [src.label(i) for i in range(len(src))] == [cls for _, cls in want], kind
        assert [src.label_index(i) for i in range(len(src))] == [CLASSES.index(c) for _, c in want], kind
        for i, (_, _, img) in enumerate(labelled_photos()):
            np.testing.assert_array_equal(src.load(i), img, err_msg=f"{kind} image {i}")
        assert src.identity().startswith("sha256:") and src.problems() == [], kind
        assert src.describe()["classes"] == len(CLASSES), kind


def test_the_same_photos_give_the_same_top_k_in_every_layout(layouts, model, brute):
    """Class folders, CSV and JSON-lines manifests, two tar shards and a saved HF dataset: the same top-k values,
    image ids and classes, equal to a brute-force ranking; per-class statistics equal a direct computation."""
    k = 4
    n, c, h, w = brute.shape
    flat = torch.from_numpy(brute).permute(1, 0, 2, 3).reshape(c, -1)
    want_values, want_pos = torch.sort(flat, dim=1, descending=True, stable=True)
    labels = [cls for _, cls, _ in labelled_photos()]
    per_max = brute.reshape(n, c, -1).max(axis=2)
    results = {kind: collect_statistics(model, spec, [LAYER], k=k, batch_size=2, receptive_field=None)
               for kind, spec in layouts.items()}
    for kind, stats in results.items():
        ls = stats[LAYER]
        torch.testing.assert_close(ls.top.values, want_values[:, :k], rtol=0, atol=0, msg=kind)
        np.testing.assert_array_equal(ls.top.image_ids.numpy(), (want_pos[:, :k] // (h * w)).numpy(), err_msg=kind)
        for ch in range(c):
            for ex in stats.examples(LAYER, ch):
                assert ex.label == labels[ex.image_id], (kind, ch)
        bc = ls.by_class
        assert bc.classes == CLASSES and bc.images.tolist() == [labels.count(cls) for cls in CLASSES]
        for j, cls in enumerate(CLASSES):
            rows = [i for i, lab in enumerate(labels) if lab == cls]
            np.testing.assert_allclose(bc.mean_max[j].numpy(), per_max[rows].mean(axis=0), rtol=1e-6)
            np.testing.assert_allclose(bc.maximum[j].numpy(), per_max[rows].max(axis=0), rtol=0)
        ranked = stats.top_classes(LAYER, 0)
        assert [r["class"] for r in ranked] == [CLASSES[j] for j in np.argsort(-bc.mean_max[:, 0].numpy(),
                                                                                 kind="stable")]
        assert sum(r["top"] for r in ranked) == k


def test_class_histograms_add_up_to_the_layer_histogram(layouts, model, tmp_path):
    stats = collect_statistics(model, layouts["classes"], [LAYER], k=2, receptive_field=None,
                               class_histograms=True)
    ls = stats[LAYER]
    torch.testing.assert_close(ls.by_class.hist.sum(0), ls.hist, rtol=0, atol=0)
    one = collect_statistics(model, open_source(layouts["classes"]).subset([0]), [LAYER], k=2,
                             receptive_field=None, class_histograms=True)
    cls0 = CLASSES.index(labelled_photos()[0][1])
    assert int(one[LAYER].by_class.hist[cls0].sum()) == one[LAYER].count * one[LAYER].channels
    saved = type(stats).load(stats.save(tmp_path / "s.npz"))
    torch.testing.assert_close(saved[LAYER].by_class.hist, ls.by_class.hist, rtol=0, atol=0)
    assert saved[LAYER].by_class.classes == CLASSES and saved.labels == stats.labels
    assert saved.examples(LAYER, 1) == stats.examples(LAYER, 1)


def test_merging_parts_of_one_labelled_source_equals_one_pass(layouts, model):
    src = open_source(layouts["tar"])
    kw = dict(k=3, batch_size=2, receptive_field=None)
    whole = collect_statistics(model, src, [LAYER], **kw)
    merged = collect_statistics(model, src.subset(range(3)), [LAYER], **kw).merge(
        collect_statistics(model, src.subset(range(3, len(src))), [LAYER], **kw))
    assert merged.source["identity"] == src.identity() and merged.labels == whole.labels
    for part in ("images", "max_sum", "maximum"):
        torch.testing.assert_close(getattr(merged[LAYER].by_class, part), getattr(whole[LAYER].by_class, part))
    other = collect_statistics(model, open_source(layouts["csv"]).subset(range(3, 6)), [LAYER], **kw)
    with pytest.raises(CnnscopeError, match="two image sets"):
        collect_statistics(model, src.subset(range(3)), [LAYER], **kw).merge(other)


def test_bad_manifest_rows_and_missing_files_are_skipped_and_reported(tmp_path, model):
    write_class_folders(tmp_path / "images")
    rows = [f"images/{cls}/{stem}.png" for stem, cls, _ in labelled_photos()]
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": rows[0], "label": "cat"}) + "\n{not json\n" + json.dumps({"label": "x"}) + "\n"
        + json.dumps({"path": "images/missing.png"}) + "\n" + json.dumps({"path": rows[1]}) + "\n")
    src = open_source(str(tmp_path / "m.jsonl"))
    assert len(src) == 3 and [p.path for p in src.problems()] == [f"{tmp_path / 'm.jsonl'}:2",
                                                                  f"{tmp_path / 'm.jsonl'}:3"]
    assert src.label(0) == "cat" and src.label(2) is None and src.classes == ["cat"]
    stats = collect_statistics(model, src, [LAYER], k=1, receptive_field=None)
    assert stats.images == 2 and stats.n_skipped == 3
    assert [s.path for s in stats.skipped] == [f"{tmp_path / 'm.jsonl'}:2", f"{tmp_path / 'm.jsonl'}:3",
                                               str(tmp_path / "images" / "missing.png")]
    assert "no path" in stats.skipped[1].reason and "no such file" in stats.skipped[2].reason
    got = read_images(str(tmp_path / "m.jsonl"))
    assert len(got) == 2 and len(got.skipped) == 3
    (tmp_path / "bad.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(ImageError, match="'path' column"):
        open_source(str(tmp_path / "bad.csv"))


def test_corrupt_tar_members_and_truncated_shards_are_skipped_and_reported(tmp_path, model):
    rows = labelled_photos()
    with tarfile.open(tmp_path / "a-0.tar", "w") as tf:
        add_member(tf, "good.png", png_bytes(rows[0][2]))
        add_member(tf, "good.cls", b"cat")
        add_member(tf, "broken.jpg", b"\xff\xd8 not really a jpeg")
        add_member(tf, "lonely.cls", b"dog")
    with tarfile.open(tmp_path / "a-1.tar", "w") as tf:
        add_member(tf, "x.png", png_bytes(rows[1][2]))
        add_member(tf, "y.png", png_bytes(rows[2][2]))
    with tarfile.open(tmp_path / "a-1.tar") as tf:
        cut = tf.getmember("y.png").offset_data + 100
    data = (tmp_path / "a-1.tar").read_bytes()
    (tmp_path / "a-1.tar").write_bytes(data[:cut])  # y.png's header and the first 100 bytes of its data
    src = open_source(str(tmp_path / "a-{0..2}.tar"))
    assert isinstance(src, TarShards) and len(src) >= 3
    problems = {p.path: p.reason for p in src.problems()}
    assert problems[f"{tmp_path / 'a-0.tar'}:lonely"].startswith("the sample has no image")
    assert problems[str(tmp_path / "a-2.tar")] == "no such shard"
    batches = list(iterate_batches(model, src, batch_size=8))
    skipped = [s for b in batches for s in b.skipped]
    ids = torch.cat([b.ids for b in batches]).tolist()
    assert 0 in ids and 2 in ids  # good.png and x.png
    names = [s.path for s in skipped]
    assert f"{tmp_path / 'a-0.tar'}:broken.jpg" in names and f"{tmp_path / 'a-0.tar'}:lonely" in names
    assert any("a-1.tar" in n for n in names)  # y.png: cut short (or its header lost)
    assert len(names) == len(set(names))
    with pytest.raises(ImageError, match="compressed tar"):
        open_source(str(tmp_path / "a.tar.gz"))


def test_identity_follows_the_files_not_the_spelling(tmp_path, monkeypatch):
    rows = labelled_photos()
    for folder, offset in (("one", 0), ("two", 3)):
        (tmp_path / folder / "images").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rows[offset + i][2]).save(tmp_path / folder / "images" / f"{i}.png")
    monkeypatch.chdir(tmp_path / "one")
    first = open_source("images")
    same = open_source(str(tmp_path / "one" / "images"))
    monkeypatch.chdir(tmp_path / "two")
    other = open_source("images")
    assert len(first) == len(other) == 3
    assert first.identity() == same.identity() and first.describe() == same.describe()
    assert other.identity() != first.identity()
    path = tmp_path / "two" / "images" / "0.png"
    path.write_bytes(path.read_bytes() + b"\0")  # same name, other bytes
    assert open_source("images").identity() != other.identity()
    assert FileSource([path]).identity() == open_source(str(path)).identity()


def test_a_relative_images_folder_from_another_cwd_is_not_accepted_into_an_atlas(tmp_path, monkeypatch):
    from cnnscope.atlas import build_atlas
    from cnnscope.atlas.records import AtlasError
    from tests.atlas import helpers

    pictures = helpers.tiny_images(4)
    for folder, part in (("one", pictures[:2]), ("two", pictures[2:])):  # as many images, other files
        (tmp_path / folder / "images").mkdir(parents=True)
        for name, img in part:
            Image.fromarray(img).save(tmp_path / folder / "images" / f"{name}.png")
    out = tmp_path / "atlas"
    monkeypatch.chdir(tmp_path / "one")
    build_atlas(helpers.tiny_model(), out, helpers.TINY_LAYERS, source="images", kinds=["unit_mean"])
    build_atlas(helpers.tiny_model(), out, helpers.TINY_LAYERS, source=str(tmp_path / "one" / "images"),
                kinds=["unit_mean"])  # the same files, spelled otherwise: resumes
    monkeypatch.chdir(tmp_path / "two")
    with pytest.raises(AtlasError, match="other settings.*images"):
        build_atlas(helpers.tiny_model(), out, helpers.TINY_LAYERS, source="images", kinds=["unit_mean"])
    monkeypatch.chdir(tmp_path / "one")
    first = sorted((tmp_path / "one" / "images").iterdir())[0]
    Image.fromarray(pictures[3][1]).save(first)  # the same folder and names, another picture
    with pytest.raises(AtlasError, match="other settings.*images"):
        build_atlas(helpers.tiny_model(), out, helpers.TINY_LAYERS, source="images", kinds=["unit_mean"])


def test_hf_parquet_and_imagefolder(layouts, model, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    saved = open_source(layouts["hf"])
    parquet = tmp_path / "photos.parquet"
    datasets.load_from_disk(layouts["hf"][3:]).to_parquet(str(parquet))
    folder = write_class_folders(tmp_path / "imagefolder")
    want = collect_statistics(model, saved, [LAYER], k=3, batch_size=1, receptive_field=None)[LAYER]
    for spec in (f"hf:{parquet}", f"hf:{folder}"):
        src = open_source(spec)
        assert src.classes == CLASSES and sorted(src.label(i) for i in range(len(src))) == sorted(PHOTOS.values())
        got = collect_statistics(model, src, [LAYER], k=3, batch_size=1, receptive_field=None)[LAYER]
        torch.testing.assert_close(got.top.values, want.top.values, rtol=0, atol=0, msg=spec)
    with pytest.raises(ImageError, match="no such folder"):
        open_source(f"hf:{tmp_path / 'nothing'}")


def test_examples_json_lists_the_class_of_each_top_example(layouts, tmp_path, capsys):
    layer = "blocks.2.1.bn1.act"
    rc = main(["examples", "efficientnet_lite0", layer, "--images", layouts["csv"], "-k", "3", "--channels", "0,5",
               "--batch-size", "6", "--rf", "fast", "--json", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    assert data == json.loads((tmp_path / "out" / "examples.json").read_text())
    names = {stem: cls for stem, cls, _ in labelled_photos()}
    for ch in ("0", "5"):
        top = data["channels"][ch]["top"]
        assert len(top) == 3
        for e in top:
            stem = e["name"].rsplit("/", 1)[-1][:-4]
            assert e["label"] == names[stem]
        classes = data["channels"][ch]["classes"]
        assert {r["class"] for r in classes} <= set(CLASSES) and classes[0]["mean_max"] >= classes[-1]["mean_max"]
        assert sum(r["top"] for r in classes) == 3
    assert data["source"]["identity"].startswith("sha256:") and data["source"]["classes"] == len(CLASSES)


def test_shards_and_hf_datasets_stream_through_dataloader_workers(layouts, model):
    for kind in ("tar", "hf", "csv"):
        if kind not in layouts:
            continue
        src = open_source(layouts[kind])
        batches = list(iterate_batches(model, src, batch_size=2, num_workers=2))
        assert torch.cat([b.ids for b in batches]).tolist() == list(range(len(PHOTOS))), kind
        want = np.stack([model.fit_image(img) for _, _, img in labelled_photos()])
        np.testing.assert_array_equal(np.concatenate([b.images for b in batches]), want, err_msg=kind)
