"""Every registered method on every tiny CNN (in-place ReLU, reused ReLU + residual, ReLU6, GAP + linear).

Parametrized over the registry, so a new method is tested automatically: shapes, finite values, the model left
unchanged (docs/ARCHITECTURE.md, rule 2), batch independence, one target per image, reproducible randomness.
"""

from __future__ import annotations

import json

import pytest
import torch

from cnnscope.attribution import Attribution, get_method, list_methods
from cnnscope.attribution import attribute as attribute_
from tests.conformance import assert_unchanged
from tests.models import ALL_TINY, NON_SQUARE

#: cheaper settings for the slow-by-design methods (methods not listed run with their defaults)
FAST = {"rise": {"n_masks": 40}, "integrated_gradients": {"n_steps": 8}, "smoothgrad": {"n_samples": 3},
        "occlusion": {"window": 8, "stride": 4}}
METHODS = list_methods()
pytestmark = pytest.mark.usefixtures("single_thread")


def attribute(net, x, method, **kw) -> Attribution:
    return attribute_(net, x, method, **{**FAST.get(method, {}), **kw})


def test_registry_holds_every_method_of_the_issue():
    want = {"saliency", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients", "smoothgrad",
            "gradcam", "gradcam_pp", "layercam", "hirescam", "scorecam", "guided_gradcam", "occlusion", "rise"}
    assert want <= set(METHODS)
    assert set(list_methods("layer")) == {"gradcam", "gradcam_pp", "layercam", "hirescam", "scorecam"}


@pytest.mark.parametrize("model", sorted(ALL_TINY))
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_and_leaves_model_unchanged(method, model):
    net = ALL_TINY[model]().train(True)  # eval mode during the call, train mode again afterwards
    x = torch.randn(*NON_SQUARE, generator=torch.Generator().manual_seed(0))
    got = {}
    err = assert_unchanged(net, lambda: got.setdefault("a", attribute(net, x, method, target=[0, 1])))
    assert err is None, err
    a = got["a"]
    cls = get_method(method)
    b, c, h, w = x.shape
    if cls.kind == "layer":
        assert a.values.shape[:2] == (b, 1) and a.values.shape[-1] * a.values.shape[-2] > 1
        assert a.layer is not None and a.spec["layer_choice"].startswith("auto")
    else:
        assert a.values.shape in ((b, c, h, w), (b, 1, h, w))
    assert torch.isfinite(a.values).all()
    assert a.target == [0, 1] and a.scores.shape == (b,)
    assert a.values.device == x.device and a.values.dtype == x.dtype
    json.dumps(a.spec)  # JSON-ready
    assert a.heatmap().shape == (b, h, w)


@pytest.mark.parametrize("model", ["inplace_relu", "residual"])
@pytest.mark.parametrize("method", [m for m in METHODS if get_method(m).batch_independent])
def test_batch_gives_per_image_results_with_one_target_each(method, model):
    net = ALL_TINY[model]()
    x = torch.randn(3, 3, 12, 14, generator=torch.Generator().manual_seed(2))
    together = attribute(net, x, method, target=[2, 0, 4], batch_size=2)
    for i, t in enumerate([2, 0, 4]):
        alone = attribute(net, x[i:i + 1], method, target=t)
        torch.testing.assert_close(together.values[i:i + 1], alone.values, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.scores[i:i + 1], alone.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if "seed" in get_method(m).defaults()])
def test_random_methods_are_reproducible_from_a_seed(method):
    net = ALL_TINY["inplace_relu"]()
    x = torch.randn(2, 3, 16, 20, generator=torch.Generator().manual_seed(3))
    a = attribute(net, x, method, seed=5)
    b = attribute(net, x, method, seed=5)
    c = attribute(net, x, method, seed=6)
    g = attribute(net, x, method, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.values, b.values) and torch.equal(a.values, g.values)
    assert not torch.equal(a.values, c.values)


def test_top1_target_is_the_argmax():
    net = ALL_TINY["residual"]()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        top = net.eval()(x).argmax(1).tolist()
    for method in ("saliency", "gradcam", "occlusion"):
        a = attribute(net, x, method)
        assert a.target == top
        assert a.spec["target"]["given"] is None


def test_options_are_recorded_in_the_spec():
    net = ALL_TINY["gap_linear"]()
    x = torch.randn(1, 3, 10, 10)
    a = attribute(net, x, "integrated_gradients", n_steps=5, quadrature="riemann_middle", baseline=torch.zeros(3, 1, 1))
    opts = a.spec["options"]
    assert opts["n_steps"] == 5 and opts["quadrature"] == "riemann_middle" and opts["baseline"] == "tensor[3, 1, 1]"
    assert a.spec["method"] == "integrated_gradients" and a.spec["input_shape"] == [1, 3, 10, 10]
