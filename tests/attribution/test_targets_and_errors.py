"""Targets (index, label, per image, callable, unit) with real values, and errors a person can act on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope import unit, wrap
from cnnscope.attribution import TargetError, attribute, auto_layer
from cnnscope.errors import CnnscopeError, ImageError, LayerError, MethodError
from tests.conformance import assert_unchanged
from tests.models import FunctionalReLUNet, GapLinearNet, InplaceReLUNet, ResidualNet

pytestmark = pytest.mark.usefixtures("single_thread")


def x_of(shape=(2, 3, 12, 14), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- targets ---------------------------------------------------------------------------------------------
def test_label_targets_and_mixed_per_image_list():
    net = GapLinearNet()
    m = wrap(net, input_size=(12, 14), labels=["cat", "dog", "bird"])
    x = x_of((3, 3, 12, 14))
    a = attribute(m, x, "saliency", target=[None, "Dog", 2])
    with torch.no_grad():
        top = int(net.eval()(x[:1]).argmax())
    assert a.target == [top, 1, 2]
    assert a.spec["target"]["labels"][1] == "dog (1)"
    b = attribute(m, x, "saliency", target="bi")  # a unique prefix
    assert b.target == [2, 2, 2]


def test_callable_target_is_linear_in_the_gradient():
    net, x = InplaceReLUNet(), x_of()
    diff = attribute(net, x, "saliency", target=lambda out: out[:, 3] - out[:, 1])
    a3 = attribute(net, x, "saliency", target=3).values
    a1 = attribute(net, x, "saliency", target=1).values
    torch.testing.assert_close(diff.values, a3 - a1)
    assert diff.target is None and diff.spec["target"]["kind"] == "callable"


def test_unit_target_neuron_gradient_is_the_conv_kernel():
    net = InplaceReLUNet()
    x = x_of((1, 3, 12, 14))
    conv = net.features[0]
    a = attribute(net, x, "saliency", target=unit("features.0", 5, (4, 6)))
    want = torch.zeros_like(x)
    want[0, :, 3:6, 5:8] = conv.weight.detach()[5]  # 3x3 kernel, padding 1, centred on (row 4, col 6)
    torch.testing.assert_close(a.values, want)
    with torch.no_grad():
        assert float(a.scores[0]) == pytest.approx(float(conv(x)[0, 5, 4, 6]), rel=1e-5)
    centre = attribute(net, x, "saliency", target=unit("features.0", 5, "center"))  # 12x14 -> (6, 7)
    want = torch.zeros_like(x)
    want[0, :, 5:8, 6:9] = conv.weight.detach()[5]
    torch.testing.assert_close(centre.values, want)


def test_unit_target_max_position_is_the_strongest_neuron_per_image():
    net, x = InplaceReLUNet(), x_of()
    conv = net.features[0]
    with torch.no_grad():
        act = conv(x)[:, 5]
    a = attribute(net, x, "saliency", target=unit("features.0", 5, "max"))
    torch.testing.assert_close(a.scores, act.flatten(1).amax(1))
    for b in range(2):
        r, c = divmod(int(act[b].flatten().argmax()), act.shape[-1])
        padded = torch.zeros(3, 14, 16)  # the input with conv's padding of 1
        padded[:, r:r + 3, c:c + 3] = conv.weight.detach()[5]
        torch.testing.assert_close(a.values[b], padded[:, 1:-1, 1:-1])


def test_unit_target_channel_mean_matches_autograd_and_works_for_cams():
    net, x = InplaceReLUNet(), x_of()
    a = attribute(net, x, "saliency", target=unit("features.4", 7))
    xg = x.clone().requires_grad_(True)
    net.eval()
    score = net.features[:5](xg)[:, 7].mean(dim=(1, 2)).sum()
    (want,) = torch.autograd.grad(score, xg)
    torch.testing.assert_close(a.values, want)
    cam = attribute(net, x, "gradcam", target=unit("features.4", 7), layer="features.0")
    assert cam.values.shape == (2, 1, 12, 14)
    with pytest.raises(LayerError, match="after the CAM layer"):
        attribute(net, x, "gradcam", target=unit("features.0", 1), layer="features.4")


# -- errors ----------------------------------------------------------------------------------------------
def test_unknown_method_and_option_suggest_close_names():
    net, x = GapLinearNet(), x_of()
    with pytest.raises(MethodError, match="did you mean: gradcam"):
        attribute(net, x, "gradcan")
    with pytest.raises(MethodError, match="did you mean: window"):
        attribute(net, x, "occlusion", windw=4)
    with pytest.raises(MethodError, match="quadrature"):
        attribute(net, x, "integrated_gradients", quadrature="simpson")
    with pytest.raises(MethodError, match="base method"):
        attribute(net, x, "smoothgrad", base="gradcam")
    with pytest.raises(MethodError, match="stride"):
        attribute(net, x, "occlusion", window=4, stride=5)
    for bad in (0, 2.0, True):
        with pytest.raises(MethodError, match="batch_size .* must be a positive int"):
            attribute(net, x, "rise", batch_size=bad)
    a = attribute(net, x, "occlusion", window=4, stride=2, batch_size=64)  # one forward
    b = attribute(net, x, "occlusion", window=4, stride=2, batch_size=1, channels_last=False)  # one per copy
    torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-6)
    with pytest.raises(MethodError, match="did you mean: batch_size"):
        attribute(net, x, "integrated_gradients", internal_batch_size=4)


def test_target_errors():
    net, x = GapLinearNet(num_classes=3), x_of()
    with pytest.raises(TargetError, match="out of range: the model has 3 outputs"):
        attribute(net, x, "saliency", target=3)
    with pytest.raises(TargetError, match="2 images"):
        attribute(net, x, "saliency", target=[0, 1, 2])
    for negative in (-1, "-1", [0, -2]):  # never "the top class": that is None
        with pytest.raises(TargetError, match="negative"):
            attribute(net, x, "saliency", target=negative)
    with pytest.raises(TargetError, match="has no class labels; give a class index"):
        attribute(net, x, "saliency", target="cat")
    m = wrap(net, input_size=(12, 14), labels=["cat", "dog", "bird"])
    with pytest.raises(TargetError, match="did you mean: dog"):
        attribute(m, x, "saliency", target="dgo")
    with pytest.raises(LayerError, match="channel 99 is outside layer 'features.0'"):
        attribute(net, x, "saliency", target=unit("features.0", 99))
    with pytest.raises(LayerError, match=r"position \(20, 0\) is outside layer 'features.0'"):
        attribute(net, x, "saliency", target=unit("features.0", 1, (20, 0)))
    with pytest.raises(LayerError, match="did you mean"):
        attribute(net, x, "saliency", target=unit("feature.0", 1))


def test_cam_layer_errors():
    net, x = InplaceReLUNet(), x_of()
    for layer in ("fc", "pool"):  # [B, 10] and [B, 16, 1, 1]: no spatial extent
        with pytest.raises(LayerError, match="without spatial extent"):
            attribute(net, x, "gradcam", layer=layer)
    with pytest.raises(LayerError, match="without spatial extent"):
        attribute(net, x, "scorecam", layer="pool")
    with pytest.raises(LayerError, match="did you mean"):
        attribute(net, x, "gradcam", layer="featurs")
    res = ResidualNet().train()
    assert assert_unchanged(res, lambda: auto_layer(res, input_size=(12, 14))) is None
    with pytest.raises(LayerError, match="more than once"):
        attribute(res, x, "gradcam", layer="layer1.relu")  # one ReLU module used twice per block
    assert auto_layer(res, input_size=(12, 14)) == "layer2"
    assert auto_layer(wrap(net, input_size=(12, 14))) == "features"


def test_images_go_through_the_models_one_input_check():
    net = GapLinearNet()
    with pytest.raises(ImageError, match="one size, got shapes 3x10x12, 3x12x14"):
        attribute(net, [x_of((3, 12, 14)), x_of((3, 10, 12))], "saliency")
    same = attribute(net, [x_of((3, 12, 14)), x_of((3, 12, 14), seed=1)], "saliency")
    assert same.values.shape == (2, 3, 12, 14)
    with pytest.raises(ImageError, match="NaN or infinite"):
        attribute(net, torch.full((1, 3, 8, 8), float("nan")), "saliency")
    with pytest.raises(ImageError, match=r"takes \[B,3,H,W\] tensors"):
        attribute(net, x_of((1, 4, 8, 8)), "saliency")
    # pictures (arrays) of different sizes are resized to the model's input size
    m = wrap(net, input_size=(12, 14))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), rng.integers(0, 255, (17, 9, 3), dtype=np.uint8)]
    a = attribute(m, imgs, "gradcam")
    assert a.values.shape == (2, 1, 12, 14)
    torch.testing.assert_close(a.values, attribute(m, m.preprocess(imgs), "gradcam").values)


def test_a_plain_module_and_its_wrap_give_identical_attributions():
    net = ResidualNet()
    x = x_of()
    for method, opts in (("saliency", {}), ("gradcam", {}), ("integrated_gradients", {"n_steps": 4}),
                         ("occlusion", {"window": 4, "stride": 4})):
        plain = attribute(net, x, method, target=[1, 3], **opts)
        wrapped = attribute(wrap(net, input_size=(12, 14)), x, method, target=[1, 3], **opts)
        assert torch.equal(plain.values, wrapped.values), method
        assert plain.spec == wrapped.spec and plain.layer == wrapped.layer


def test_a_plain_module_with_1000_outputs_gets_imagenet_labels():
    net = GapLinearNet(num_classes=1000)
    a = attribute(net, x_of(), "saliency", target="tabby")
    assert a.target == [281, 281] and a.spec["target"]["labels"][0] == "tabby (281)"


def test_options_and_method_arguments_are_keyword_only():
    from cnnscope.attribution import explain, get_method

    net, x = GapLinearNet(), x_of()
    with pytest.raises(TypeError):
        attribute(net, x, "saliency", 1)
    with pytest.raises(TypeError):
        get_method("saliency")(net).attribute(x, 1)
    with pytest.raises(TypeError):
        get_method("saliency")(net, 32)
    with pytest.raises(TypeError):
        auto_layer(net, (12, 14))
    with pytest.raises(TypeError):
        explain(net, x, ["saliency"])


def test_relu_rules_need_relus():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    with pytest.raises(CnnscopeError, match="runs no ReLU"):
        attribute(net, x_of(), "guided_backprop")
    # a net whose ReLUs are function calls gets the rule (tests/attribution/test_robustness.py checks the values)
    assert attribute(FunctionalReLUNet(), x_of(), "guided_backprop").spec["relu_rule"]


@pytest.mark.parametrize("call", [
    lambda net, x: attribute(net, x, "gradcam", layer="fc"),
    lambda net, x: attribute(net, x, "saliency", target=99),
    lambda net, x: attribute(net, x, "gradcam", target=unit("features.0", 1), layer="features.4"),
    lambda net, x: attribute(net, x, "occlusion", target=lambda out: out),  # not one value per image
    lambda net, x: attribute(net, x, "scorecam", target=unit("features.0", 99)),
])
def test_failing_calls_leave_the_model_unchanged(call):
    net = InplaceReLUNet().train()
    err = assert_unchanged(net, lambda: call(net, x_of()))
    assert isinstance(err, CnnscopeError), err
    assert torch.is_grad_enabled()
