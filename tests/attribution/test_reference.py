"""Equality with Captum and pytorch-grad-cam (the optional ``bench`` extra); skipped when they are missing.

The closed-form tests do not need these packages; here two independent implementations must agree.
pytorch-grad-cam switches the model to eval mode and writes parameter gradients, so it gets a copy.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cnnscope.attribution import attribute
from tests.models import GapLinearNet, InplaceReLUNet, ResidualNet

pytestmark = pytest.mark.usefixtures("single_thread")


def captum_attr():
    return pytest.importorskip("captum.attr", reason="captum is not installed (pip install '.[bench]')")


def gradcam_lib():
    return pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed (pip install '.[bench]')")


def x_of(shape=(2, 3, 16, 20), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def norm01(m: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``[B, H, W]``."""
    flat = m.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return ((flat - lo[:, None]) / (hi - lo).clamp(min=1e-12)[:, None]).view_as(m)


@pytest.mark.parametrize("net_cls", [InplaceReLUNet, GapLinearNet])
def test_gradient_methods_equal_captum(net_cls):
    ca = captum_attr()
    net, x = net_cls().eval(), x_of()
    t = [1, 2]
    pairs = {"saliency": lambda: ca.Saliency(net).attribute(x, target=t, abs=False),
             "input_x_gradient": lambda: ca.InputXGradient(net).attribute(x, target=t),
             "guided_backprop": lambda: ca.GuidedBackprop(net).attribute(x, target=t),
             "deconvnet": lambda: ca.Deconvolution(net).attribute(x, target=t)}
    for method, ref in pairs.items():
        ours = attribute(net, x, method, target=t).values
        torch.testing.assert_close(ours, ref().detach(), rtol=1e-4, atol=1e-6, msg=method)


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
def test_integrated_gradients_equal_captum(quadrature):
    ca = captum_attr()
    net, x = ResidualNet().eval(), x_of()
    base = x_of(seed=3) * 0.1
    ours = attribute(net, x, "integrated_gradients", target=[0, 3], baseline=base, n_steps=20,
                     quadrature=quadrature, batch_size=7)
    ref, delta = ca.IntegratedGradients(net).attribute(x, baselines=base, target=[0, 3], n_steps=20,
                                                       method=quadrature, return_convergence_delta=True)
    if quadrature == "riemann_trapezoid":
        # Captum's trapezoid puts n points on [0, 1] but uses steps of 1/n (weights summing to (n-1)/n);
        # the trapezoid rule's step is 1/(n-1): ours = Captum's * n/(n-1), so a constant stays complete.
        torch.testing.assert_close(ours.values * 19 / 20, ref.detach(), rtol=1e-4, atol=1e-6)
        return
    torch.testing.assert_close(ours.values, ref.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.tensor(ours.spec["completeness"]["delta"]), delta.detach().float(),
                               rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("window,stride", [(4, 2), (5, 3)])
def test_occlusion_equals_captum(window, stride):
    ca = captum_attr()
    net, x = InplaceReLUNet().eval(), x_of()
    ours = attribute(net, x, "occlusion", target=[4, 1], window=window, stride=stride, baseline=0.25, batch_size=9)
    ref = ca.Occlusion(net).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                      baselines=0.25, target=[4, 1], perturbations_per_eval=8)
    torch.testing.assert_close(ours.values, ref.detach(), rtol=1e-4, atol=1e-6)


def test_gradcam_equals_captum_layer_gradcam():
    ca = captum_attr()
    net, x = ResidualNet().eval(), x_of()
    ours = attribute(net, x, "gradcam", target=[2, 0], relu=False)
    assert ours.layer == "layer2"
    ref = ca.LayerGradCam(net, net.layer2).attribute(x, target=[2, 0])
    torch.testing.assert_close(ours.values, ref.detach(), rtol=1e-4, atol=1e-6)


def _grad_cam_reference(lib, name: str, net, layer, x, targets, scale):
    cls = {"gradcam": lib.GradCAM, "gradcam_pp": lib.GradCAMPlusPlus, "layercam": lib.LayerCAM,
           "hirescam": lib.HiResCAM, "scorecam": lib.ScoreCAM}[name]
    with cls(model=net, target_layers=[layer]) as cam:
        if name == "scorecam":
            cam.batch_size = 7
        return torch.from_numpy(cam(input_tensor=x, targets=[lambda o, t=t: scale * o[t] for t in targets]))


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "layercam", "hirescam", "scorecam"])
def test_cams_equal_pytorch_grad_cam(method):
    lib = gradcam_lib()
    net, x = InplaceReLUNet().eval(), x_of()
    # pytorch-grad-cam adds 1e-6 to Grad-CAM++'s denominator 2 g^2 + sum(A) g^3; on this tiny net g ~ 1e-3, so
    # the score is scaled up (the same for both) to make that constant negligible. Grad-CAM++ depends on the
    # score's scale by definition (it models Y = exp(S)).
    if method == "gradcam_pp":
        scale, classes = 1000.0, [3, 3]
        target = lambda out: scale * out[:, 3]  # noqa: E731
    else:
        scale, classes = 1.0, [3, 7]
        target = classes
    extra = {"align_corners": True} if method == "scorecam" else {}  # their masks use UpsamplingBilinear2d
    ours = attribute(net, x, method, target=target, relu=True, **extra)
    theirs_net = copy.deepcopy(net)
    ref = _grad_cam_reference(lib, method, theirs_net, theirs_net.features, x.clone(), classes, scale)
    up = F.interpolate(ours.values, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(norm01(up), norm01(ref.float()), rtol=0, atol=1e-4)


def test_lite0_gradcam_equals_captum(lite0, samples):
    ca = captum_attr()
    x = lite0.preprocess(samples["chelsea"])
    ours = attribute(lite0, x, "gradcam", target=281)
    ref = ca.LayerGradCam(lite0.module, lite0.module.bn2).attribute(x, target=281, relu_attributions=True)
    torch.testing.assert_close(norm01(ours.values[:, 0]), norm01(ref.detach()[:, 0]), rtol=0, atol=1e-4)
