"""The true deconvnet through every conv-BN-activation form: plain BatchNorm2d (equal to Captum on vgg11_bn), timm's
fused BatchNormAct2d and ConvNormAct, torchvision's Conv2dNormActivation, depthwise and grouped convolutions, each
equal to the projection on a hand-folded copy (batch-norm folded into the conv weights, plain activation modules)
and to Captum's NeuronDeconvolution; non-ReLU activations refused by name."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from timm.layers import BatchNormAct2d, ConvNormAct
from torch import nn
from torchvision.ops import Conv2dNormActivation

from cnnscope.zf import DeconvError, project
from tests.conformance import assert_unchanged
from tests.models import seeded

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning:captum")]  # Captum's notes on its ReLU hooks


def captum_deconv():
    return pytest.importorskip("captum.attr", reason="captum is not installed (pip install '.[bench]')")


def random_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every batch-norm gets random affine parameters and nonzero running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.3)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return net.eval()


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` in eval mode as one convolution."""
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=True)
    with torch.no_grad():
        out.weight.copy_(conv.weight * s.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(s)
        out.bias.copy_((bias - bn.running_mean) * s + bn.bias)
    return out


def folded_copy(net: nn.Module) -> nn.Sequential:
    """A flat copy of a chain with every batch-norm folded into the convolution before it; a fused
    ``BatchNormAct2d`` leaves its activation as a separate (not in-place) module; identities and dropout go."""
    out: list[nn.Module] = []

    def visit(mod: nn.Module) -> None:
        if isinstance(mod, nn.Conv2d):
            out.append(copy.deepcopy(mod))
        elif isinstance(mod, nn.BatchNorm2d):
            assert isinstance(out[-1], nn.Conv2d)
            out[-1] = fold(out[-1], mod)
            if isinstance(mod, BatchNormAct2d):
                visit(mod.act)
        elif isinstance(mod, (nn.ReLU, nn.ReLU6)):
            out.append(type(mod)())
        elif list(mod.children()):
            for kid in mod.children():
                visit(kid)
        elif not isinstance(mod, (nn.Identity, nn.Dropout)):
            out.append(copy.deepcopy(mod))

    visit(net)
    return nn.Sequential(*out).eval()


def scaled(v: torch.Tensor) -> torch.Tensor:
    """Each map divided by its largest magnitude."""
    return v / v.abs().amax(dim=tuple(range(1, v.ndim)), keepdim=True)


def assert_same_maps(a: torch.Tensor, b: torch.Tensor) -> None:
    assert float(a.abs().max()) > 0 and float(b.abs().max()) > 0
    assert float((scaled(a) - scaled(b)).abs().max()) <= 1e-4


def captum_projection(net: nn.Module, layer: nn.Module, x: torch.Tensor, channel: int,
                      position: tuple[int, int]) -> torch.Tensor:
    """Captum's NeuronDeconvolution of one unit (it seeds with 1; the deconvnet projects the activation value)."""
    return captum_deconv().NeuronDeconvolution(net, layer).attribute(x, neuron_selector=(channel, *position))


def timm_chain(act: type[nn.Module] = nn.ReLU, drop: type[nn.Module] | None = None, last_act: bool = True
               ) -> nn.Sequential:
    """conv -> BatchNormAct2d -> maxpool -> conv -> BatchNormAct2d (random weights and statistics, eval)."""
    seeded(0)
    return random_bn(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), BatchNormAct2d(6, act_layer=act, drop_layer=drop),
                                   nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                                   BatchNormAct2d(8, act_layer=act, drop_layer=drop, apply_act=last_act)))


def mixed_chain(act: type[nn.Module]) -> nn.Sequential:
    """torchvision Conv2dNormActivation, max-pool, a depthwise Conv2dNormActivation, a grouped timm ConvNormAct."""
    seeded(1)
    return random_bn(nn.Sequential(Conv2dNormActivation(3, 8, 3), nn.MaxPool2d(2),
                                   Conv2dNormActivation(8, 8, 3, groups=8, activation_layer=act),
                                   ConvNormAct(8, 12, 3, groups=4, act_layer=act)), seed=1)


def live_channels(stack: nn.Module, x: torch.Tensor, n: int = 2) -> list[int]:
    """The ``n`` channels of ``stack(x)`` with the largest activation (live ones: a dead map projects nothing)."""
    with torch.no_grad():
        peak = stack(x).amax(dim=(0, 2, 3))
    assert int((peak > 0).sum()) >= n
    return peak.topk(n).indices.tolist()


