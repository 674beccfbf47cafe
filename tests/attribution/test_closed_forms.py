"""Attribution methods against closed forms on tiny models (and naive re-implementations where none exists)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cnnscope import wrap
from cnnscope.attribution import attribute, make_baseline, rise_masks
from cnnscope.attribution.perturbation import RISE_MASK_CHUNK
from tests.conformance import assert_unchanged
from tests.models import ALL_TINY, NON_SQUARE, GapLinearNet, InplaceReLUNet, OneReLUNet

SHAPE = (2, 3, 6, 8)
pytestmark = pytest.mark.usefixtures("single_thread")


def linear_model(k: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(SHAPE[1] * SHAPE[2] * SHAPE[3], k))


def inputs(shape=SHAPE, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def weights_of(net: nn.Module, classes: list[int]) -> torch.Tensor:
    return net[1].weight.detach()[classes].view(len(classes), *SHAPE[1:])


# -- linear model ------------------------------------------------------------------------------------
def test_saliency_of_linear_model_is_the_weight_row():
    net, x = linear_model(), inputs()
    a = attribute(net, x, "saliency", target=[2, 0])
    torch.testing.assert_close(a.values, weights_of(net, [2, 0]))
    assert a.target == [2, 0]


def test_input_x_gradient_of_linear_model_is_w_times_x():
    net, x = linear_model(), inputs()
    a = attribute(net, x, "input_x_gradient", target=1)
    torch.testing.assert_close(a.values, weights_of(net, [1, 1]) * x)


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                        "riemann_trapezoid"])
def test_integrated_gradients_of_linear_model_is_exact(quadrature):
    net, x = linear_model(), inputs()
    base = inputs(seed=5) * 0.3
    a = attribute(net, x, "integrated_gradients", target=3, baseline=base, n_steps=7, quadrature=quadrature,
                  batch_size=3)
    torch.testing.assert_close(a.values, (x - base) * weights_of(net, [3, 3]), rtol=1e-5, atol=1e-6)
    c = a.spec["completeness"]
    assert max(abs(d) for d in c["delta"]) < 1e-4


def test_smoothgrad_variants_of_linear_model():
    net, x = linear_model(), inputs()
    w = weights_of(net, [0, 0])
    a = attribute(net, x, "smoothgrad", target=0, n_samples=5, noise_level=0.3)
    torch.testing.assert_close(a.values, w)
    sq = attribute(net, x, "smoothgrad", target=0, n_samples=5, variant="squared")
    torch.testing.assert_close(sq.values, w * w)
    var = attribute(net, x, "smoothgrad", target=0, n_samples=5, variant="vargrad")
    assert var.values.abs().max() < 1e-6
    # input x gradient under noise: E[(x + n) w] -> the sample mean of the noisy inputs times w
    ixg = attribute(net, x, "smoothgrad", target=0, base="input_x_gradient", n_samples=400, noise_level=0.05)
    torch.testing.assert_close(ixg.values, x * w, atol=0.05 * float(w.abs().max()) * 3, rtol=0.0)


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets: step by ``stride`` until a window reaches the far edge."""
    out, y = [], 0
    while True:
        out.append(y)
        if y + window >= size:
            return out
        y += stride


def _occlusion_brute_force(net, x, cls, window, stride, base):
    _, c, h, w = x.shape
    ys, xs = _starts(h, window[0], stride[0]), _starts(w, window[1], stride[1])
    wt = net[1].weight.detach()[cls].view(c, h, w)
    total = torch.zeros(x.shape[0], h, w)
    count = torch.zeros(h, w)
    for y0, x0 in itertools.product(ys, xs):
        sl = (slice(None), slice(y0, y0 + window[0]), slice(x0, x0 + window[1]))
        for b in range(x.shape[0]):
            drop = float((wt[sl] * (x[b][sl] - base[b][sl])).sum())  # f(x) - f(x_occ) of a linear f
            total[b][sl[1:]] += drop
        count[sl[1:]] += 1
    return (total / count)[:, None].expand_as(x)


@pytest.mark.parametrize("window,stride", [((3, 4), (2, 3)), ((2, 2), (2, 2)), ((6, 8), (1, 1))])
@pytest.mark.parametrize("baseline", [0.0, 0.7, "blur"])
def test_occlusion_of_linear_model_matches_closed_form(window, stride, baseline):
    net, x = linear_model(), inputs()
    a = attribute(net, x, "occlusion", target=2, window=window, stride=stride, baseline=baseline, blur_sigma=1.5,
                  batch_size=5)
    base = make_baseline(x, baseline, 1.5)
    torch.testing.assert_close(a.values, _occlusion_brute_force(net, x, 2, window, stride, base), rtol=1e-4,
                               atol=1e-5)


