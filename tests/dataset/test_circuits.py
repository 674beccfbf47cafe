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
    np.testing.assert_array_equal(conn.weights, net.pw.weight[5].detach().numpy())
    assert conn.bias == pytest.approx(float(net.pw.bias[5].detach()))
    norms = conn.norms[conn.ranked()]
    assert (np.diff(norms) <= 0).all()
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
    np.testing.assert_allclose(conn.weights, net.features[0].weight[3].detach().numpy() * scale, rtol=1e-6)
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
        attr = attribution(model, layer, channel, image)
        if layer == "pw":
            with torch.no_grad(), evaluating(net), Capture(net, "pw") as cap:
                cap.run(x)
            pre = cap["pw"][0, channel]
        else:
            pre = _pre(net, x, layer)[0, channel]
        assert attr.value == pytest.approx(pre.max().item(), rel=1e-6)
        assert attr.tensor.sum() == pytest.approx(attr.value - attr.connection.bias, rel=1e-4, abs=1e-5)
        corner = attribution(model, layer, channel, image, position=(0, 0))  # the window covers padding
        assert corner.tensor.sum() == pytest.approx(pre[0, 0].item() - corner.connection.bias, rel=1e-4, abs=1e-5)
        top = attr.top(3)
        assert abs(top[0][1]) >= abs(top[-1][1])


def test_attribution_on_the_pretrained_model(lite0, samples):
    for layer in ("blocks.4.0.bn1.act", "blocks.4.0.bn2.act"):  # pointwise and depthwise convolutions
        attr = attribution(lite0, layer, 17, samples["chelsea"])
        assert attr.tensor.sum() == pytest.approx(attr.value - attr.connection.bias, rel=1e-3, abs=1e-3)
        pre = _pre(lite0.module, lite0.preprocess(samples["chelsea"]), layer)[0, 17]
        assert attr.value == pytest.approx(pre.max().item(), rel=1e-5)
    assert attribution(lite0, "blocks.4.0.bn1", 2, samples["coffee"]).connection.conv == "blocks.4.0.conv_pw"


def test_expanded_weights_of_adjacent_layers_are_the_kernel():
    net = ReLU6Net()
    ew = expanded_weights(net, "act1", "act2", 4, (20, 28), position=(5, 7))
    kernel = connection(net, "act2", 4).weights[0]
    assert ew.box == (4, 6, 7, 9)
    np.testing.assert_allclose(ew.window[4], kernel, rtol=1e-5, atol=1e-7)
    assert np.abs(np.delete(ew.weights, 4, axis=0)).max() == 0


def test_expanded_weights_through_a_nonlinearity_compose_the_kernels():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3, padding=1),
                        nn.ReLU(inplace=True), nn.Conv2d(5, 2, 3, padding=1))
    ew = expanded_weights(net, "1", "4", 1, 16, position=(8, 8))
    wb, wc = net[2].weight.detach().double(), net[4].weight.detach().double()
    want = torch.zeros(4, 5, 5, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            for p in range(3):
                for q in range(3):
                    want[:, a + p, b + q] += (wc[1, :, a, b][:, None] * wb[:, :, p, q]).sum(0)
    assert ew.box == (6, 6, 11, 11)
    np.testing.assert_allclose(ew.window, want.numpy(), rtol=1e-4, atol=1e-6)
    before = [p.grad for p in net.parameters()]
    assert all(g is None for g in before)


def test_model_unchanged_by_circuit_operations():
    net = InplaceReLUNet()
    model = wrap(net, input_size=(20, 28))
    image = RandomImages(1).images[0]
    assert assert_unchanged(net, lambda: attribution(model, "features.5", 2, image)) is None
    assert assert_unchanged(net, lambda: expanded_weights(net, "features.2", "features.5", 1, (20, 28))) is None
    err = assert_unchanged(net, lambda: expanded_weights(net, "features.5", "features.2", 1, (20, 28)))
    assert err is not None


def test_attribution_vector_feature_visualization_raises_the_direction():
    from cnnscope.featurevis import direction, measure

    net = ReLU6Net()
    model = wrap(net, input_size=(32, 32))
    image = RandomImages(1, size=(32, 32)).images[0]
    attr = attribution(model, "pw", 2, image)
    res = render_attribution(model, attr, "act2", steps=24, size=32, recipe="plain", seed=0)
    objective = direction("act2", attr.vector(8, absolute=True))
    noise = (np.random.default_rng(0).random((1, 32, 32, 3)) * 255).astype(np.uint8)
    assert measure(model, objective, res.images)[0] > measure(model, objective, noise)[0]
    with pytest.raises(LayerError, match="does not output the input"):
        render_attribution(model, attribution(model, "act2", 7, image), "pw", steps=1, size=32)
    assert render_attribution(model, attr, steps=1, size=32).spec is not None  # finds "act2" itself
