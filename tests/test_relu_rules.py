"""Guided-backprop and deconvnet backward rules: closed forms, in-place ReLU/ReLU6, reused modules."""

from __future__ import annotations

import pytest
import torch

from cnnscope import relu_rule
from cnnscope.errors import CnnscopeError, MethodError
from tests.models import FunctionalReLUNet, GuidedReLU, OneReLUNet, ResidualNet


def input_grad(net, x, rule=None):
    x = x.clone().requires_grad_()
    if rule is None:
        out = net(x)
        return torch.autograd.grad(out.sum(), x)[0]
    with relu_rule(net, rule):
        out = net(x)
        return torch.autograd.grad(out.sum(), x)[0]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("relu6", [False, True])
def test_closed_forms_on_one_relu_net(inplace, relu6):
    net = OneReLUNet(inplace=inplace, relu6=relu6)
    w1, w2 = net.fc1.weight, net.fc2.weight[0]
    x = 3 * torch.randn(7, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = x @ w1.T
        active = (h > 0) & (h < 6) if relu6 else h > 0
        plain = (active * w2) @ w1
        guided = (active * w2.clamp(min=0)) @ w1
        deconv = w2.clamp(min=0).expand(7, -1) @ w1
    assert active.any() and (~active).any()
    if relu6:
        assert (h > 6).any()
    assert torch.allclose(input_grad(net, x), plain, atol=1e-5)
    assert torch.allclose(input_grad(net, x, "guided"), guided, atol=1e-5)
    assert torch.allclose(input_grad(net, x, "deconv"), deconv, atol=1e-5)
    assert net.act.inplace is inplace and not net.act._forward_hooks
    # the forward value is unchanged by the rule
    with torch.no_grad(), relu_rule(net, "deconv"):
        assert torch.allclose(net(x), (h.clamp(0, 6) if relu6 else h.clamp(min=0)) @ w2[:, None])


def manual_guided_residual(net: ResidualNet, x: torch.Tensor) -> torch.Tensor:
    g = GuidedReLU.apply
    h = g(net.stem(x))
    for b in (net.layer1, net.layer2):
        r = g(b.bn1(b.conv1(h)))
        h = g(b.bn2(b.conv2(r)) + h)
    return net.fc(h.mean(dim=(2, 3)))


def test_guided_rule_on_reused_inplace_relu_matches_independent_implementation():
    net = ResidualNet().eval()
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(3))
    xr = x.clone().requires_grad_()
    ref = torch.autograd.grad(manual_guided_residual(net, xr)[:, 2].sum(), xr)[0]
    xg = x.clone().requires_grad_()
    with relu_rule(net, "guided") as n:
        got = torch.autograd.grad(net(xg)[:, 2].sum(), xg)[0]
    assert n == 3  # stem act + one reused relu per block
    assert torch.allclose(got, ref, atol=1e-6)
    assert not torch.allclose(got, input_grad(net, x), atol=1e-3)  # and it differs from the plain gradient


def test_rule_errors():
    with pytest.raises(MethodError, match="did you mean: guided"):
        with relu_rule(OneReLUNet(), "guidedd"):
            pass
    with pytest.raises(CnnscopeError, match="no nn.ReLU"):
        with relu_rule(FunctionalReLUNet(), "guided"):
            pass


def test_rule_restores_model_when_the_body_raises():
    net = OneReLUNet(inplace=True)
    with pytest.raises(RuntimeError), relu_rule(net, "guided"):
        assert net.act.inplace is False
        raise RuntimeError("boom")
    assert net.act.inplace is True and not net.act._forward_hooks
