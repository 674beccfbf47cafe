"""Gradients with respect to the parameters: closed forms on a linear classifier, equality with a plain
``backward()`` on a small CNN, and the model left as it was."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.errors import MethodError
from cnnscope.models import wrap
from cnnscope.units import unit
from cnnscope.zf.param_grads import parameter_gradients
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet

pytestmark = pytest.mark.usefixtures("single_thread")


def _images(n: int, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _linear():
    torch.manual_seed(0)
    return wrap(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)), 4, labels=list("abcde"))


@pytest.mark.parametrize("score", ["logit", "prob", "loss"])
def test_linear_classifier_matches_the_closed_form(score):
    model = _linear()
    imgs = _images(1, 4)
    g = parameter_gradients(model, imgs, target="c", score=score)
    x = model.batch(imgs)[0].flatten()
    with torch.no_grad():
        p = model.module(x[None])[0].softmax(0)
    e = torch.eye(5)[2]
    dz = {"logit": e, "prob": p[2] * (e - p), "loss": p - e}[score]  # d score / d logits
    # d score / d W = dz x^T, d score / d b = dz: their norms are |dz| |x| and |dz|
    w, b = g.names.index("1.weight"), g.names.index("1.bias")
    torch.testing.assert_close(g.grad_norms[w], dz.norm() * x.norm(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g.grad_norms[b], dz.norm(), rtol=1e-5, atol=1e-7)
    lin = model.module[1]
    torch.testing.assert_close(g.relative[w], g.grad_norms[w] / lin.weight.norm().detach(), rtol=1e-6, atol=0)
    row = g.layer_table()[0]
    assert row["layer"] == "1" and row["parameters"] == ["weight", "bias"]
    assert row["grad_norm"] == pytest.approx(float(dz.norm()) * (float(x.norm()) ** 2 + 1) ** 0.5, rel=1e-5)
    assert g.classes == [2] and g.target == ["c (2)"] and g.first_layer is None and not g.unused


def test_several_images_give_the_mean_gradient():
    model = _linear()
    imgs = _images(3, 4)
    g = parameter_gradients(model, imgs, target=[0, 3, None], batch_size=2)
    x = model.batch(imgs).flatten(1)
    top = int(model.module(model.batch(imgs[2:])).argmax())
    dw = sum(torch.outer(torch.eye(5)[c], x[i]) for i, c in enumerate([0, 3, top])) / 3
    torch.testing.assert_close(g.grad_norms[0], dw.norm(), rtol=1e-5, atol=1e-7)
    assert g.classes == [0, 3, top]


def _independent(net: nn.Module, x: torch.Tensor, classes: list[int]) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(net).eval().requires_grad_(True)
    F.cross_entropy(ref(x), torch.tensor(classes)).backward()
    return {k: p.grad for k, p in ref.named_parameters()}


def test_cnn_loss_gradient_equals_backward_and_leaves_the_model_alone():
    net = InplaceReLUNet(num_classes=4).train()
    net.features[0].bias.requires_grad_(False)  # a frozen parameter is differentiated too, and stays frozen
    model = wrap(net, 8)
    imgs = _images(3)
    assert assert_unchanged(net, lambda: parameter_gradients(model, imgs, target=[1, 0, 3], score="loss",
                                                             batch_size=1)) is None
    g = parameter_gradients(model, imgs, target=[1, 0, 3], score="loss", batch_size=1)
    ref = _independent(net, model.batch(imgs), [1, 0, 3])
    assert g.names == list(ref)
    for i, name in enumerate(g.names):
        torch.testing.assert_close(g.grad_norms[i], ref[name].norm(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g.weight_norms[i], dict(net.named_parameters())[name].detach().norm())
    assert list(g.filter_norms) == ["features.0.weight", "features.4.weight"]
    for name, fmap in g.filter_norms.items():
        torch.testing.assert_close(fmap, ref[name].flatten(2).norm(dim=2), rtol=1e-4, atol=1e-6)
    assert g.first_layer == "features.0.weight"
    torch.testing.assert_close(g.first_grad, ref["features.0.weight"], rtol=1e-4, atol=1e-6)
    assert net.training and not net.features[0].bias.requires_grad and net.features[0].weight.grad is None


def test_unit_target_reaches_only_the_layers_below():
    net = InplaceReLUNet(num_classes=4)
    model = wrap(net, 8)
    imgs = _images(2)
    g = parameter_gradients(model, imgs, target=unit("features.0", 3))
    assert set(g.unused) == {"features.1.weight", "features.1.bias", "features.4.weight", "features.4.bias",
                             "fc.weight", "fc.bias"}
    assert float(g.grad_norms[g.names.index("fc.weight")]) == 0.0
    ref = copy.deepcopy(net).eval()
    ref.features[0](model.batch(imgs))[:, 3].mean(dim=(1, 2)).mean().backward()
    torch.testing.assert_close(g.first_grad, ref.features[0].weight.grad, rtol=1e-4, atol=1e-6)


def test_bad_scores_and_plain_modules():
    model = _linear()
    with pytest.raises(MethodError, match="unknown score 'los'; did you mean: loss"):
        parameter_gradients(model, _images(1, 4), score="los")
    with pytest.raises(MethodError, match="needs a class target"):
        parameter_gradients(model, _images(1, 4), target=lambda out: out[:, 0], score="loss")
    with pytest.raises(TypeError):
        parameter_gradients(model, _images(1, 4), 2)  # options are keyword-only
    x = model.batch(_images(2, 4))
    a, b = parameter_gradients(model, x, target=1), parameter_gradients(model.module, x, target=1)
    torch.testing.assert_close(a.grad_norms, b.grad_norms)


def test_paramgrads_command(tmp_path, capsys):
    from cnnscope.cli import main
    from cnnscope.images import save_image

    net = InplaceReLUNet(num_classes=4)
    net.input_size = (8, 8)
    torch.save(net, tmp_path / "net.pt")
    save_image(_images(1)[0], tmp_path / "a.png")
    code = main(["paramgrads", str(tmp_path / "net.pt"), str(tmp_path / "a.png"), "--trust-pickle", "--target", "2",
                 "--score", "loss", "--top", "3", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "o" / "paramgrads.json").read_text())
    assert data["classes"] == [2] and data["score"] == "loss" and len(data["parameters"]) == 8
    assert [r["layer"] for r in data["layers"]] == ["features.0", "features.1", "features.4", "fc"]
    assert np.load(tmp_path / "o" / "first_layer_grad.npy").shape == (8, 3, 3, 3)
    assert (tmp_path / "o" / "paramgrads.png").stat().st_size > 5000
    assert "\nloss of class 2 (2): " in out and out.count("|g|/|w|") == 3
    assert out.index("fc: ") < out.index("features.4: ") < out.index("features.0: ")  # largest ratio first


@pytest.mark.parametrize("args", [["paramgrads", "no_such_model", "sample:chelsea"],
                                  ["featurespace", "no_such_model", "samples"]])
def test_an_unwritable_out_fails_before_the_model_loads(tmp_path, capsys, args):
    from cnnscope.cli import main

    (tmp_path / "file.txt").write_text("x")
    code = main([*args, "--out", str(tmp_path / "file.txt" / "sub")])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.startswith("error: cannot write to output folder")
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_lite0_gradients_equal_a_plain_backward(lite0, samples):
    g = parameter_gradients(lite0, [samples["coffee"]], target="espresso", score="loss")
    ref = copy.deepcopy(lite0.module).eval().requires_grad_(True)
    F.cross_entropy(ref(lite0.batch([samples["coffee"]])), torch.tensor([967])).backward()
    grads = dict(ref.named_parameters())
    expect = torch.stack([grads[n].grad.norm() for n in g.names])
    torch.testing.assert_close(g.grad_norms, expect, rtol=1e-3, atol=1e-6)
    assert g.first_layer == "conv_stem.weight" and g.first_grad.shape == (32, 3, 3, 3) and not g.unused
    assert all(p.grad is None for p in lite0.module.parameters())
