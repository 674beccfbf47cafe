"""Image sources: folders (recursive), globs, lists, torch Datasets, the sample photos; batches and skipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnscope.dataset.sources import (
    DatasetSource,
    FileSource,
    SampleSource,
    iterate_batches,
    open_source,
)
from cnnscope.errors import CnnscopeError, ImageError

from .helpers import RandomImages, tiny


@pytest.fixture()
def tree(tmp_path):
    data = RandomImages(5, size=(16, 12))
    (tmp_path / "a" / "b").mkdir(parents=True)
    paths = [tmp_path / "x.png", tmp_path / "a" / "y.jpg", tmp_path / "a" / "b" / "z.bmp", tmp_path / "a" / "w.PNG"]
    for p, img in zip(paths, data.images):
        Image.fromarray(img).save(p, format={"jpg": "JPEG", "png": "PNG", "bmp": "BMP"}[p.suffix[1:].lower()])
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, paths, data


def test_folder_is_recursive_and_sorted(tree):
    root, paths, data = tree
    src = open_source(root)
    assert isinstance(src, FileSource) and len(src) == 4
    names = [src.name(i) for i in range(4)]
    assert names == sorted(str(p) for p in paths)
    np.testing.assert_array_equal(src.load(names.index(str(paths[0]))), data.images[0])  # PNG is lossless


def test_glob_list_and_single_file(tree):
    root, paths, _ = tree
    assert len(open_source(str(root / "**" / "*.png"))) == 1  # case-sensitive glob: w.PNG does not match
    assert len(open_source(str(root / "a" / "*"))) == 2
    assert len(open_source([str(p) for p in paths[:2]])) == 2
    assert len(open_source(paths[1])) == 1
    with pytest.raises(ImageError, match="no files match"):
        open_source(str(root / "*.gif"))
    with pytest.raises(ImageError, match="no such file or folder"):
        open_source(root / "missing")
    with pytest.raises(ImageError, match="no image files"):
        open_source((root / "empty").mkdir() or root / "empty")


def test_torch_dataset_items():
    data = RandomImages(4)

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": torch.from_numpy(data.images[i]).permute(2, 0, 1).float() / 255.0, "label": 3}

    src = open_source(data)
    assert isinstance(src, DatasetSource) and len(src) == 4 and src.name(2) == "RandomImages[2]"
    np.testing.assert_array_equal(src.load(1), data.images[1])
    np.testing.assert_array_equal(open_source(Dicts()).load(1), data.images[1])


def test_sample_crops_are_reproducible_and_distinct():
    a, b = SampleSource(crops=3, seed=5), SampleSource(crops=3, seed=5)
    assert len(a) == 3 * 8 and a.name(4) == "coffee#1"
    np.testing.assert_array_equal(a.load(4), b.load(4))
    assert a.load(4).shape != a.load(5).shape or not np.array_equal(a.load(4), a.load(5))
    assert not np.array_equal(a.load(4), SampleSource(crops=3, seed=6).load(4))
    assert open_source("samples").load(0).shape == (300, 451, 3)  # skimage's chelsea, whole
    assert len(open_source("sample:chelsea,coffee")) == 2
    assert len(open_source("samples:2").subset([3, 1])) == 2
    with pytest.raises(ImageError, match="chelsea"):
        open_source("sample:chelsee")
    with pytest.raises(CnnscopeError):
        SampleSource(crops=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_fit_images_and_skip_unreadable(tree, workers):
    root, paths, _ = tree
    (root / "bad.png").write_bytes(b"garbage")
    model = tiny()
    seen, skipped = [], []
    for batch in iterate_batches(model, root, batch_size=2, num_workers=workers):
        assert batch.images.dtype == np.uint8 and tuple(batch.images.shape[1:3]) == model.input_size
        x = batch.tensor(model)
        assert x.shape == (len(batch.ids), 3) + model.input_size and x.dtype == torch.float32
        torch.testing.assert_close(x, model.batch(batch.images))  # the one conversion of pictures
        seen += batch.ids.tolist()
        skipped += batch.skipped
    assert len(seen) == 4 and len(skipped) == 1 and "bad.png" in skipped[0][0]
    assert "not an image" in skipped[0][1] or "unreadable" in skipped[0][1]