def _images(seed: int, n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("build, layer, flat_layer", [
    (lambda: timm_chain(), "4", "4"),
    (lambda: timm_chain(drop=nn.Dropout), "4", "4"),  # BatchNormAct2d with a drop layer (identity in eval mode)
    (lambda: timm_chain(last_act=False), "4", "3"),  # ... and with an identity activation: a linear output
    (lambda: timm_chain(act=nn.ReLU6), "4", "4"),
    (lambda: mixed_chain(nn.ReLU), "3", "6"),
    (lambda: mixed_chain(nn.ReLU6), "3", "6"),
    (lambda: mixed_chain(nn.ReLU6), "2.1", "3"),  # inside a container: the depthwise conv's batch-norm
])
def test_fused_and_grouped_forms_equal_the_hand_folded_copy(build, layer, flat_layer):
    net = build()
    flat = folded_copy(net)
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(flat(x), net(x), rtol=1e-4, atol=1e-5)  # the copy computes the same function
    assert assert_unchanged(net, lambda: project(net, x, layer, channel=0)) is None  # no state of the net changes
    for c in live_channels(flat[:int(flat_layer) + 1], x):
        ours = project(net, x, layer, channel=c)
        ref = project(flat, x, flat_layer, channel=c)
        assert ours.method == "deconvnet" and ours.positions == ref.positions
        torch.testing.assert_close(ours.activations, ref.activations, rtol=1e-4, atol=1e-5)
        assert_same_maps(ours.values, ref.values)


@pytest.mark.parametrize("build, layer, module", [
    (lambda: timm_chain(), "4", lambda net: net[4]),
    (lambda: mixed_chain(nn.ReLU), "3", lambda net: net[3]),
])
def test_fused_forms_equal_captum_on_the_folded_copy(build, layer, module):
    net = build()
    flat = folded_copy(net)
    x = _images(3)
    for i in range(len(x)):
        for c in (1, 4):
            ours = project(net, x[i:i + 1], layer, channel=c)
            assert float(ours.activations[0]) > 0  # the strongest activation: rectification keeps its sign
            ref = captum_projection(flat, flat[-1], x[i:i + 1], c, ours.positions[0])
            assert_same_maps(ours.values, ref)
            direct = captum_projection(net, module(net), x[i:i + 1], c, ours.positions[0])  # Captum on the original
            assert_same_maps(ours.values, direct)


def test_vgg11_bn_equals_captum_neuron_deconvolution():
    from torchvision.models.vgg import cfgs, make_layers

    seeded(0)
    net = random_bn(make_layers(cfgs["A"], batch_norm=True), seed=2)  # vgg11_bn's feature stack, named "features"
    net = nn.Sequential(OrderedDict(features=net)).eval()
    x = _images(4, n=1, size=64)
    compared = 0
    for layer in ("features.13", "features.20"):
        for c in range(0, 256, 53):
            ours = project(net, x, layer, channel=c)
            if float(ours.activations[0]) <= 0:  # a dead channel: nothing to project
                continue
            ref = captum_projection(net, net.features[int(layer.split(".")[1])], x, c, ours.positions[0])
            assert_same_maps(ours.values, ref)
            compared += 1
    assert compared >= 6


@pytest.mark.parametrize("act, named", [
    (nn.SiLU, "cannot invert layer '1.act' (SiLU): the deconvnet's backward rule (rectify the signal) is defined "
              "for ReLU and ReLU6 only"),
    (nn.Hardswish, "cannot invert layer '1.act' (Hardswish)"),
])
def test_activations_without_a_deconvnet_rule_are_refused_by_name(act, named):
    net = timm_chain(act=act)
    err = assert_unchanged(net, lambda: project(net, _images(5), "4", channel=0))
    assert isinstance(err, DeconvError) and named in str(err) and "\n" not in str(err)
    assert err.reason in str(err) and "--method auto" in str(err) and "--method auto" not in err.reason


def test_plain_hardswish_module_is_refused_by_name():
    seeded(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    with pytest.raises(DeconvError, match=r"'1' \(Hardswish\): the deconvnet's backward rule"):
        project(net, _images(6), "3", channel=0)


@pytest.mark.parametrize("pre_activation", [False, True])
def test_a_layer_inside_a_fused_module_keeps_its_batch_norm(pre_activation):
    """``X.bn.act`` of timm's ConvNormAct: the fused ancestor's batch norm is part of the chain (found in review)."""
    from cnnscope.models import wrap
    from cnnscope.zf import choose_projector
    from cnnscope.zf.chain import build_chain
    from cnnscope.zf.steps import BatchNormStep

    torch.manual_seed(0)
    net = nn.Sequential(ConvNormAct(3, 8, 3, act_layer=nn.ReLU), nn.MaxPool2d(2),
                        ConvNormAct(8, 8, 3, act_layer=nn.ReLU)).eval()
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    chain = build_chain(net, "2.bn.act", (16, 16))
    assert [s.name for s in chain.steps if isinstance(s, BatchNormStep)] == ["0.bn", "2.bn"]
    lm = wrap(net, input_size=16)
    choice = choose_projector(lm, "2.bn.act", pre_activation=pre_activation)
    assert choice.method == "deconvnet", choice.line()
