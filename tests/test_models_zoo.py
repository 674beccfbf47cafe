"""The model zoo: the embedded pretrained default, torchvision/timm by name, checkpoints, wrap()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope import ModelError, load_model, wrap
from cnnscope.models import efficientnet_lite0, imagenet_labels, list_models
from tests.models import InplaceReLUNet

CATS = {"Egyptian cat", "tiger cat", "tabby"}


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_lite0_predicts_real_photos(lite0, samples, mode):
    lite0.resize_mode = mode
    try:
        (chelsea, coffee) = lite0.predict([samples["chelsea"], samples["coffee"]], k=3)
    finally:
        lite0.resize_mode = "resize"
    assert chelsea[0][1] in CATS and {lab for _, lab, _ in chelsea} <= CATS | {"lynx"}
    assert sum(p for _, lab, p in chelsea if lab in CATS) > 0.6
    assert coffee[0][1] == "espresso" and coffee[0][2] > 0.5


def test_lite0_is_pretrained_in_eval_mode(lite0):
    assert lite0.pretrained and lite0.source == "embedded"
    assert not lite0.module.training
    assert lite0.input_size == (224, 224) and len(lite0.labels) == 1000
    relu6 = [m for m in lite0.module.modules() if isinstance(m, nn.ReLU6)]
    assert len(relu6) > 20


def test_weight_mapping_checks_shapes():
    import timm

    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    source = torch.load(efficientnet_lite0.weights_path(), map_location="cpu", weights_only=True)
    mapped = efficientnet_lite0.map_state_dict(source, target)
    assert list(mapped) == list(target)
    bad = dict(source)
    first = next(iter(bad))
    bad[first] = torch.zeros(1, 2, 3)
    with pytest.raises(ModelError, match="shape"):
        efficientnet_lite0.map_state_dict(bad, target)
    with pytest.raises(ModelError, match="entries"):
        efficientnet_lite0.map_state_dict(dict(list(source.items())[:-1]), target)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match="resnet18"):
        load_model("resnet_18")
    with pytest.raises(ModelError, match="unknown model source"):
        load_model("hub:resnet18")


def test_torchvision_model_is_random_and_says_so():
    m = load_model("resnet18")
    assert m.source == "torchvision" and not m.pretrained
    assert "RANDOM" in m.weights_note
    assert m.labels is not None and m.labels[0] == "tench"
    assert load_model("timm:resnet18").source == "timm"


def test_checkpoint_roundtrip_with_prefix_and_wrapper_key(tmp_path):
    src = load_model("resnet18")
    sd = {"module." + k: v for k, v in src.module.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    m = load_model("resnet18", weights=path)
    assert m.pretrained and str(path) in m.weights_note
    for (k, a), b in zip(src.module.state_dict().items(), m.module.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(src.module(x), m.module(x))


def test_checkpoint_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(load_model("resnet18").module.state_dict(), path)
    with pytest.raises(ModelError, match="do not fit"):
        load_model("vgg11", weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_model("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("resnet18", weights=tmp_path / "missing.pth")


def test_list_models_marks_pretrained(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: only embedded weights are here
    rows = list_models(include_timm=False)
    assert {k: rows[0][k] for k in ("name", "source", "pretrained", "weights")} == {
        "name": "efficientnet_lite0", "source": "embedded", "pretrained": True, "weights": "embedded"}
    names = {r["name"] for r in rows}
    assert {"resnet18", "vgg11", "alexnet", "inceptionv1", "googlenet", "torchvision:alexnet"} <= names
    assert {r["name"] for r in rows if r["pretrained"]} <= {"efficientnet_lite0", "efficientnet_lite1",
                                                            "efficientnet_lite2"}


def test_imagenet_labels_offline():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[281] == "tabby" and labels[967] == "espresso"


def test_wrap_user_module_and_preprocess_roundtrip(samples):
    net = InplaceReLUNet().train()
    m = wrap(net, input_size=(20, 28), labels=[f"c{i}" for i in range(10)])
    assert m.module is net and net.training  # wrap does not touch the module
    x = m.preprocess(samples["coffee"])
    assert x.shape == (1, 3, 20, 28)
    img = m.deprocess(x)
    assert img.dtype == np.uint8 and img.shape == (20, 28, 3)
    assert np.abs(img.astype(int) - m.fit_image(samples["coffee"]).astype(int)).max() <= 1
    assert m.class_index("C3") == 3 and m.label(3) == "c3"
    batch = m.preprocess([samples["coffee"], samples["chelsea"]])
    assert batch.shape == (2, 3, 20, 28)


def test_single_channel_model_gets_luma():
    m = wrap(nn.Conv2d(1, 2, 3), input_size=8, mean=[0.5], std=[0.25])
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 1] = 255  # pure green -> luma 0.587
    x = m.preprocess(img)
    assert x.shape == (1, 1, 8, 8)
    assert torch.allclose(x, torch.full_like(x, (0.587 - 0.5) / 0.25), atol=1e-5)


def test_class_index_errors(lite0):
    assert lite0.class_index("espresso") == 967
    with pytest.raises(Exception, match="did you mean"):
        lite0.class_index("esspresso")


def test_check_input_names_the_expected_shape(lite0):
    from cnnscope import ImageError

    x = torch.zeros(2, 3, 224, 224)
    assert lite0.check_input(x) is x
    with pytest.raises(ImageError, match=r"takes \[B,3,H,W\] tensors, got shape \(2, 4, 224, 224\)"):
        lite0.check_input(torch.zeros(2, 4, 224, 224))
    with pytest.raises(ImageError, match="add a batch dimension"):
        lite0.check_input(torch.zeros(3, 224, 224))
    with pytest.raises(ImageError, match="float"):
        lite0.check_input(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
