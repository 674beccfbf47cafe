"""The configurable ZF/AlexNet-style network: its layout, variants, checkpoints, training options and data sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError, ImageError, ModelError
from cnnscope.images import save_image
from cnnscope.models import load_model, wrap
from cnnscope.zf.architecture import ConvNet, NetSpec
from cnnscope.zf.train import (
    ImageDataset,
    SmallConvNet,
    digits_dataset,
    get_dataset,
    load_checkpoint,
    save_checkpoint,
    train,
)


def _tiny_digits(n: int = 120, size: int = 16) -> ImageDataset:
    ds = digits_dataset(size)
    return ImageDataset(ds.images[:n], ds.labels[:n], ds.classes, 1, f"digits{n}")


def test_default_spec_is_the_small_network_of_earlier_versions():
    net = SmallConvNet(1, 10, (4, 8, 16))
    kinds = [type(m) for m in net.features]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 3
    assert [net.features[i].kernel_size for i in (0, 3, 6)] == [(5, 5), (3, 3), (3, 3)]
    assert [net.features[i].padding for i in (0, 3, 6)] == [(2, 2), (1, 1), (1, 1)]
    assert isinstance(net.classifier, nn.Linear) and net.classifier.in_features == 16 * 16
    assert list(net.state_dict()) == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
                                      "features.6.weight", "features.6.bias", "classifier.weight", "classifier.bias"]
    assert NetSpec().conv_names() == {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6"}


def test_spec_builds_the_layers_it_says():
    spec = NetSpec(widths=(6, 8, 10), kernels=(7,), strides=(2,), pool_after=(1, 3), pool="avg", pool_size=3,
                   pool_stride=2, fc=(12, 5), dropout=0.5, head_pool=2)
    net = ConvNet(spec, 3, 4)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (6, (7, 7), (2, 2), (3, 3)), (8, (3, 3), (1, 1), (1, 1)), (10, (3, 3), (1, 1), (1, 1))]
    pools = [m for m in net.features if isinstance(m, nn.AvgPool2d)]
    assert len(pools) == 2 and pools[0].kernel_size == 3 and pools[0].stride == 2
    assert spec.conv_names() == {"conv1": "features.0", "conv2": "features.3", "conv3": "features.5"}
    assert all(isinstance(net.features[int(v.split(".")[1])], nn.Conv2d) for v in spec.conv_names().values())
    lin = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(10 * 4, 12), (12, 5), (5, 4)]
    assert sum(isinstance(m, nn.Dropout) for m in net.classifier) == 3
    # 32 px: conv1 stride 2 -> 16, avg pool 3/2 -> 7, conv2 7, conv3 7, pool -> 3, head 2x2
    assert net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert NetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    alex, zf = ConvNet(NetSpec.alexnet(), 3, 2), ConvNet(NetSpec.zf(), 3, 2)
    assert (alex.features[0].kernel_size, alex.features[0].stride) == ((11, 11), (4, 4))
    assert (zf.features[0].kernel_size, zf.features[0].stride) == ((7, 7), (2, 2))


def test_variants_change_one_layer():
    base = NetSpec(widths=(4, 8, 16), kernels=(7, 5), strides=(2,), pool_after=(1, 3), fc=(32, 16))
    drop = base.variant("drop:conv2")
    assert (drop.widths, drop.conv_kernels(), drop.conv_strides(), drop.pooled()) == (
        (4, 16), [7, 3], [2, 1], [True, True])
    drop1 = base.variant("drop:conv1")
    assert (drop1.widths, drop1.conv_kernels(), drop1.pooled()) == ((8, 16), [5, 3], [False, True])
    assert base.variant("width:conv2=64").widths == (4, 64, 16)
    assert base.variant("kernel:conv3=5").conv_kernels() == [7, 5, 5]
    assert base.variant("stride:conv1=4").conv_strides() == [4, 1, 1]
    assert base.variant("pool:conv2=on").pooled() == [True, True, True]
    assert base.variant("pool:conv1=off").pooled() == [False, False, True]
    assert base.variant("drop:fc1").fc == (16,) and base.variant("width:fc2=3").fc == (32, 3)
    for bad, match in (("drop:conv4", "no layer 'conv4'"), ("grow:conv1=3", "unknown change"),
                       ("width:conv1", "positive integer"), ("kernel:fc1=3", "unknown change"),
                       ("drop:conv1=2", "takes no value"), ("drop:fc3", "no layer")):
        with pytest.raises(CnnscopeError, match=match):
            base.variant(bad)
    with pytest.raises(CnnscopeError, match="only convolution"):
        NetSpec(widths=(4,)).variant("drop:conv1")
    for bad in ({"widths": ()}, {"kernels": (3, 3, 3, 3)}, {"pool": "lp"}, {"dropout": 1.0}, {"pool_after": (5,)}):
        with pytest.raises(CnnscopeError):
            NetSpec(**bad)


def test_checkpoints_of_any_spec_load_as_models(tmp_path, one_thread):
    torch.manual_seed(0)
    spec = NetSpec(widths=(4, 6), kernels=(7,), strides=(2,), fc=(8,), dropout=0.3, pool="avg")
    net = ConvNet(spec, 3, 3).eval()
    m = wrap(net, 24, (0.5,) * 3, (0.25,) * 3, labels=["a", "b", "c"], name="tiny")
    path = save_checkpoint(m, tmp_path / "tiny.pt", 2, [{"epoch": 1}])
    back = load_model(str(path))
    assert back.source == "checkpoint" and back.extra["spec"] == spec and back.input_size == (24, 24)
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(back.module(x), net(x))
    # a checkpoint of earlier versions: the config holds the conv widths only
    old = torch.load(path, weights_only=True)
    small = SmallConvNet(1, 10, (4, 8)).eval()
    old.update(config={"in_channels": 1, "num_classes": 10, "widths": [4, 8]}, state_dict=small.state_dict(),
               mean=[0.5], std=[0.5], classes=[str(i) for i in range(10)])
    torch.save(old, tmp_path / "old.pt")
    m_old = load_checkpoint(tmp_path / "old.pt")
    assert m_old.extra["spec"] == NetSpec(widths=(4, 8)) and m_old.extra["step"] is None
    with torch.no_grad():
        torch.testing.assert_close(m_old.module(x[:, :1]), small(x[:, :1]))


def test_step_and_periodic_checkpoints(tmp_path, one_thread):
    data = _tiny_digits()
    r = train(data, spec=NetSpec(widths=(4, 8)), epochs=2, batch_size=24, checkpoint_every=2, checkpoint_steps=3,
              out=tmp_path)
    steps = 96 // 24  # 120 images, 24 held out
    assert sorted(r.checkpoints) == [0, 2] and sorted(r.step_checkpoints) == [0, 3, 6]
    assert [h["steps"] for h in r.history] == [steps, 2 * steps]
    m3 = load_checkpoint(r.step_checkpoints[3])
    assert m3.extra["step"] == 3 and m3.extra["epoch"] == pytest.approx(3 / steps)
    start, first = load_checkpoint(r.step_checkpoints[0]), load_checkpoint(r.checkpoints[0])
    assert all(torch.equal(a, b) for a, b in zip(start.module.state_dict().values(),
                                                 first.module.state_dict().values()))
    assert {"test_loss", "test_accuracy", "train_accuracy", "loss"} <= set(r.history[-1])
    with pytest.raises(CnnscopeError, match="output folder"):
        train(data, epochs=1, checkpoint_steps=2)
    with pytest.raises(CnnscopeError, match="not both"):
        train(data, spec=NetSpec(), widths=(4,))
    with pytest.raises(ModelError, match="shrink to nothing"):
        train(data, spec=NetSpec(widths=(4, 4, 4, 4, 4)), epochs=1)


def test_labelled_sources_class_folders_and_sample_photos(tmp_path):
    rng = np.random.default_rng(0)
    for cls, colour in (("red", 0), ("blue", 2)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            img = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            img[..., colour] += 180
            save_image(img, tmp_path / cls / f"{i}.png")
    ds = get_dataset(f"classes:{tmp_path}", 12)
    assert ds.classes == ["blue", "red"] and ds.images.shape == (6, 12, 12, 3)
    assert list(ds.labels) == [0, 0, 0, 1, 1, 1] and ds.images[0, ..., 2].mean() > ds.images[0, ..., 0].mean()
    photos = get_dataset("samples:3", 16)
    assert len(photos.classes) >= 2 and len(photos) == 3 * len(photos.classes)
    assert list(photos.labels[:4]) == [0, 0, 0, 1]
    with pytest.raises(ImageError, match="need crops"):
        get_dataset("samples", 16)
    with pytest.raises(ImageError, match="has no labels"):
        get_dataset(str(tmp_path / "red" / "*.png"), 16)


def test_cli_train_with_architecture_options_writes_curves(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    code = main(["-q", "train", "digits", "--preset", "zf", "--widths", "4,8", "--fc", "8", "--dropout", "0.2",
                 "--pool-after", "2", "--epochs", "1", "--checkpoints", "1", "--size", "16", "--out", str(out),
                 "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0
    assert "network: 7x7/2 4 | 3x3 8 +max | fc 8" in text
    doc = json.loads((out / "history.json").read_text())
    assert doc["spec"]["kernels"] == [7] and doc["spec"]["pool_after"] == [2] and doc["spec"]["fc"] == [8]
    assert (out / "curves.png").stat().st_size > 0
    m = load_model(str(out / "epoch_001.pt"))
    assert m.extra["spec"] == NetSpec.zf(widths=(4, 8), fc=(8,), dropout=0.2, pool_after=(2,), input_size=16)
