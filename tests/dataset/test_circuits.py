"""Circuits: folded weights, activation x weight attribution sums, expanded weights against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.capture import Capture, evaluating
from cnnscope.dataset.circuits import attribution, connection, expanded_weights, render_attribution
from cnnscope.errors import LayerError
from cnnscope.models import wrap
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet, ReLU6Net

from .helpers import RandomImages


def _pre(module, x, layer):
    with torch.no_grad(), evaluating(module), Capture(module, layer, pre_activation=True) as cap:
        cap.run(x)
    return cap[layer]


def test_connection_of_a_plain_conv_is_its_kernel_ranked_by_norm():
    net = ReLU6Net()
    conn = connection(net, "pw", 5)
    assert conn.conv == "pw" and conn.norm is None and conn.inputs.tolist() == list(range(8))
    torch.testing.assert_close(conn.weights, net.pw.weight[5].detach(), rtol=0, atol=0)
    assert conn.bias == pytest.approx(float(net.pw.bias[5].detach()))
    norms = conn.norms[conn.ranked()]
    assert (norms.diff() <= 0).all()
    torch.testing.assert_close(conn.norms, net.pw.weight[5].detach().double().flatten(1).norm(dim=1))
    assert connection(wrap(net, input_size=(20, 28)), "pw", 5).ranked() == conn.ranked()  # a LoadedModel too
    dw = connection(net, "act2", 6)  # depthwise: one input channel, the unit's own
    assert dw.conv == "dw" and dw.inputs.tolist() == [6] and dw.weights.shape == (1, 3, 3)


def test_batch_norm_is_folded_and_verified():
    net = InplaceReLUNet()
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-1, 1)
        net.features[1].running_var.uniform_(0.5, 2)
        net.features[1].weight.uniform_(0.5, 1.5)
    conn = connection(net, "features.2", 3)
    assert (conn.conv, conn.norm) == ("features.0", "features.1")
    bn = net.features[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[3].item()
    np.testing.assert_allclose(conn.weights.numpy(), net.features[0].weight[3].detach().numpy() * scale, rtol=1e-6)
    with pytest.raises(LayerError, match="Conv2d, a BatchNorm2d"):
        connection(net, "features.3", 0)  # max-pooling
    with pytest.raises(LayerError, match="features.2"):
        connection(net, "features.22", 0)
    with pytest.raises(LayerError, match="out of range"):
        connection(net, "features.2", 8)


@pytest.mark.parametrize("kind,layer", [("relu6", "act2"), ("relu6", "pw"), ("inplace", "features.2"),
                                        ("inplace", "features.5")])
def test_attribution_sums_to_the_pre_activation_minus_bias(kind, layer):
    net = ReLU6Net() if kind == "relu6" else InplaceReLUNet()
    model = wrap(net, input_size=(20, 28))
    image = RandomImages(1).images[0]
    x = model.preprocess(image)
    for channel in (0, 3):
        attr = attribution(model, image, layer, channel=channel)
        if layer == "pw":
            with torch.no_grad(), evaluating(net), Capture(net, "pw") as cap:
                cap.run(x)
            pre = cap["pw"][0, channel]
        else:
            pre = _pre(net, x, layer)[0, channel]
        assert attr.value == pytest.approx(pre.max().item(), rel=1e-6)
        assert float(attr.tensor.sum()) == pytest.approx(attr.value - attr.connection.bias, rel=1e-4, abs=1e-5)
        corner = attribution(model, image, layer, channel=channel, position=(0, 0))  # the window covers padding
        assert float(corner.tensor.sum()) == pytest.approx(pre[0, 0].item() - corner.connection.bias, rel=1e-4,
                                                           abs=1e-5)
        h, w = pre.shape
        centre = attribution(model, image, layer, channel=channel, position="center")
        assert centre.position == (h // 2, w // 2) and centre.value == pytest.approx(pre[h // 2, w // 2].item())
        top = attr.top(3)
        assert abs(top[0][1]) >= abs(top[-1][1])


def test_attribution_on_the_pretrained_model(lite0, samples):
    for layer in ("blocks.4.0.bn1.act", "blocks.4.0.bn2.act"):  # pointwise and depthwise convolutions
        attr = attribution(lite0, samples["chelsea"], layer, channel=17)
        assert float(attr.tensor.sum()) == pytest.approx(attr.value - attr.connection.bias, rel=1e-3, abs=1e-3)
        pre = _pre(lite0.module, lite0.preprocess(samples["chelsea"]), layer)[0, 17]
        assert attr.value == pytest.approx(pre.max().item(), rel=1e-5)
    assert attribution(lite0, samples["coffee"], "blocks.4.0.bn1", channel=2).connection.conv == "blocks.4.0.conv_pw"


def test_expanded_weights_of_adjacent_layers_are_the_kernel():
    net = ReLU6Net()
    ew = expanded_weights(net, "act2", channel=4, from_layer="act1", position=(5, 7), input_size=(20, 28))
    kernel = connection(net, "act2", 4).weights[0]
    assert ew.box == (4, 6, 7, 9)
    torch.testing.assert_close(ew.window[4], kernel, rtol=1e-5, atol=1e-7)
    assert np.abs(np.delete(ew.weights.numpy(), 4, axis=0)).max() == 0
    same = expanded_weights(wrap(net, input_size=(20, 28)), "act2", channel=4, from_layer="act1", position=(5, 7))
    torch.testing.assert_close(same.weights, ew.weights)


def test_expanded_weights_through_a_nonlinearity_compose_the_kernels():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3, padding=1),
                        nn.ReLU(inplace=True), nn.Conv2d(5, 2, 3, padding=1))
    ew = expanded_weights(net, "4", channel=1, from_layer="1", position="center", input_size=16)
    wb, wc = net[2].weight.detach().double(), net[4].weight.detach().double()
    want = torch.zeros(4, 5, 5, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            for p in range(3):
                for q in range(3):
                    want[:, a + p, b + q] += (wc[1, :, a, b][:, None] * wb[:, :, p, q]).sum(0)
    assert ew.box == (6, 6, 11, 11)
    np.testing.assert_allclose(ew.window.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    before = [p.grad for p in net.parameters()]
    assert all(g is None for g in before)


def test_model_unchanged_by_circuit_operations():
    net = InplaceReLUNet()
    model = wrap(net, input_size=(20, 28))
    image = RandomImages(1).images[0]
    assert assert_unchanged(net, lambda: attribution(model, image, "features.5", channel=2)) is None
    assert assert_unchanged(net, lambda: expanded_weights(model, "features.5", channel=1,
                                                          from_layer="features.2")) is None
    err = assert_unchanged(net, lambda: expanded_weights(model, "features.2", channel=1, from_layer="features.5"))
    assert err is not None


def test_attribution_vector_feature_visualization_raises_the_direction():
    from cnnscope.featurevis import direction, measure

    net = ReLU6Net()
    model = wrap(net, input_size=(32, 32))
    image = RandomImages(1, size=(32, 32)).images[0]
    attr = attribution(model, image, "pw", channel=2)
    res = render_attribution(model, attr, from_layer="act2", steps=24, size=32, recipe="plain", seed=0)
    objective = direction("act2", attr.vector(8, absolute=True))
    noise = (np.random.default_rng(0).random((1, 32, 32, 3)) * 255).astype(np.uint8)
    assert measure(model, res.images, objective)[0] > measure(model, noise, objective)[0]
    with pytest.raises(LayerError, match="does not output the input"):
        render_attribution(model, attribution(model, image, "act2", channel=7), from_layer="pw", steps=1, size=32)
    assert render_attribution(model, attr, steps=1, size=32).spec is not None  # finds "act2" itself
