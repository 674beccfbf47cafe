"""Batch-norm folding: the folded copy computes what the model computes, the model is untouched, and occlusion, RISE
and Score-CAM use the copy only when it reproduces the clean scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnscope.attribution import attribute
from cnnscope.capture import conv_bn_pairs
from cnnscope.fastforward import fast_forward, fold_batchnorm

from ..models import InplaceReLUNet, seeded
from .test_incremental import DeepNet


class SkipBeforeNormNet(nn.Module):
    """A skip connection reads the convolution's output before its batch norm: folding would change it."""

    def __init__(self) -> None:
        super().__init__()
        seeded(5)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.2, 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc((torch.relu(self.bn(h)) + h).mean(dim=(2, 3)))


def _x(h: int = 24, w: int = 20) -> torch.Tensor:
    return torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))


def test_folded_copy_equals_the_model_and_leaves_it_unchanged(single_thread):
    net = DeepNet().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = _x()
    pairs = conv_bn_pairs(net, x)
    assert ("stem.0", "stem.1") in pairs and ("blocks.0.expand.0", "blocks.0.expand.1") in pairs
    folded, n = fold_batchnorm(net, x)
    assert n == len(pairs) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_in_place_relu_net_folds_too(single_thread):
    net = InplaceReLUNet().eval()
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-0.5, 0.5)
        net.features[1].running_var.uniform_(0.5, 2.0)
    x = _x(16, 16)
    folded, n = fold_batchnorm(net, x)
    assert n == 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


def test_occlusion_reports_and_checks_the_fold(single_thread):
    x = _x()
    ok = attribute(DeepNet().eval(), x, "occlusion", window=6, stride=3)
    assert ok.spec["fold_bn"]["used"] and ok.spec["fold_bn"]["pairs"] == 3
    plain = attribute(DeepNet().eval(), x, "occlusion", window=6, stride=3, fold_bn=False, incremental=False)
    assert plain.spec["fold_bn"]["used"] is False
    torch.testing.assert_close(ok.values, plain.values, rtol=1e-4, atol=1e-5)

    bad = attribute(SkipBeforeNormNet().eval(), x, "occlusion", window=6, stride=3)
    assert bad.spec["fold_bn"]["used"] is False and "differ" in bad.spec["fold_bn"]["reason"]
    ref = attribute(SkipBeforeNormNet().eval(), x, "occlusion", window=6, stride=3, fold_bn=False)
    torch.testing.assert_close(bad.values, ref.values, rtol=0, atol=0)


def test_train_mode_is_never_folded(single_thread):
    net = DeepNet().train()
    a = attribute(net, _x(), "occlusion", window=6, stride=3, eval_mode=False, incremental=False)
    assert a.spec["fold_bn"]["used"] is False
    assert net.training


def test_lite0_folds_every_norm(single_thread, lite0):
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    folded, n = fold_batchnorm(lite0.module, x)
    assert n == 49  # every conv of EfficientNet-Lite0 is followed by a BatchNormAct2d
    with torch.no_grad():
        want = lite0.module(x)
        torch.testing.assert_close(folded(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_folded_copy_is_cached_until_the_model_changes(single_thread):
    net = DeepNet().eval()
    x = _x()
    first, _ = fold_batchnorm(net, x)
    assert fold_batchnorm(net, x)[0] is first
    assert fold_batchnorm(net, x, cache=False)[0] is not first
    with torch.no_grad():
        net.stem[1].running_var.mul_(2.0)  # an in-place change bumps the buffer's version
    second, _ = fold_batchnorm(net, x)
    assert second is not first
    with torch.no_grad():
        torch.testing.assert_close(second(x), net(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(first(x), net(x), rtol=1e-3, atol=1e-3)
    net.load_state_dict(DeepNet().state_dict())  # copies in place: new versions again
    third, _ = fold_batchnorm(net, x)
    assert third is not second
    with torch.no_grad():
        torch.testing.assert_close(third(x), net(x), rtol=1e-5, atol=1e-5)


def test_a_plain_module_and_its_loaded_model_fold_alike(single_thread):
    from cnnscope import wrap

    net = DeepNet().eval()
    x = _x()
    folded, n = fold_batchnorm(wrap(net, input_size=(24, 20)), x)
    assert fold_batchnorm(net, x) == (folded, n)  # one cached copy per module, whichever way it is given
    ff = fast_forward(net, x)
    assert ff.folded and ff.module is folded and ff.report["used"] and ff.report["pairs"] == n


def test_fast_forward_falls_back_to_the_model(single_thread):
    net = SkipBeforeNormNet().eval()
    x = _x()
    bad = fast_forward(net, x)
    assert not bad.folded and bad.module is net and "differ" in bad.report["reason"]
    assert fast_forward(net, x, fold=False).report == {"used": False, "reason": "fold_bn=False"}
    train = fast_forward(DeepNet().train(), x)
    assert not train.folded and "training" in train.report["reason"]
    plain = fast_forward(InplaceReLUNet().eval().features[:1], x)  # a lone convolution: nothing to fold
    assert not plain.folded and "no convolution" in plain.report["reason"]


@pytest.mark.parametrize("method,opts", [("rise", {"n_masks": 64, "grid": 3}), ("scorecam", {})])
def test_rise_and_scorecam_run_on_the_folded_copy(single_thread, method, opts):
    net = DeepNet().eval()
    x = _x()
    fast = attribute(net, x, method, target=[0, 2, 5], **opts)
    assert fast.spec["fold_bn"]["used"], fast.spec["fold_bn"]
    slow = attribute(net, x, method, target=[0, 2, 5], fold_bn=False, **opts) if method == "rise" else None
    if slow is None:  # Score-CAM has no switch: compare with the model itself through a copy that cannot fold
        from cnnscope.attribution import get_method

        cls = get_method(method)
        m = cls(net)
        m.opts["fold_bn"] = False
        slow = m.attribute(x, target=[0, 2, 5])
        assert slow.spec["fold_bn"]["used"] is False
    torch.testing.assert_close(fast.values, slow.values, rtol=1e-4, atol=1e-6)
