"""Incremental occlusion (Krypton-style split inference) equals full forwards, and falls back when it cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnscope.attribution import attribute
from cnnscope.errors import LayerError, MethodError
from cnnscope.fastforward import fold_batchnorm
from cnnscope.fastforward.plan import split_candidates

from ..models import ResidualNet, seeded


class Block(nn.Module):
    """Inverted-residual style block: expand, depthwise, project, with a residual add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU6(inplace=True))
        self.dw = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 5, padding=2, groups=2 * c), nn.ReLU6())
        self.project = nn.Conv2d(2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.dw(self.expand(x)))


class DeepNet(nn.Module):
    """Strided convolutions, batch norm, ReLU6, residual blocks inside a Sequential, then GAP + linear."""

    def __init__(self) -> None:
        super().__init__()
        seeded(3)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(Block(8), nn.Conv2d(8, 12, 3, stride=2, padding=1), Block(12), nn.ReLU(),
                                    nn.MaxPool2d(2), nn.Conv2d(12, 16, 3, padding=1))
        self.fc = nn.Linear(16, 6)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class GatedNet(DeepNet):
    """A squeeze-excitation-like global gate early on: a crop cannot reproduce it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.blocks[0](h * torch.sigmoid(h.mean(dim=(2, 3), keepdim=True)))
        for m in list(self.blocks)[1:]:
            h = m(h)
        return self.fc(h.mean(dim=(2, 3)))


class CoordNet(DeepNet):
    """Adds a horizontal coordinate ramp after the stem (CoordConv-like): local, but not translation-equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + torch.linspace(0.0, 1.0, h.shape[-1], device=h.device)
        return self.fc(self.blocks(h).mean(dim=(2, 3)))


class BypassNet(DeepNet):
    """The input reaches the logits past every block: no split layer carries all the information."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 3.0 * x.mean(dim=(2, 3))[:, :1]


class BatchSizeNet(DeepNet):
    """The head reshapes by the input's batch size (every pass gives the model one batch of copies, so it works)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.fc(h.reshape(x.shape[0], -1, h.shape[1]).mean(dim=1))


def _images(h: int = 48, w: int = 40, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(0))


def _full(net: nn.Module, x: torch.Tensor, **opts) -> torch.Tensor:
    return attribute(net, x, "occlusion", incremental=False, **opts).values


@pytest.mark.parametrize("window,stride,baseline", [(6, 3, 0.0), (8, 5, "blur"), ((10, 7), (4, 6), 0.5)])
def test_every_split_layer_equals_full_forwards(single_thread, window, stride, baseline):
    net = DeepNet().eval()
    x = _images()
    opts = {"window": window, "stride": stride, "baseline": baseline, "blur_sigma": 2.0, "target": [1, 4]}
    want = _full(net, x, **opts)
    layers = list(split_candidates(fold_batchnorm(net, x)[0], x))  # occlusion runs on the folded copy
    assert {"stem", "blocks.0", "blocks.1", "blocks.2"} <= set(layers)
    used = set()
    for layer in layers:  # layers inside a residual block fail the check (the skip bypasses them) and fall back
        a = attribute(net, x, "occlusion", split_layer=layer, **opts)
        if a.spec["incremental"]["used"]:
            assert a.spec["incremental"]["layer"] == layer
            used.add(layer)
        else:
            assert layer.startswith("blocks.0.") or layer.startswith("blocks.2."), a.spec["incremental"]
        torch.testing.assert_close(a.values, want, rtol=1e-4, atol=1e-5, msg=f"split at {layer}")
    assert {"stem", "blocks.0", "blocks.1", "blocks.2"} <= used
    auto = attribute(net, x, "occlusion", **opts)
    assert auto.spec["incremental"]["used"]
    torch.testing.assert_close(auto.values, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chain", [["stem", "blocks.0"], ["stem", "blocks.1", "blocks.2"],
                                   ["blocks.0", "blocks.1", "blocks.2", "blocks.4"]])
def test_chains_of_split_layers_equal_full_forwards(single_thread, chain):
    net = DeepNet().eval()
    x = _images()
    opts = {"window": 8, "stride": 5, "baseline": "blur", "blur_sigma": 2.0, "target": [0, 5]}
    a = attribute(net, x, "occlusion", split_layer=chain, **opts)
    info = a.spec["incremental"]
    assert info["used"] and info["layers"] == chain and len(info["stage_crops"]) == len(chain), info
    torch.testing.assert_close(a.values, _full(net, x, **opts), rtol=1e-4, atol=1e-5)


def test_auto_chains_leave_out_layers_a_skip_connection_bypasses(single_thread):
    net = DeepNet().eval()
    x = _images()
    a = attribute(net, x, "occlusion", window=6, stride=3, target=[1, 4])
    info = a.spec["incremental"]
    assert info["used"] and info["plan"] == "planned" and info["approximate"] is None
    # inside a residual block the skip bypasses the split: those layers never enter a chain
    assert not any(n.startswith(("blocks.0.", "blocks.2.")) for n in info["layers"]), info
    assert all(not n.startswith(("blocks.0.", "blocks.2.")) for c in info["candidates"] for n in c.split(", "))
    torch.testing.assert_close(a.values, _full(net, x, window=6, stride=3, target=[1, 4]), rtol=1e-4, atol=1e-5)


