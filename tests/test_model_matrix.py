"""Any model, any layer layout: the main operations on a matrix of architectures.

Every cell either gives a result that agrees with an independent computation done here by hand (a forward hook and
the layout written out per model), or raises one ``CnnscopeError`` with a one-line message; never another
exception type and never NaN. Random weights, small inputs where the architecture allows; the heavy models are
marked slow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope import CnnscopeError
from cnnscope.models import wrap

from .models import FunctionalReLUNet, InplaceReLUNet, ResidualNet, seeded


@dataclass(frozen=True)
class Case:
    """One architecture: how to build it, its input size, and a layer to study with that layer's true layout."""

    build: Callable[[], nn.Module]
    size: int
    layer: str
    layout: str  # how the layer's output is laid out: "nchw", "nhwc" or "tokens+cls"
    slow: bool = False


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        seeded(0)
        return getattr(torchvision.models, name)(weights=None, **kw)
    return build


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        seeded(0)
        return timm.create_model(name, pretrained=False, **kw)
    return build


CASES = {
    "inplace_relu": Case(lambda: InplaceReLUNet(), 32, "features.4", "nchw"),
    "residual": Case(lambda: ResidualNet(), 32, "layer1", "nchw"),
    "functional_relu": Case(lambda: FunctionalReLUNet(), 32, "conv", "nchw"),
    "resnet18": Case(_tv("resnet18"), 64, "layer2", "nchw"),
    "mobilenet_v3_small": Case(_tv("mobilenet_v3_small"), 64, "features.4", "nchw"),
    "googlenet": Case(_tv("googlenet", aux_logits=False, init_weights=False), 96, "inception4a", "nchw"),
    "densenet121": Case(_tv("densenet121"), 64, "features.denseblock2", "nchw", slow=True),
    "convnext_tiny": Case(_tv("convnext_tiny"), 64, "features.3", "nchw", slow=True),
    "inception_v3": Case(_tv("inception_v3", aux_logits=False, init_weights=False), 96, "Mixed_5b", "nchw",
                         slow=True),
    "efficientnet_b0": Case(_timm("efficientnet_b0"), 64, "blocks.3", "nchw"),
    "vit_b_16": Case(_tv("vit_b_16"), 224, "encoder.layers.encoder_layer_3", "tokens+cls", slow=True),
    "swin_tiny": Case(_timm("swin_tiny_patch4_window7_224"), 224, "layers.2", "nhwc", slow=True),
}
OPERATIONS = ["list_layers", "predict", "render", "explain", "occlusion", "examples", "top9"]

_BUILT: dict[str, object] = {}


def _model(name: str):
    if name not in _BUILT:
        case = CASES[name]
        _BUILT[name] = wrap(case.build().eval(), input_size=case.size)
    return _BUILT[name]