# -- one-ReLU net: guided backprop and deconvnet -------------------------------------------------------
@pytest.mark.parametrize("relu6", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
def test_guided_backprop_and_deconvnet_closed_forms(relu6, inplace):
    net = OneReLUNet(inplace=inplace, relu6=relu6)
    x = inputs((8, 6, 1, 1), seed=3) * 3
    w1, w2 = net.fc1.weight.detach(), net.fc2.weight.detach()[0]
    z = x.flatten(1) @ w1.T
    active = (z > 0) & (z < 6) if relu6 else z > 0
    assert active.any() and (~active).any()
    if relu6:
        assert (z >= 6).any(), "the test model must reach the ReLU6 ceiling"
    expect = {
        "saliency": (active * w2) @ w1,
        "guided_backprop": (active * w2.clamp(min=0)) @ w1,
        "deconvnet": (w2.clamp(min=0).expand_as(z)) @ w1,
    }
    got = {}

    model = wrap(net, input_size=(1, 1), mean=(0.0,) * 6, std=(1.0,) * 6)  # six input channels, no Conv2d to read

    def run_all():
        for method in expect:
            got[method] = attribute(model, x, method, target=0).values.flatten(1)

    assert assert_unchanged(net, run_all) is None
    for method, want in expect.items():
        torch.testing.assert_close(got[method], want, msg=method)
    assert net.act.inplace is inplace


# -- GAP + linear: the CAM family in closed form ------------------------------------------------------
def _gap_parts(net: GapLinearNet, x: torch.Tensor, cls: int):
    with torch.no_grad():
        acts = net.features(x)
    w = net.fc.weight.detach()[cls]
    cam = torch.einsum("k,bkhw->bhw", w, acts)[:, None]  # Zhou et al. 2016
    return acts, w, cam, acts.shape[-1] * acts.shape[-2]


def test_gradcam_equals_cam_on_gap_linear_net():
    net, x = GapLinearNet(), inputs((3, 3, 12, 10), seed=4)
    acts, w, cam, z = _gap_parts(net, x, 1)
    signed = attribute(net, x, "gradcam", target=1, relu=False)
    assert signed.layer == "features" and signed.spec["layer_choice"].startswith("auto")
    torch.testing.assert_close(signed.values, cam / z)  # a positive factor 1/Z
    torch.testing.assert_close(attribute(net, x, "gradcam", target=1).values, cam.clamp(min=0) / z)
    torch.testing.assert_close(attribute(net, x, "hirescam", target=1).values, cam / z)


def test_layercam_and_gradcam_pp_closed_forms_on_gap_linear_net():
    net, x = GapLinearNet(), inputs((2, 3, 12, 10), seed=6)
    acts, w, _, z = _gap_parts(net, x, 2)
    g = (w / z).view(1, -1, 1, 1)
    layercam = (g.clamp(min=0) * acts).sum(1, keepdim=True).clamp(min=0)
    torch.testing.assert_close(attribute(net, x, "layercam", target=2, layer="features").values, layercam)
    s = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g ** 2 / (2 * g ** 2 + s * g ** 3)
    wpp = z * alpha * g.clamp(min=0)
    want = (wpp * acts).sum(1, keepdim=True).clamp(min=0)
    torch.testing.assert_close(attribute(net, x, "gradcam_pp", target=2).values, want, rtol=1e-4, atol=1e-6)


# -- Score-CAM and RISE against naive loops ----------------------------------------------------------------
def test_scorecam_equals_naive_per_channel_loop():
    net = InplaceReLUNet().eval()
    x = inputs((2, 3, 16, 20), seed=7)
    a = attribute(net, x, "scorecam", target=[3, 5], batch_size=7)
    assert a.layer == "features"
    with torch.no_grad():
        acts = net.features(x.clone())
        want = []
        for b, cls in enumerate([3, 5]):
            scores = []
            for k in range(acts.shape[1]):
                up = torch.nn.functional.interpolate(acts[b:b + 1, k:k + 1], size=x.shape[-2:], mode="bilinear",
                                                     align_corners=False)
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                scores.append(float(net(x[b:b + 1] * mask)[0, cls]))
            wts = torch.tensor(scores).softmax(0)
            want.append((wts.view(-1, 1, 1) * acts[b]).sum(0).clamp(min=0))
    torch.testing.assert_close(a.values[:, 0], torch.stack(want), rtol=1e-4, atol=1e-6)


def test_rise_equals_naive_sum_over_masks():
    net = InplaceReLUNet().eval()
    x = inputs((2, 3, 16, 20), seed=8)
    n = RISE_MASK_CHUNK + 8
    a = attribute(net, x, "rise", target=[1, 4], n_masks=n, grid=4, p=0.4, seed=11, batch_size=6)
    gen = torch.Generator().manual_seed(11)
    masks = torch.cat([rise_masks(len(range(s, min(s + RISE_MASK_CHUNK, n))), (16, 20), grid=4, p=0.4,
                                  generator=gen) for s in range(0, n, RISE_MASK_CHUNK)])
    with torch.no_grad():
        want = []
        for b, cls in enumerate([1, 4]):
            probs = net(masks * x[b:b + 1]).softmax(1)[:, cls]
            want.append((probs.view(-1, 1, 1) * masks[:, 0]).sum(0) / (n * 0.4))
    torch.testing.assert_close(a.values[:, 0], torch.stack(want), rtol=1e-4, atol=1e-6)


def test_rise_masks_statistics():
    m = rise_masks(400, (21, 30), grid=(3, 5), p=0.3, generator=torch.Generator().manual_seed(0))
    assert m.shape == (400, 1, 21, 30)
    assert m.min() >= 0 and m.max() <= 1
    assert abs(float(m.mean()) - 0.3) < 0.03
    again = rise_masks(400, (21, 30), grid=(3, 5), p=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


@pytest.mark.parametrize("model", sorted(ALL_TINY))
def test_integrated_gradients_completeness_at_64_steps(model):
    net = ALL_TINY[model]()
    x = inputs(NON_SQUARE, seed=1)
    a = attribute(net, x, "integrated_gradients", n_steps=64, target=[0, 1])
    with torch.no_grad():
        out = net.eval()(x)
        base = net(torch.zeros_like(x))
    want = out[[0, 1], [0, 1]] - base[[0, 1], [0, 1]]
    got = a.values.flatten(1).sum(1)
    assert ((got - want).abs() <= 0.01 * want.abs()).all(), (got, want)  # within 1% per image
    torch.testing.assert_close(torch.tensor(a.spec["completeness"]["score_difference"]), want, rtol=1e-5, atol=1e-7)