def test_auto_choice_on_residual_net_equals_full_forwards(single_thread):
    net = ResidualNet().eval()
    x = _images(32, 36)
    want = _full(net, x, window=5, stride=3, target=2)
    for layer in split_candidates(net, x):
        got = attribute(net, x, "occlusion", window=5, stride=3, target=2, incremental=True, split_layer=layer)
        torch.testing.assert_close(got.values, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("net_cls,reason", [
    (GatedNet, "irregular receptive fields"),
    (CoordNet, "a crop's activation at 'blocks.0' differs from the full forward")])
def test_non_local_prefix_falls_back_and_explains(single_thread, net_cls, reason):
    net = net_cls().eval()
    x = _images()
    a = attribute(net, x, "occlusion", window=8, stride=4, split_layer="blocks.0")
    assert a.spec["incremental"]["used"] is False
    assert reason in a.spec["incremental"]["reason"]
    torch.testing.assert_close(a.values, _full(net, x, window=8, stride=4), rtol=0, atol=0)
    with pytest.raises(MethodError, match="incremental inference is not possible"):
        attribute(net, x, "occlusion", window=8, stride=4, split_layer="blocks.0", incremental=True)


def test_bypass_of_the_split_layer_is_detected(single_thread):
    net = BypassNet().eval()
    x = _images()
    a = attribute(net, x, "occlusion", window=8, stride=4, split_layer="blocks.1")
    assert a.spec["incremental"]["used"] is False
    assert "spliced forward" in a.spec["incremental"]["reason"]
    torch.testing.assert_close(a.values, _full(net, x, window=8, stride=4), rtol=0, atol=0)


@pytest.mark.parametrize("n_images", [1, 2])
def test_a_head_that_reads_the_batch_size_works(single_thread, n_images):
    net = BatchSizeNet().eval()
    x = _images(n=n_images)
    a = attribute(net, x, "occlusion", window=8, stride=4, split_layer="blocks.1")
    assert a.spec["incremental"]["used"], a.spec["incremental"]
    torch.testing.assert_close(a.values, _full(net, x, window=8, stride=4), rtol=1e-4, atol=1e-5)


def test_bad_split_layers(single_thread):
    net = DeepNet().eval()
    x = _images()
    with pytest.raises(LayerError):
        attribute(net, x, "occlusion", window=8, stride=4, split_layer="blokcs.1")
    a = attribute(net, x, "occlusion", window=8, stride=4, split_layer="blocks.0.dw")
    assert "not a block boundary" in a.spec["incremental"]["reason"]
    rev = attribute(net, x, "occlusion", window=8, stride=4, split_layer=["blocks.1", "stem"])
    assert "not in forward order" in rev.spec["incremental"]["reason"]
    with pytest.raises(MethodError, match="incremental must be"):
        attribute(net, x, "occlusion", incremental="yes")
    off = attribute(net, x, "occlusion", window=8, stride=4, incremental=False)
    assert off.spec["incremental"] == {"used": False, "reason": "incremental=False"}


def test_a_model_that_asserts_its_input_size_falls_back(single_thread):
    """torchvision's ViT asserts its image size, so the planning probes and crops fail inside the model: the map
    comes from full forwards and the reason is reported, never an AssertionError."""
    from torchvision.models import VisionTransformer

    seeded(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = attribute(vit, x, "occlusion", window=8, stride=8, target=2)
    assert a.spec["incremental"]["used"] is False
    assert "Wrong image" in a.spec["incremental"]["reason"]
    with torch.no_grad():  # windows tile the image: each pixel holds its own window's drop, computed here by hand
        clean = vit(x)[0, 2]
        for r in range(4):
            for c in range(4):
                occ = x.clone()
                occ[..., 8 * r:8 * r + 8, 8 * c:8 * c + 8] = 0.0
                want = clean - vit(occ)[0, 2]
                torch.testing.assert_close(a.values[0, :, 8 * r, 8 * c], want.expand(3), rtol=1e-4, atol=1e-5)


def test_unit_targets_use_full_forwards(single_thread):
    from cnnscope import unit

    net = DeepNet().eval()
    a = attribute(net, _images(), "occlusion", window=8, stride=4, target=unit("blocks.3", 2))
    assert a.spec["incremental"]["used"] is False and "unit targets" in a.spec["incremental"]["reason"]


def test_lite0_incremental_occlusion_equals_full_forwards(single_thread, lite0, samples):
    chelsea = lite0.preprocess(samples["chelsea"])
    a = attribute(lite0, chelsea, "occlusion", window=48, stride=32)
    info = a.spec["incremental"]
    assert info["used"] and info["layer"].startswith("blocks.") and info["estimated_cost"] < 0.85
    assert info["layers"][0] == info["layer"] and a.spec["fold_bn"]["used"]
    b = attribute(lite0, chelsea, "occlusion", window=48, stride=32, incremental=False)
    torch.testing.assert_close(a.values, b.values, rtol=1e-4, atol=1e-4 * float(b.values.abs().max()))


def test_crop_checks_run_once_per_model_state(single_thread, monkeypatch):
    from cnnscope.fastforward.incremental import IncrementalForward

    calls = []
    original = IncrementalForward._check_stage
    monkeypatch.setattr(IncrementalForward, "_check_stage", lambda self, k: calls.append(k) or original(self, k))
    net = DeepNet().eval()
    x = _images()
    opts = {"window": 8, "stride": 4, "split_layer": ["stem", "blocks.1"], "fold_bn": False}
    first = attribute(net, x, "occlusion", **opts)
    assert first.spec["incremental"]["used"] and calls == [0, 1]
    again = attribute(net, x.flip(-1), "occlusion", **opts)  # another image: locality is the model's property
    assert again.spec["incremental"]["used"] and calls == [0, 1]
    torch.testing.assert_close(again.values, _full(net, x.flip(-1), window=8, stride=4), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        net.blocks[1].weight.mul_(1.5)  # changed in place: the crops are checked again
    attribute(net, x, "occlusion", **opts)
    assert calls == [0, 1, 0, 1]
