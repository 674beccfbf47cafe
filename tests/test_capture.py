"""Capture: same tensors as a manual forward, stop_early changes nothing, reuse, gradients, pre-activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnscope import Capture, LayerError, capture, list_layers
from tests.models import ALL_TINY, NON_SQUARE, InplaceReLUNet, ReLU6Net, ResidualNet


def manual_inplace_features(net: InplaceReLUNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    f = net.features
    out = {}
    h = f[0](x)
    out["features.0"] = h.clone()
    h = f[1](h)
    out["features.1"] = h.clone()
    h = torch.relu(h)
    out["features.2"] = h.clone()
    h = f[3](h)
    out["features.3"] = h.clone()
    h = f[4](h)
    out["features.4"] = h.clone()
    out["features.5"] = torch.relu(h)
    return out


def test_capture_equals_manual_forward_despite_inplace_relu():
    net = InplaceReLUNet().eval()
    x = torch.randn(*NON_SQUARE)
    names = [f"features.{i}" for i in range(6)]
    with torch.no_grad():
        ref = manual_inplace_features(net, x)
        got = capture(net, x, names)
    for n in names:
        assert torch.allclose(got[n], ref[n], atol=1e-6), n
    # the conv output was overwritten in place by the ReLU; the capture kept the pre-ReLU values
    assert (got["features.1"] < 0).any() and not (got["features.2"] < 0).any()


@pytest.mark.parametrize("name", sorted(ALL_TINY))
def test_stop_early_gives_identical_activations(name):
    net = ALL_TINY[name]().eval()
    layers = [info.name for info in list_layers(net, NON_SQUARE[2:]) if info.calls == 1][:3]
    x = torch.randn(*NON_SQUARE)
    with torch.no_grad():
        full = capture(net, x, layers, stop_early=False)
        with Capture(net, layers) as cap:
            first = cap.run(x)
            second = cap.run(x)
            assert first is not None and second is None and cap.stopped
            early = dict(cap.activations)
    for n in layers:
        assert torch.equal(full[n], early[n]), n


def test_stop_early_really_skips_the_rest():
    net = ResidualNet().eval()
    ran = []
    orig = net.fc.forward
    net.fc.forward = lambda x: (ran.append(1), orig(x))[1]
    try:
        with torch.no_grad(), Capture(net, "stem") as cap:
            cap.run(torch.randn(1, 3, 8, 8))
            assert len(ran) == 1
            cap.run(torch.randn(1, 3, 8, 8))
            assert len(ran) == 1
    finally:
        del net.fc.forward


def test_reused_module_is_an_error_unless_asked():
    net = ResidualNet().eval()
    x = torch.randn(*NON_SQUARE)
    with pytest.raises(LayerError, match="ran 2 times"), Capture(net, "layer1.relu") as cap:
        cap.run(x)
    with torch.no_grad(), Capture(net, "layer1.relu", reuse="all") as cap:
        cap.run(x)
        first, second = cap["layer1.relu"]
    with torch.no_grad(), Capture(net, "layer1.relu", reuse="last") as cap:
        cap.run(x)
        last = cap["layer1.relu"]
    with torch.no_grad():
        b = net.layer1
        h = net.act(net.stem(x))
        r1 = torch.relu(b.bn1(b.conv1(h)))
        r2 = torch.relu(b.bn2(b.conv2(r1)) + h)
    assert torch.allclose(first, r1, atol=1e-6) and torch.allclose(second, r2, atol=1e-6)
    assert torch.equal(last, second)


def test_gradients_match_autograd_with_inplace_and_reuse():
    net = ResidualNet().eval()
    x = torch.randn(*NON_SQUARE)
    with Capture(net, ["stem", "layer1.relu"], grads=True, reuse="all") as cap:
        out = cap.run(x)
        out[:, 1].sum().backward()
    s = net.stem(x).detach().requires_grad_()
    b = net.layer1
    h = torch.relu(s)
    r1 = torch.relu(b.bn1(b.conv1(h)))
    r1.retain_grad()
    r2 = torch.relu(b.bn2(b.conv2(r1)) + h)
    r2.retain_grad()
    o = net.fc(net.layer2(r2).mean(dim=(2, 3)))
    o[:, 1].sum().backward()
    assert torch.allclose(cap.grads["stem"][0], s.grad, atol=1e-6)
    g1, g2 = cap.grads["layer1.relu"]
    assert torch.allclose(g1, r1.grad, atol=1e-6) and torch.allclose(g2, r2.grad, atol=1e-6)
    for p in net.parameters():
        p.grad = None


def test_pre_activation_captures_input_of_inplace_activation():
    net = ReLU6Net().eval()
    x = torch.randn(*NON_SQUARE)
    with torch.no_grad():
        pre = capture(net, x, "act1", pre_activation=True)["act1"]
        ref = net.conv1(x)
    assert torch.allclose(pre, ref) and (pre < 0).any()
    with pytest.raises(LayerError, match="activation"):
        Capture(net, "conv1", pre_activation=True)


def test_layer_errors_are_actionable():
    net = InplaceReLUNet()
    with pytest.raises(LayerError, match="did you mean: features.4"):
        Capture(net, "feature.4")
    with pytest.raises(LayerError, match="non-empty"):
        Capture(net, [""])
    with pytest.raises(LayerError, match="inside"):
        Capture(net, "fc").run(torch.randn(1, 3, 8, 8))

    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Identity(), nn.Identity()

        def forward(self, x):
            return self.used(x)

    with pytest.raises(LayerError, match="did not run in the forward pass: unused"):
        with Capture(Skips(), ["used", "unused"]) as cap:
            cap.run(torch.zeros(1))


def test_list_layers_on_non_square_input():
    net = InplaceReLUNet()
    infos = {i.name: i for i in list_layers(net, NON_SQUARE[2:])}
    assert infos["features.0"].output_shape == (8, 20, 28) and infos["features.0"].kind == "Conv2d"
    assert infos["features.3"].spatial == (10, 14)
    assert infos["fc"].output_shape == (10,) and infos["fc"].params == 16 * 10 + 10
    assert [i.name for i in list_layers(net, 8)][:2] == ["features", "features.0"]
    res = {i.name: i for i in list_layers(ResidualNet(), 8)}
    assert res["layer1.relu"].calls == 2 and res["stem"].calls == 1


def test_lite0_layer_shapes(lite0):
    infos = {i.name: i for i in list_layers(lite0.module, 224)}
    assert infos["blocks.4.0"].output_shape == (112, 14, 14)
    assert infos["conv_head"].output_shape == (1280, 7, 7)
    assert infos["blocks.4.0.bn1.act"].kind == "ReLU6"


def test_layer_times_follow_execution_order_and_share_outputs():
    from cnnscope.capture import layer_times

    from .models import ResidualNet

    net = ResidualNet().eval()
    x = torch.randn(2, 3, 16, 16)
    t = layer_times(net, x, ["stem", "act", "layer1", "layer1.conv2", "layer2", "fc"], runs=2)
    assert list(t) == ["stem", "act", "layer1.conv2", "layer1", "layer2", "fc"]  # exit order
    shares = [v.share for v in t.values()]
    assert shares == sorted(shares) and 0 < shares[0] and shares[-1] <= 1
    assert t["layer1"].shape == (2, 8, 16, 16) and t["fc"].shape == (2, 5)
    assert t["stem"].output == t["act"].output  # in-place ReLU returns the stem's tensor
    assert t["layer1"].output != t["layer2"].output
    assert t["act"].calls == 1
    assert not any(h for m in net.modules() for h in m._forward_hooks.values())


def test_receptive_fields_of_a_model_that_asserts_its_input_size():
    """torchvision's ViT refuses the narrow slab probes (it asserts its image size): the exact probe measures
    instead. A patch embedding sees its own patch; an encoder layer sees the whole image."""
    from torchvision.models import VisionTransformer

    from cnnscope.capture.receptive_field import receptive_fields

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5).eval()
    rf = receptive_fields(vit, ["conv_proj", "encoder.layers.encoder_layer_0"], 32)
    patch, enc = rf["conv_proj"], rf["encoder.layers.encoder_layer_0"]
    assert patch.output_size == enc.output_size == (4, 4)
    for r in range(4):
        for c in range(4):
            assert patch.boxes[r, c].tolist() == [8 * r, 8 * c, 8 * r + 8, 8 * c + 8]
            assert enc.boxes[r, c].tolist() == [0, 0, 32, 32]
