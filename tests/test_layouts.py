"""Layer layouts: NCHW, NHWC and token outputs read by channel and grid position, checked against the raw hooked
output reshaped by hand; the automatic CAM layer on real architectures (random weights, small inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnscope import Capture, CnnscopeError, LayerError, list_layers
from cnnscope.attribution import attribute, auto_layer
from cnnscope.capture.layout import LayoutProbe
from cnnscope.models import wrap
from cnnscope.units import as_nchw, read_unit, token_grid

from .conformance import assert_unchanged
from .models import GapLinearNet, InplaceReLUNet, ReLU6Net, ResidualNet, seeded


# -- models --------------------------------------------------------------------------------------------------------
def tiny_vit(image_size: int = 64, layers: int = 2) -> nn.Module:
    """torchvision's ViT with a class token, 32 features; the zero-initialised head is randomised, so that
    gradients reach the blocks."""
    from torchvision.models.vision_transformer import VisionTransformer

    seeded(0)
    vit = VisionTransformer(image_size=image_size, patch_size=16, num_layers=layers, num_heads=2, hidden_dim=32,
                            mlp_dim=64, num_classes=5)
    nn.init.normal_(vit.heads.head.weight)
    return vit.eval()


def tiny_swin() -> nn.Module:
    """timm's Swin-T layout ([B, H, W, C] stages) with 24 features and one block per stage; 224 px input."""
    import timm

    seeded(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_dim=24, depths=(1, 1, 1, 1),
                             num_heads=(1, 1, 1, 1), num_classes=5).eval()


