"""Training on digits (reaches >= 90%), reproducibility, checkpoints, and the feature-evolution figure's data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, ImageError, ModelError
from cnnscope.models import AssumptionWarning
from cnnscope.zf import evolution, load_checkpoint, project, top_projections, train
from cnnscope.zf.train import ImageDataset, accuracy, digits_dataset, folder_dataset


def test_digits_training_reaches_90_percent_and_saves_checkpoints(digits_run):
    assert digits_run.history[-1]["test_accuracy"] >= 0.90
    assert sorted(digits_run.checkpoints) == [0, 1]
    m0, m1 = (load_checkpoint(digits_run.checkpoints[e]) for e in (0, 1))
    assert m0.extra["epoch"] == 0 and m1.extra["epoch"] == 1
    assert m1.extra["history"] == digits_run.history
    # the epoch-1 checkpoint is the trained model: same weights, same predictions
    for k, v in digits_run.model.module.state_dict().items():
        assert torch.equal(m1.module.state_dict()[k], v.cpu())
    ds = digits_dataset()
    idx = digits_run.test_indices
    assert accuracy(m1, ds.images[idx], ds.labels[idx]) == digits_run.history[-1]["test_accuracy"]
    preds = [m1.predict(ds.images[i], k=1)[0][0][0] for i in idx[:20]]
    assert np.mean(np.asarray(preds) == ds.labels[idx[:20]]) >= 0.8
    assert m1.input_size == (32, 32) and len(m1.mean) == 1


def test_training_is_reproducible_with_a_seed(one_thread):
    ds = digits_dataset(16)
    small = ImageDataset(ds.images[:240], ds.labels[:240], ds.classes, 1, "digits240")
    a = train(small, epochs=1, widths=(4, 8), batch_size=40, seed=7)
    b = train(small, epochs=1, widths=(4, 8), batch_size=40, seed=7)
    c = train(small, epochs=1, widths=(4, 8), batch_size=40, seed=8)
    sa, sb, sc = (r.model.module.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history == b.history
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_evolution_follows_channels_across_checkpoints(digits_run, digits_test_images):
    paths = [digits_run.checkpoints[e] for e in (0, 1)]
    ev = evolution(paths, digits_test_images, "features.6", channels="0,3,5", batch_size=64)
    assert ev.epochs == [0, 1] and ev.channels == [0, 3, 5]
    assert [[e.channel for e in row] for row in ev.entries] == [[0, 3, 5]] * 2
    assert ev.images.shape == (len(digits_test_images), 32, 32, 3) and ev.images.dtype == np.uint8
    for col, path in enumerate(paths):
        model = load_checkpoint(path)
        tp = top_projections(model, digits_test_images, "features.6", channels=[0, 3, 5], k=1)
        for j, c in enumerate((0, 3, 5)):
            assert ev.entries[col][j].image_index == tp.entries[c][0].image_index
            torch.testing.assert_close(ev.entries[col][j].values, tp.entries[c][0].values)
    # training changed what the channels respond to: the projections differ between the checkpoints
    for j in range(3):
        before, after = ev.entries[0][j], ev.entries[1][j]
        differ = before.image_index != after.image_index or before.position != after.position or not torch.allclose(
            before.values, after.values, rtol=1e-3, atol=1e-6)
        assert differ
    assert ev.crop(ev.entries[1][0]).ndim == 3
    models = [load_checkpoint(p) for p in paths]
    x = models[1].batch(list(digits_test_images.values()))  # model space: plain modules need no normalisation
    with pytest.warns(AssumptionWarning):  # only the pictures of a plain module depend on assumptions
        same = evolution([m.module for m in models], x, "features.6", channels=[3])
    torch.testing.assert_close(same.entries[1][0].values, ev.entries[1][1].values)  # models work like files


def test_folder_dataset_training_and_deconvnet_on_the_result(tmp_path, one_thread):
    from cnnscope.images import save_image

    rng = np.random.default_rng(0)
    for cls, colour in (("red", 0), ("blue", 2)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            img = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            img[..., colour] += 180
            save_image(img, tmp_path / cls / f"{i}.png")
    ds = folder_dataset(tmp_path, size=16)
    assert ds.classes == ["blue", "red"] and ds.images.shape == (12, 16, 16, 3) and ds.channels == 3
    r = train(tmp_path, epochs=2, size=16, widths=(4, 8), batch_size=4, checkpoint_epochs=[2], out=tmp_path / "run")
    m = load_checkpoint(r.checkpoints[2])
    p = project(m, ds.images[0], "features.3", channel=1)
    assert p.values.shape == (1, 3, 16, 16) and p.method == "deconvnet"


def test_bad_inputs(tmp_path):
    with pytest.raises(ImageError, match="not a folder"):
        train(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(ImageError, match="at least two class"):
        train(tmp_path)
    with pytest.raises(CnnscopeError, match="outside 0..2"):
        train("digits", epochs=2, checkpoint_epochs=[3], out=tmp_path)
    with pytest.raises(CnnscopeError, match="output folder"):
        train("digits", epochs=1, checkpoint_epochs=[1])
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a checkpoint written by"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CnnscopeError, match="no checkpoints"):
        evolution([], [np.zeros((8, 8, 3), np.uint8)], "features.0", channels=[0])
    with pytest.raises(TypeError):
        train("digits", 1)  # everything after the data is keyword-only
