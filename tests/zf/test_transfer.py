"""Transfer by retraining a classifier on frozen layers: the features are the layers' outputs, the model is not
touched, separable data are learnt, and the command prints the table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.cli import main
from cnnscope.errors import LayerError
from cnnscope.models import wrap
from cnnscope.zf.architecture import ConvNet, NetSpec
from cnnscope.zf.train import ImageDataset, save_checkpoint
from cnnscope.zf.transfer import default_layers, fit_classifier, frozen_features, transfer
from tests.conformance import assert_unchanged


def _colours(n: int = 40, size: int = 16) -> ImageDataset:
    """Two classes: reddish and bluish noise pictures."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 70, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    imgs[labels == 0, ..., 0] += 170
    imgs[labels == 1, ..., 2] += 170
    return ImageDataset(imgs, labels.astype(np.int64), ["red", "blue"], 3, "colours")


def _net(fc=(6,)) -> tuple[ConvNet, object]:
    torch.manual_seed(0)
    net = ConvNet(NetSpec(widths=(4, 8), fc=fc, head_pool=2), 3, 5).eval()
    return net, wrap(net, 16, (0.5,) * 3, (0.25,) * 3, labels=list("abcde"), name="tiny")


def test_default_layers_and_features_are_the_layer_outputs():
    net, m = _net()
    assert default_layers(net) == ["features.2", "features.5", "classifier.1"]
    data = _colours(6)
    x = m.batch(data.images)
    with torch.no_grad():
        f1 = F.adaptive_avg_pool2d(net.features[:3](x), 2).flatten(1)
        fc = net.classifier[:2](net.flatten(net.pool(net.features(x))))
    torch.testing.assert_close(frozen_features(m, data.images, "features.2", pool=2, batch_size=4), f1)
    torch.testing.assert_close(frozen_features(m, data.images, "classifier.1"), fc)
    with pytest.raises(LayerError, match="name the layers"):
        default_layers(nn.Sequential(nn.Conv2d(3, 2, 3)))


def test_separable_features_are_learnt_and_the_model_is_untouched(one_thread):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).long()
    x[:, 0] += 2.0 * y - 1.0  # a margin
    lin = fit_classifier(x * 100 + 7, y, 2, epochs=60, generator=torch.Generator().manual_seed(1))
    assert float((lin(x * 100 + 7).argmax(1) == y).double().mean()) == 1.0  # takes raw features (scaling folded in)
    net, m = _net()
    data = _colours()
    done = []
    assert assert_unchanged(net, lambda: done.append(transfer(m, data, epochs=15, seed=2))) is None
    result = done[0]
    assert [r.layer for r in result.rows] == ["features.2", "features.5", "classifier.1"]
    assert [r.k for r in result.rows] == [1, 2, 3] and [r.features for r in result.rows] == [16, 32, 6]
    assert result.rows[0].test_accuracy == 1.0 and result.rows[0].train_accuracy == 1.0  # colour is in layer 1
    again = transfer(m, data, epochs=15, seed=2)
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in result.rows]  # seeded
    assert json.loads(json.dumps(result.to_dict()))["settings"]["classes"] == ["red", "blue"]
    with pytest.raises(LayerError, match="name the layers"):
        transfer(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()), data)


def test_scratch_row_and_the_command(tmp_path, capsys, one_thread):
    from cnnscope.images import save_image

    net, m = _net(fc=())
    ck = save_checkpoint(m, tmp_path / "tiny.pt", 1, [])
    data = _colours(24)
    for name, k in (("red", 0), ("blue", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in np.flatnonzero(data.labels == k):
            save_image(data.images[i], tmp_path / "data" / name / f"{i}.png")
    out = tmp_path / "tr"
    code = main(["transfer", str(ck), str(tmp_path / "data"), "--epochs", "10", "--scratch", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    doc = json.loads((out / "transfer.json").read_text())
    assert [r["layer"] for r in doc["rows"]] == ["features.2", "features.5", "scratch"]
    assert doc["settings"]["classes"] == ["blue", "red"] and doc["settings"]["images"] == 24
    for r in doc["rows"]:
        assert f"{r['test_accuracy']:.2%}" in text
    assert (out / "transfer.png").stat().st_size > 0