class Opaque(nn.Module):
    """Returns a channels-last map made by functional ops only: nothing tells its layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) * 2.0


class PermuteNet(nn.Module):
    """conv -> (functional) channels-last map -> LayerNorm over channels -> pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        seeded(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.opaque = Opaque()
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.opaque(self.conv(x))
        return self.head(self.norm(y + 0.0).mean(dim=(1, 2)))


class CatBlock(nn.Module):
    """An Inception-style block: two branches concatenated by ``torch.cat``, then ``F.relu``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, 4, 1)
        self.b = nn.Sequential(nn.Conv2d(c, 3, 1), nn.Conv2d(3, 5, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.cat([self.a(x), self.b(x)], 1))


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        seeded(0)
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.block = CatBlock(6)
        self.fc = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.stem(x)).mean(dim=(2, 3)))


def raw_output(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output as the module returns it, by a plain forward hook."""
    got: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(lambda m, i, o: got.append(o.detach().clone()))
    try:
        with torch.no_grad():
            module(x)
    finally:
        handle.remove()
    return got[0]


def raw_output_and_grad(module: nn.Module, layer: str, x: torch.Tensor, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's raw output and d logit[cls] / d output, by autograd on a hooked tensor."""
    got: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(lambda m, i, o: got.append(o))
    try:
        logits = module(x)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(logits[:, cls].sum(), got[0])
    return got[0].detach(), g


# -- pure functions --------------------------------------------------------------------------------------------------
def test_token_grid_follows_the_input_aspect_and_never_confuses_a_class_token():
    assert token_grid(196) == (14, 14) and token_grid(197) is None
    assert token_grid(6 * 8, (120, 160)) == (6, 8) and token_grid(48) is None  # 48 tokens: square grid impossible
    for n in range(2, 400):  # n and n - 1 never both form a grid of the same aspect ratio
        for size in ((1, 1), (3, 4), (2, 1)):
            assert token_grid(n, size) is None or token_grid(n - 1, size) is None


def test_as_nchw_matches_hand_reshapes():
    t = torch.randn(2, 1 + 3 * 4, 5)
    want = t[:, 1:].reshape(2, 3, 4, 5).permute(0, 3, 1, 2)
    assert torch.equal(as_nchw(t, "tokens+cls", (30, 40)), want)
    assert torch.equal(as_nchw(t[:, 1:], "tokens", (30, 40)), want)
    h = torch.randn(2, 3, 4, 5)
    assert torch.equal(as_nchw(h, "nhwc"), h.permute(0, 3, 1, 2)) and as_nchw(h, "nchw") is h
    with pytest.raises(LayerError, match="layout="):
        as_nchw(t, "tokens+cls")  # 12 tokens form no square grid
    with pytest.raises(LayerError, match="not 'nhwc'"):
        as_nchw(t, "nhwc")
    assert float(read_unit(h, 4, (1, 2), layout="nhwc")[1]) == float(h[1, 1, 2, 4])


# -- detection -------------------------------------------------------------------------------------------------------
def test_list_layers_reports_layouts_channels_and_grids_of_a_vit_and_a_swin():
    vit = {i.name: i for i in list_layers(tiny_vit(224, 4), 224)}
    block = vit["encoder.layers.encoder_layer_3"]
    assert (block.layout, block.output_shape, block.channels, block.spatial) == ("tokens+cls", (197, 32), 32, (14, 14))
    assert (vit["conv_proj"].layout, vit["conv_proj"].channels, vit["conv_proj"].spatial) == ("nchw", 32, (14, 14))
    assert (vit["heads"].layout, vit["heads"].channels, vit["heads"].spatial) == ("nc", 5, None)
    assert vit["encoder.layers.encoder_layer_3"].to_dict()["channels"] == 32
    swin = {i.name: i for i in list_layers(tiny_swin(), 224)}
    stage = swin["layers.1"]
    assert (stage.layout, stage.output_shape, stage.channels, stage.spatial) == ("nhwc", (28, 28, 48), 48, (28, 28))
    assert (swin["layers.3"].channels, swin["layers.3"].spatial) == (192, (7, 7))
    assert swin["patch_embed.proj"].layout == "nchw" and swin["patch_embed"].layout == "nhwc"
    window = swin["layers.0.blocks.0.attn"]  # 64 windows folded into the batch: no layout, no channels
    assert window.layout is None and window.channels is None and window.spatial is None


def test_cnn_blocks_ending_in_functional_ops_are_nchw_but_a_functional_permute_is_not_guessed():
    cat = {i.name: i for i in list_layers(CatNet(), 16)}
    assert (cat["block"].layout, cat["block"].channels, cat["block"].spatial) == ("nchw", 9, (8, 8))
    res = {i.name: i for i in list_layers(ResidualNet(), (12, 14))}
    assert res["layer2"].layout == "nchw" and res["layer2"].spatial == (12, 14)
    infos = {i.name: i for i in list_layers(PermuteNet(), (10, 12))}
    assert infos["opaque"].output_shape == (10, 12, 6) and infos["opaque"].layout is None
    assert infos["opaque"].channels is None
    given = {i.name: i for i in list_layers(PermuteNet(), (10, 12), layout={"opaque": "nhwc"})}["opaque"]
    assert (given.layout, given.channels, given.spatial) == ("nhwc", 6, (10, 12))
    with pytest.raises(LayerError, match="not 'tokens'"):
        list_layers(PermuteNet(), (10, 12), layout={"opaque": "tokens"})
    with pytest.raises(LayerError, match="did you mean"):
        list_layers(PermuteNet(), (10, 12), layout={"opaqe": "nhwc"})


def test_torchvision_convnext_blocks_read_their_permute_modules():
    import torchvision

    seeded(0)
    infos = {i.name: i for i in list_layers(torchvision.models.convnext_tiny().eval(), 64)}
    inner = infos["features.1.0.block.1"]  # Permute([0, 2, 3, 1]) inside a CNBlock
    assert (inner.kind, inner.layout, inner.channels, inner.spatial) == ("Permute", "nhwc", 96, (16, 16))
    assert infos["features.1.0.block.3"].channels == 384 and infos["features.1.0.block.6"].layout == "nchw"
    assert infos["features.1.0"].layout == "nchw" and infos["features"].spatial == (2, 2)


@pytest.mark.parametrize("size", [0, -5, (0, 4), (3,), "x", 2.5])
def test_list_layers_rejects_sizes_that_are_not_positive_in_one_line(size):
    with pytest.raises(CnnscopeError, match="positive") as err:
        list_layers(InplaceReLUNet(), size)
    assert "\n" not in str(err.value)


# -- Capture in the detected layout --------------------------------------------------------------------------------
def test_capture_of_a_swin_stage_reads_channel_27_not_row_27():
    swin = tiny_swin()
    x = torch.randn(2, 3, 224, 224)
    raw = raw_output(swin, "layers.1", x)  # [2, 28, 28, 48]
    with torch.no_grad(), Capture(swin, "layers.1") as cap:
        cap.run(x)
    assert cap.layouts == {"layers.1": "nhwc"}
    act = cap["layers.1"]
    assert act.shape == (2, 48, 28, 28) and torch.equal(act, raw.permute(0, 3, 1, 2))
    torch.testing.assert_close(read_unit(act, 27, None), raw[..., 27].mean(dim=(1, 2)))
    assert float(read_unit(act, 27, (3, 5))[1]) == float(raw[1, 3, 5, 27])
    assert not torch.allclose(read_unit(act, 27, None), raw[:, 27].mean(dim=(1, 2)))  # what NCHW reading gave


def test_capture_of_a_vit_block_lays_tokens_on_the_grid_without_the_class_token():
    vit = tiny_vit(224, 4)
    x = torch.randn(2, 3, 224, 224)
    raw = raw_output(vit, "encoder.layers.encoder_layer_3", x)  # [2, 197, 32]
    with torch.no_grad(), Capture(vit, "encoder.layers.encoder_layer_3") as cap:
        cap.run(x)
    act = cap["encoder.layers.encoder_layer_3"]
    assert act.shape == (2, 32, 14, 14)
    want = raw[:, 1:].reshape(2, 14, 14, 32).permute(0, 3, 1, 2)
    assert torch.equal(act, want)
    torch.testing.assert_close(read_unit(act, 5, None), raw[:, 1:, 5].mean(dim=1))
    assert float(read_unit(act, 5, (2, 9))[0]) == float(raw[0, 1 + 2 * 14 + 9, 5])


def test_capture_gradients_come_in_the_same_view():
    swin = tiny_swin()
    x = torch.randn(1, 3, 224, 224)
    raw, grad = raw_output_and_grad(swin, "layers.2", x, 3)
    x.requires_grad_(True)
    with Capture(swin, "layers.2", grads=True) as cap:
        logits = cap.run(x)
        torch.autograd.grad(logits[:, 3].sum(), x)
    torch.testing.assert_close(cap.activations["layers.2"].detach(), raw.permute(0, 3, 1, 2))
    torch.testing.assert_close(cap.grads["layers.2"], grad.permute(0, 3, 1, 2))


def test_pre_activation_capture_reads_the_input_layout():
    swin = tiny_swin()
    x = torch.randn(1, 3, 224, 224)
    act_name = "layers.1.blocks.0.mlp.act"  # GELU on [B, H * W, 4C]: timm's Swin MLP runs on flattened tokens
    got: list[torch.Tensor] = []
    handle = dict(swin.named_modules())[act_name].register_forward_pre_hook(lambda m, i: got.append(i[0].clone()))
    try:
        with torch.no_grad():
            swin(x)
    finally:
        handle.remove()
    with torch.no_grad(), Capture(swin, act_name, pre_activation=True) as cap:
        cap.run(x)
    assert cap.layouts[act_name] == "tokens" and got[0].shape == (1, 28 * 28, 192)
    assert torch.equal(cap[act_name], got[0].reshape(1, 28, 28, 192).permute(0, 3, 1, 2))


def test_undetermined_layout_is_one_error_naming_layout_and_the_override_works():
    net = PermuteNet()
    x = torch.randn(2, 3, 10, 12)
    with pytest.raises(LayerError, match=r"layout of layer 'opaque'.*layout=") as err:
        with torch.no_grad(), Capture(net, "opaque") as cap:
            cap.run(x)
    assert "\n" not in str(err.value)
    raw = raw_output(net, "opaque", x)
    with torch.no_grad(), Capture(net, "opaque", layout={"opaque": "nhwc"}) as cap:
        cap.run(x)
    assert torch.equal(cap["opaque"], raw.permute(0, 3, 1, 2))
    with torch.no_grad(), Capture(net, "opaque", layout="raw") as cap:
        cap.run(x)
    assert torch.equal(cap["opaque"], raw) and cap.layouts == {}
    with pytest.raises(LayerError, match="not requested"):
        Capture(net, "opaque", layout={"conv": "nchw"})
    with pytest.raises(LayerError, match="layout must be one of"):
        Capture(net, "opaque", layout="chw")


def test_a_declared_layout_reaches_every_reader_of_the_model():
    """The error names declare_layout; once declared, functions without a layout= option (a render, a unit read
    through Capture's default) read the layer in that layout, and an explicit layout= still wins."""
    from cnnscope.capture import declare_layout, declared_layouts
    from cnnscope.featurevis import channel, render

    net = PermuteNet()
    x = torch.randn(2, 3, 10, 12)
    with pytest.raises(LayerError, match=r"declare_layout\(model, \{'opaque': 'nhwc'\}\)"):
        render(net, channel("opaque", 1), steps=1, size=16)
    declare_layout(net, {"opaque": "nhwc"})
    assert declared_layouts(net) == {"opaque": "nhwc"} and declared_layouts(PermuteNet()) == {}
    raw = raw_output(net, "opaque", x)
    with torch.no_grad(), Capture(net, "opaque") as cap:
        cap.run(x)
    assert torch.equal(cap["opaque"], raw.permute(0, 3, 1, 2))
    with torch.no_grad(), Capture(net, "opaque", layout="raw") as cap:
        cap.run(x)
    assert torch.equal(cap["opaque"], raw)
    assert render(net, channel("opaque", 1), steps=1, size=16).images.shape[0] == 1
    with pytest.raises(LayerError):
        declare_layout(net, {"opaqe": "nhwc"})
    with pytest.raises(LayerError, match="layout must be one of"):
        declare_layout(net, {"opaque": "chw"})


def test_a_layer_that_did_not_run_is_reported_before_its_layout():
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(LayerError, match="did not run in the forward pass: unused"):
        with Capture(Skips(), ["used", "unused"]) as cap:
            cap.run(torch.zeros(2, 4))


def test_probes_leave_the_model_unchanged_also_after_an_error():
    net = PermuteNet()
    x = torch.randn(1, 3, 10, 12)

    def fails():
        with Capture(net, "opaque") as cap:
            cap.run(x)

    assert isinstance(assert_unchanged(net, fails), LayerError)
    assert assert_unchanged(net, lambda: list_layers(net, (10, 12))) is None
    vit = tiny_vit()
    assert assert_unchanged(vit, lambda: auto_layer(vit, input_size=(64, 64))) is None


def test_probe_holds_no_tensor_alive():
    import gc
    import weakref

    net = CatNet().eval()
    probe = LayoutProbe(net)
    with torch.no_grad(), probe:
        out = net(torch.randn(1, 3, 16, 16))
    refs = [weakref.ref(f.ref()) for f in probe._all if f.ref() is not None and f.ref() is not out]
    gc.collect()
    assert all(r() is None for r in refs) and probe.output_layout("block") == "nchw"


def test_reused_module_error_says_what_to_do_from_anywhere():
    with pytest.raises(LayerError, match="ran 2 times.*parent block or a layer that runs once"):
        with Capture(ResidualNet(), "layer1.relu") as cap:
            cap.run(torch.randn(1, 3, 8, 8))


# -- CAMs on the grid ------------------------------------------------------------------------------------------------
def _hand_gradcam(module: nn.Module, layer: str, x: torch.Tensor, cls: int, to_nchw) -> torch.Tensor:
    raw, grad = raw_output_and_grad(module, layer, x, cls)
    a, g = to_nchw(raw), to_nchw(grad)
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp(min=0)


def test_gradcam_on_the_last_swin_stage_is_a_7x7_map_equal_to_a_hand_computation():
    swin = tiny_swin()
    x = torch.randn(1, 3, 224, 224)
    a = attribute(wrap(swin, input_size=224), x, "gradcam", target=2, layer="layers.3")
    assert a.values.shape == (1, 1, 7, 7)
    want = _hand_gradcam(swin, "layers.3", x, 2, lambda t: t.permute(0, 3, 1, 2))
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(a.values, want, rtol=1e-4, atol=1e-6)
    auto = attribute(wrap(swin, input_size=224), x, "gradcam", target=2)
    assert auto.layer == "norm" and auto.values.shape == (1, 1, 7, 7)


def test_gradcam_and_scorecam_on_vit_tokens_drop_the_class_token():
    vit = tiny_vit()
    x = torch.randn(2, 3, 64, 64)
    layer = "encoder.layers.encoder_layer_0"
    a = attribute(wrap(vit, input_size=64), x, "gradcam", target=1, layer=layer)
    want = _hand_gradcam(vit, layer, x, 1, lambda t: t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2))
    assert a.values.shape == (2, 1, 4, 4) and float(want.abs().max()) > 0
    torch.testing.assert_close(a.values, want, rtol=1e-4, atol=1e-6)
    s = attribute(wrap(vit, input_size=64), x, "scorecam", target=1, layer=layer)
    assert s.values.shape == (2, 1, 4, 4) and torch.isfinite(s.values).all()
    from cnnscope import unit

    target = unit("encoder.layers.encoder_layer_1", 7, (1, 2))  # a unit after the CAM layer: later passes stop early
    u = attribute(wrap(vit, input_size=64), x, "gradcam", target=target, layer=layer)
    got: list[torch.Tensor] = []
    handles = [dict(vit.named_modules())[layer].register_forward_hook(lambda m, i, o: got.append(o)),
               dict(vit.named_modules())["encoder.layers.encoder_layer_1"].register_forward_hook(
                   lambda m, i, o: got.append(o))]
    try:
        vit(x)
    finally:
        for h in handles:
            h.remove()
    (g,) = torch.autograd.grad(got[1][:, 1 + 1 * 4 + 2, 7].sum(), got[0])
    grid = lambda t: t[:, 1:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)  # noqa: E731
    want = (grid(g).mean(dim=(2, 3), keepdim=True) * grid(got[0].detach())).sum(1, keepdim=True).clamp(min=0)
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(u.values, want, rtol=1e-4, atol=1e-6)


def test_cam_layout_option_reads_an_undetectable_layer():
    net = PermuteNet()
    x = torch.randn(1, 3, 10, 12)
    with pytest.raises(LayerError, match="layout="):
        attribute(wrap(net, input_size=(10, 12)), x, "gradcam", target=0, layer="opaque")
    a = attribute(wrap(net, input_size=(10, 12)), x, "gradcam", target=0, layer="opaque", layout="nhwc")
    want = _hand_gradcam(net, "opaque", x, 0, lambda t: t.permute(0, 3, 1, 2))
    torch.testing.assert_close(a.values, want, rtol=1e-4, atol=1e-6)


# -- the automatic CAM layer -----------------------------------------------------------------------------------------
def _tv(name: str, **kw):
    def build() -> nn.Module:
        import torchvision

        seeded(0)
        return getattr(torchvision.models, name)(weights=None, **kw).eval()
    return build


AUTO = [
    pytest.param(_tv("googlenet", aux_logits=False, init_weights=False), 96, "inception5b", id="googlenet"),
    pytest.param(_tv("inception_v3", aux_logits=False, init_weights=False), 160, "Mixed_7c", id="inception_v3",
                 marks=pytest.mark.slow),
    pytest.param(_tv("inception_v3", aux_logits=False, init_weights=False), 96, "Mixed_6e",
                 id="inception_v3-last-blocks-1x1", marks=pytest.mark.slow),
    pytest.param(_tv("resnet18"), 64, "layer4", id="resnet18"),
    pytest.param(_tv("densenet121"), 64, "features", id="densenet121", marks=pytest.mark.slow),
    pytest.param(_tv("convnext_tiny"), 64, "features", id="convnext_tiny", marks=pytest.mark.slow),
    pytest.param(_tv("mobilenet_v3_small"), 64, "features", id="mobilenet_v3_small"),
    pytest.param(InplaceReLUNet, 16, "features", id="inplace_relu"),
    pytest.param(ResidualNet, 16, "layer2", id="residual"),
    pytest.param(ReLU6Net, 16, "pw", id="relu6"),
    pytest.param(GapLinearNet, 16, "features", id="gap_linear"),
    pytest.param(CatNet, 16, "block", id="cat_block"),
    pytest.param(tiny_vit, 64, "encoder.layers.encoder_layer_1.ln_1", id="vit"),
    pytest.param(tiny_swin, 224, "norm", id="swin"),
    pytest.param(lambda: PooledFeaturesNet(), 64, "features.3", id="pool-inside-features"),
    pytest.param(lambda: PooledFeaturesNet(PoolingBlock), 64, "features.3", id="pool-inside-a-sequential-subclass"),
    pytest.param(_tv("squeezenet1_1"), 64, "classifier.1", id="squeezenet-class-map"),
]


class PoolingBlock(nn.Sequential):
    """A Sequential subclass (as torchvision's Conv2dNormActivation is): still a chain."""


class PooledFeaturesNet(nn.Module):
    """A stem, then features that end in their own global pool (a common custom layout): the final map is the
    last ReLU inside ``features``, never the stem before it."""

    def __init__(self, container: type[nn.Sequential] = nn.Sequential) -> None:
        super().__init__()
        seeded(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.features = container(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.stem(x)).flatten(1))


@pytest.mark.parametrize("build,size,want", AUTO)
def test_auto_layer_is_the_module_whose_output_is_the_final_feature_map(build, size, want):
    module = build()
    assert auto_layer(wrap(module, input_size=size)) == want


def test_auto_layer_of_googlenet_is_the_concatenated_block():
    googlenet = _tv("googlenet", aux_logits=False, init_weights=False)()
    infos = {i.name: i for i in list_layers(googlenet, 96)}
    assert infos["inception5b"].channels == 1024 and infos["inception5b.branch4"].channels == 128
    x = torch.randn(1, 3, 96, 96)
    a = attribute(wrap(googlenet, input_size=96), x, "gradcam", target=0)
    assert a.layer == "inception5b" and a.spec["layer_choice"].startswith("auto: the module whose output")
    want = _hand_gradcam(googlenet, "inception5b", x, 0, lambda t: t)  # all 1024 channels, not one branch's 128
    assert a.values.shape == (1, 1, 3, 3) and float(want.abs().max()) > 0
    torch.testing.assert_close(a.values, want, rtol=1e-4, atol=1e-6)


def test_the_final_map_of_a_vit_reaches_the_head_and_its_cam_is_not_zero():
    vit = tiny_vit()
    x = torch.randn(1, 3, 64, 64)
    a = attribute(wrap(vit, input_size=64), x, "gradcam", target=1)
    assert a.layer == "encoder.layers.encoder_layer_1.ln_1"
    assert float(a.values.abs().max()) > 0
    last = attribute(wrap(vit, input_size=64), x, "gradcam", target=1, layer="encoder", relu=False)
    assert float(last.values.abs().max()) == 0.0  # the head reads the class token only: why `encoder` is skipped


# -- featurevis and dataset statistics in the layout ---------------------------------------------------------------
def test_featurevis_channel_and_neuron_objectives_read_the_swin_channel():
    from cnnscope.featurevis import measure
    from cnnscope.featurevis.objectives import channel, neuron, unit_objectives

    swin = wrap(tiny_swin(), input_size=224)
    x = torch.randn(2, 3, 224, 224)
    raw = raw_output(swin.module, "layers.1", x)
    got = measure(swin, x, channel("layers.1", 27))
    torch.testing.assert_close(got, raw[..., 27].mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    got = measure(swin, x, neuron("layers.1", 40, (27, 3)))
    torch.testing.assert_close(got, raw[:, 27, 3, 40], rtol=1e-5, atol=1e-6)
    assert len(unit_objectives(swin, "layers.1", channels="all")) == 48
    with pytest.raises(CnnscopeError, match="outside 0-47"):
        unit_objectives(swin, "layers.1", channels="50")
    net = wrap(PermuteNet(), input_size=(10, 12))
    with pytest.raises(LayerError, match="layout="):
        unit_objectives(net, "opaque")
    objs = unit_objectives(net, "opaque", layout="nhwc")
    assert [o.channel for o in objs] == list(range(6))


def test_dataset_statistics_of_a_token_layer_rank_grid_positions(samples):
    from cnnscope.dataset import collect_statistics

    vit = wrap(tiny_vit(), input_size=64)
    layer = "encoder.layers.encoder_layer_0"
    stats = collect_statistics(vit, "sample:chelsea,coffee,astronaut", [layer], k=2, receptive_field=None)
    x = vit.batch([samples[n] for n in ("chelsea", "coffee", "astronaut")])
    raw = raw_output(vit.module, layer, x)[:, 1:]  # [3, 16, 32]: the grid, class token dropped
    ls = stats[layer]
    assert ls.grid == (4, 4) and ls.top.values.shape[0] == 32
    torch.testing.assert_close(ls.top.values[:, 0], raw.amax(dim=(0, 1)).float(), rtol=1e-5, atol=1e-6)
    best = stats.examples(layer, 5)[0]
    flat = int(raw[..., 5].flatten().argmax())
    assert (best.y, best.x) == divmod(flat % 16, 4)


def test_unit_targets_and_renders_read_the_layout():
    from cnnscope import unit
    from cnnscope.featurevis import render
    from cnnscope.featurevis.objectives import channel

    swin = wrap(tiny_swin(), input_size=224)
    x = torch.randn(2, 3, 224, 224)
    raw = raw_output(swin.module, "layers.1", x)
    a = attribute(swin, x, "saliency", target=unit("layers.1", 27, (27, 3)))
    torch.testing.assert_close(a.scores, raw[:, 27, 3, 27], rtol=1e-5, atol=1e-6)
    vit = wrap(tiny_vit(), input_size=64)
    res = render(vit, channel("encoder.layers.encoder_layer_1", 31), steps=2, size=64)
    assert res.images.shape == (1, 64, 64, 3) and torch.isfinite(res.activations).all()
    with pytest.raises(LayerError, match="has 32 channels"):
        render(vit, channel("encoder.layers.encoder_layer_1", 32), steps=2, size=64)  # 32 features, not 17 tokens


class TinyMixer(nn.Module):
    """MLP-Mixer's two MLPs: channel mixing reads ``[B, N, C]`` rows, token mixing reads the transposed ``[B, C, N]``
    rows. With C = 64 a square, ``[B, C, N]`` looks like tokens on an 8x8 grid."""

    def __init__(self) -> None:
        super().__init__()
        seeded(0)
        self.patch = nn.Conv2d(3, 64, 8, stride=8)  # 32 px: N = 16 tokens of C = 64
        self.norm = nn.LayerNorm(64)
        self.mlp_tokens = nn.Linear(16, 16)
        self.mlp_channels = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.patch(x).flatten(2).transpose(1, 2))
        t = t + self.mlp_tokens(t.transpose(1, 2)).transpose(1, 2)
        return self.head(self.mlp_channels(t).mean(1))


def test_a_token_mixing_tensor_is_never_read_as_tokens():
    infos = {i.name: i for i in list_layers(TinyMixer(), 32)}
    assert infos["mlp_tokens"].output_shape == (64, 16)
    assert infos["mlp_tokens"].layout is None  # not "tokens" with an 8x8 grid of 16 channels
    assert infos["mlp_channels"].layout is None  # its transpose is read as rows too: which axis is which is unknown
    assert infos["patch"].layout == "nchw"
    with pytest.raises(LayerError, match="declare_layout"):
        with torch.no_grad(), Capture(TinyMixer(), "mlp_tokens") as cap:
            cap.run(torch.randn(1, 3, 32, 32))