def _nchw(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The layer's output as ``[B, C, H, W]``, by hand."""
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    if layout == "tokens+cls":
        b, n, c = t.shape
        s = int(round((n - 1) ** 0.5))
        return t[:, 1:].reshape(b, s, s, c).permute(0, 3, 1, 2)
    return t


def _hooked(module: nn.Module, layer: str, x: torch.Tensor, layout: str) -> torch.Tensor:
    got: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(lambda m, i, o: got.append(o.clone()))
    try:
        with torch.no_grad():
            module(x)
    finally:
        handle.remove()
    return _nchw(got[0], layout)


def _photos(m, samples) -> torch.Tensor:
    return m.batch([samples["chelsea"], samples["coffee"]])


def _finite(t: object) -> None:
    t = torch.as_tensor(t)
    assert torch.isfinite(t.float()).all(), "NaN or Inf in a result"


def check_list_layers(m, case: Case, samples) -> None:
    from cnnscope import list_layers

    info = {i.name: i for i in list_layers(m)}[case.layer]
    want = _hooked(m.module, case.layer, _photos(m, samples)[:1], case.layout)
    assert info.channels == want.shape[1]
    assert info.spatial == tuple(want.shape[-2:])


def check_predict(m, case: Case, samples) -> None:
    x = _photos(m, samples)
    with torch.no_grad():
        p = torch.softmax(m.module(x).float(), 1)
    k = min(3, p.shape[1])
    got = m.predict([samples["chelsea"], samples["coffee"]], k=k)
    for row, probs in zip(got, p):  # random weights tie classes: compare probabilities, not indices
        np.testing.assert_allclose([q for _, _, q in row], probs.topk(k).values.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose([q for _, _, q in row], probs[[i for i, _, _ in row]].numpy(), rtol=1e-4,
                                   atol=1e-7)


def check_render(m, case: Case, samples) -> None:
    from cnnscope.featurevis import channel, render

    res = render(m, channel(case.layer, 2), steps=4, size=case.size)
    assert res.images.dtype == np.uint8 and res.images.shape[-1] == 3
    _finite(res.trace)
    # the reported activation is channel 2's mean on the rendered picture (read back here through uint8, hence
    # the tolerance): a layout read the wrong way round reads another quantity
    want = float(_hooked(m.module, case.layer, m.batch(res.images[:1]), case.layout)[0, 2].mean())
    got = float(res.activations[0])
    assert got == pytest.approx(want, rel=0.05, abs=0.02 * max(1.0, abs(want))), (got, want)


def check_explain(m, case: Case, samples) -> None:
    from cnnscope.attribution import explain

    opts = {"integrated_gradients": {"n_steps": 8}, "occlusion": {"window": case.size // 2, "stride": case.size // 2}}
    (e,) = explain(m, [samples["chelsea"]], options=opts)
    with torch.no_grad():
        p = torch.softmax(m.module(_photos(m, samples)[:1]).float(), 1)[0]
    assert float(p[e.predicted[0]]) == pytest.approx(float(p.max()), rel=1e-4)
    assert e.results, "no method ran"
    for name, res in e.results.items():  # CAMs are at their layer's grid, the others at the input's size
        if name != "gradcam":
            assert res.values.shape[-2:] == (case.size, case.size), name
        _finite(res.values)


def check_occlusion(m, case: Case, samples) -> None:
    from cnnscope.attribution import attribute

    x = _photos(m, samples)[:1]
    half = case.size // 2
    a = attribute(m, x, "occlusion", target=1, window=half, stride=half)
    with torch.no_grad():  # four windows tile the image: each pixel holds its own window's drop
        clean = m.module(x)[0, 1]
        for r in range(2):
            for c in range(2):
                occ = x.clone()
                occ[..., r * half:(r + 1) * half, c * half:(c + 1) * half] = 0.0
                want = float(clean - m.module(occ)[0, 1])
                got = float(a.values[0, 0, r * half, c * half])
                assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (r, c, got, want)


def check_examples(m, case: Case, samples) -> None:
    from cnnscope.dataset import collect_statistics

    stats = collect_statistics(m, "sample:chelsea,coffee,astronaut", [case.layer], k=2, receptive_field=None)
    ls = stats[case.layer]
    x = m.batch([samples[n] for n in ("chelsea", "coffee", "astronaut")])
    acts = _hooked(m.module, case.layer, x, case.layout)
    want = acts.flatten(2).amax(dim=(0, 2))
    torch.testing.assert_close(ls.top.values[:, 0], want.float(), rtol=1e-4, atol=1e-5)


def check_top9(m, case: Case, samples) -> None:
    from cnnscope.zf import DeconvError, top_projections

    images = [samples["chelsea"], samples["coffee"]]
    try:
        res = top_projections(m, images, case.layer, channels=[0, 1], k=2)
    except DeconvError:  # not a plain stack: the projection the error names works on any model
        res = top_projections(m, images, case.layer, channels=[0, 1], k=2, method="gradient")
    acts = _hooked(m.module, case.layer, _photos(m, samples), case.layout)
    for ch in (0, 1):
        assert res.entries[ch][0].activation == pytest.approx(float(acts[:, ch].max()), rel=1e-4, abs=1e-5)
        _finite(res.entries[ch][0].values)


CHECKS = {"list_layers": check_list_layers, "predict": check_predict, "render": check_render,
          "explain": check_explain, "occlusion": check_occlusion, "examples": check_examples, "top9": check_top9}


def _params():
    for name, case in CASES.items():
        for op in OPERATIONS:
            marks = [pytest.mark.slow] if case.slow else []
            yield pytest.param(name, op, marks=marks, id=f"{name}-{op}")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name,op", list(_params()))
def test_cell(name, op, samples):
    m = _model(name)
    try:
        CHECKS[op](m, CASES[name], samples)
    except CnnscopeError as err:  # the other acceptable outcome: one actionable line
        text = str(err)
        assert text and "\n" not in text and "Traceback" not in text, text
        print(f"{name}/{op}: {type(err).__name__}: {text}")
