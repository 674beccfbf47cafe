"""The true deconvnet: unpooling, a closed form, equality with the backward-rule deconvnet, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnscope.errors import ImageError, LayerError
from cnnscope.models import wrap
from cnnscope.zf import DeconvError, DeconvNet, project, rule_projection, unpool
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet, ResidualNet


def test_unpool_puts_values_exactly_at_the_switches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 10, generator=g)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    values = torch.randn(y.shape, generator=g)
    out = unpool(values, idx, (8, 10))
    flat = out.flatten(2)
    assert torch.equal(flat.gather(2, idx.flatten(2)), values.flatten(2))
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, idx.flatten(2), True)
    assert torch.count_nonzero(flat[~mask]) == 0
    assert torch.equal(flat.gather(2, idx.flatten(2)).flatten(2).argmax(2), values.flatten(2).argmax(2))


def test_unpool_adds_values_of_overlapping_windows_that_share_a_switch():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 9.0  # the centre is the maximum of all four 2x2 windows (stride 1)
    y, idx = F.max_pool2d(x, 2, stride=1, return_indices=True)
    out = unpool(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), idx, (3, 3))
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 1, 1] = 10.0
    assert torch.equal(out, expected)


@pytest.mark.parametrize("relu", [nn.ReLU, nn.ReLU6])
def test_relu_then_1x1_conv_gives_the_closed_form(relu):
    torch.manual_seed(0)
    net = nn.Sequential(relu(), nn.Conv2d(3, 4, 1))
    x = torch.randn(1, 3, 5, 6, generator=torch.Generator().manual_seed(1)) * 4
    c, (r, k) = 2, (3, 4)
    p = project(net, x, "1", channel=c, position=(r, k))
    w, bias = net[1].weight[:, :, 0, 0].detach(), net[1].bias.detach()
    act = float((w[c] * x[0, :, r, k].clamp(0, 6 if relu is nn.ReLU6 else None)).sum() + bias[c])
    assert float(p.activations[0]) == pytest.approx(act, rel=1e-6)
    expected = torch.zeros_like(x)
    expected[0, :, r, k] = (w[c] * act).clamp(min=0)  # transposed 1x1 filter, then rectification
    torch.testing.assert_close(p.values, expected)
    assert p.boxes == [(r, k, r + 1, k + 1)] and p.positions == [(r, k)]


def test_whole_map_of_a_1x1_conv_is_the_sum_of_its_seeds_per_pixel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 1))
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1)) * 4
    c = 1
    p = project(net, x, "1", channel=c, position=None)
    with torch.no_grad():
        acts = net(x)[:, c]  # [2, 5, 6]
    w = net[1].weight[c, :, 0, 0].detach()
    expected = (w.view(1, 3, 1, 1) * acts.unsqueeze(1)).clamp(min=0)  # a 1x1 conv keeps pixels apart
    torch.testing.assert_close(p.values, expected)
    assert p.positions is None and p.boxes == [(0, 0, 5, 6)] * 2
    torch.testing.assert_close(p.activations, acts.flatten(1).mean(1))  # read_unit: the map's mean
    rule = rule_projection(net, x, "1", channel=c, position=None)
    torch.testing.assert_close(rule.values, expected)


def _nets():
    torch.manual_seed(0)
    return {"alexnet": (torchvision.models.alexnet().eval(), 127, ["features.12", "features.7"]),
            "vgg11": (torchvision.models.vgg11().eval(), 64, ["features.19", "features.10"])}


@pytest.fixture(scope="module")
def nets(one_thread):
    return _nets()


@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_true_deconvnet_equals_backward_rule_deconvnet(nets, name):
    from cnnscope import unit
    from cnnscope.attribution import attribute

    model, size, layers = nets[name]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    for layer in layers:
        net = DeconvNet(model, layer, input_size=size)
        trace = net.forward(x)
        acts = trace.activations[0]
        chans = acts.flatten(1).amax(1).topk(3).indices  # three strongly active channels
        pos = [divmod(int(acts[c].flatten().argmax()), acts.shape[-1]) for c in chans]
        batch = net.backward(trace, torch.zeros(3, dtype=torch.long), chans, torch.tensor(pos))
        for j, (c, (r, k)) in enumerate(zip(chans.tolist(), pos)):
            ref = rule_projection(model, x, layer, channel=c, position=(r, k))
            scale = float(ref.values.abs().max())
            assert scale > 0
            assert float((batch[j] - ref.values[0]).abs().max()) <= 1e-5 * scale
            # the attribution package's backward-rule method explains the unit with a unit seed
            attr = attribute(model, x, "deconvnet", target=unit(layer, c, (r, k))).values
            assert float((batch[j] - ref.activations[0] * attr[0]).abs().max()) <= 1e-5 * scale
        single = project(model, x, layer, channel=int(chans[0]))
        assert single.positions == [pos[0]]
        torch.testing.assert_close(single.values[0], batch[0])


def test_projection_lies_inside_its_receptive_field(nets):
    model, size, _ = nets["alexnet"]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    p = project(model, x, "features.10", channel=5)
    t, left, b, r = p.boxes[0]
    inside = torch.zeros_like(p.values, dtype=torch.bool)
    inside[..., t:b, left:r] = True
    assert torch.count_nonzero(p.values[~inside]) == 0
    assert torch.count_nonzero(p.values[inside]) > 0


def test_receptive_fields_agree_with_the_nan_probe_measurement(nets):
    rf_mod = pytest.importorskip("cnnscope.capture.receptive_field")
    model, size, layer = nets["vgg11"][0], 32, "features.10"  # a 4x4 map at 32 px: 64 probe images
    net = DeconvNet(model, layer, input_size=size)
    measured = rf_mod.receptive_fields(model, [layer], (size, size))[layer]
    h, w = measured.output_size
    for r in range(h):
        for c in range(w):
            assert net.receptive_field((r, c)) == measured.box(r, c)


def test_inplace_relu_batchnorm_net_in_training_mode_is_left_unchanged():
    net = InplaceReLUNet().train()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    err = assert_unchanged(net, lambda: project(net, x, "features.5", channel=3))
    assert err is None
    p = project(net, x, "features.5", channel=3)
    with torch.no_grad():
        net.eval()
        ref = net.features(x)[0, 3].max()
        net.train()
    assert float(p.activations[0]) == pytest.approx(float(ref), rel=1e-5)
    assert assert_unchanged(net, lambda: rule_projection(net, x, "features.5", channel=3)) is None


@pytest.mark.parametrize("layer, named", [("layer2.conv1", "'layer1' (BasicBlock)"),
                                          ("fc", "'fc' (Linear)")])
def test_unsupported_modules_are_named_and_the_backward_rule_is_suggested(layer, named):
    net = ResidualNet()
    x = torch.randn(1, 3, 10, 10)
    err = assert_unchanged(net, lambda: project(net, x, layer, channel=0))
    assert isinstance(err, DeconvError)
    assert named in str(err) and "backward-rule" in str(err) and "--method rule" in str(err)
    assert project(net, x, "layer1.conv2", channel=0).values.shape == x.shape  # before the first residual add: fine


def test_unknown_leaf_and_functional_ops_are_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(DeconvError, match=r"'1' \(SiLU\)"):
        project(net, torch.randn(1, 3, 9, 9), "2", channel=0)

    class Normalising(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

        def forward(self, x):
            return self.features(x * 2 - 1)

    with pytest.raises(DeconvError, match="not a module"):
        project(Normalising(), torch.randn(1, 3, 9, 9), "features.1", channel=0)


def test_efficientnet_lite0_is_inverted_through_its_fused_modules_and_refused_at_its_first_residual_add(lite0):
    x = torch.zeros(1, 3, 64, 64)
    assert project(lite0, x, "blocks.1.0", channel=0).method == "deconvnet"  # BatchNormAct2d, depthwise convs
    with pytest.raises(DeconvError, match=r"'blocks.1.1' \(InvertedResidual\)"):
        project(lite0, x, "blocks.2", channel=0)


def test_bad_channel_position_and_input_are_reported():
    net = InplaceReLUNet().eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(LayerError, match="channel 99 is outside layer"):
        project(net, x, "features.5", channel=99)
    with pytest.raises(LayerError, match="outside layer"):
        project(net, x, "features.5", channel=0, position=(10, 0))
    with pytest.raises(LayerError, match="a position is"):
        rule_projection(net, x, "features.5", channel=0, position="corner")
    with pytest.raises(ImageError, match=r"\[B,3,H,W\]"):
        project(net, torch.randn(2, 1, 8, 8), "features.5", channel=0)
    with pytest.raises(LayerError, match="did you mean"):
        project(net, x, "features.55", channel=0)
    with pytest.raises(TypeError):
        project(net, x, "features.5", 0)  # everything after the layer is keyword-only
    with pytest.raises(LayerError, match="not a ReLU"):
        project(net, x, "features.4", channel=0, pre_activation=True)


def _stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU())


def test_a_plain_module_and_its_wrapper_give_identical_projections():
    net = _stack().eval()
    x = torch.randn(3, 3, 14, 14, generator=torch.Generator().manual_seed(4))
    plain = project(net, x, "4", channel=2, batch_size=2)
    wrapped = project(wrap(net, 14), x, "4", channel=2)
    torch.testing.assert_close(plain.values, wrapped.values)
    assert plain.positions == wrapped.positions and plain.boxes == wrapped.boxes
    for position in ("max", "center", (1, 2), None):
        a = rule_projection(net, x, "4", channel=5, position=position, batch_size=1)
        b = rule_projection(wrap(net, 14), x, "4", channel=5, position=position)
        torch.testing.assert_close(a.values, b.values)
        torch.testing.assert_close(project(net, x, "4", channel=5, position=position).values, a.values,
                                   rtol=1e-4, atol=1e-5 * float(a.values.abs().max()))


def test_every_image_is_projected_as_if_alone():
    net = _stack().eval()
    x = torch.randn(4, 3, 14, 14, generator=torch.Generator().manual_seed(5))
    batch = project(net, x, "4", channel=1, position="center", batch_size=3)
    assert batch.positions == [(2, 2)] * 4 and batch.values.shape == (4, 3, 14, 14)
    for i in range(4):
        alone = project(net, x[i], "4", channel=1, position="center")
        torch.testing.assert_close(batch.values[i:i + 1], alone.values)
        torch.testing.assert_close(batch.activations[i:i + 1], alone.activations)
    pics = batch.pictures()
    assert pics.shape == (4, 14, 14, 3) and pics.dtype == np.uint8


def test_pre_activation_projects_the_input_of_the_relu():
    net = _stack().eval()
    x = torch.randn(2, 3, 14, 14, generator=torch.Generator().manual_seed(6))
    pre = project(net, x, "4", channel=3, position=(2, 1), pre_activation=True)
    conv = project(net, x, "3", channel=3, position=(2, 1))  # the ReLU's input is the conv's output
    torch.testing.assert_close(pre.values, conv.values)
    torch.testing.assert_close(pre.activations, conv.activations)
    rule = rule_projection(net, x, "4", channel=3, position=(2, 1), pre_activation=True)
    torch.testing.assert_close(rule.values, pre.values, rtol=1e-4, atol=1e-6)
