"""docs/ARCHITECTURE.md rule 2: every public foundation operation leaves the model exactly as it was, also when it
raised."""

from __future__ import annotations

import pytest
import torch

from cnnscope import Capture, capture, list_layers, relu_rule, wrap
from cnnscope.capture import evaluating, patch_outputs
from tests.conformance import assert_unchanged
from tests.models import ALL_TINY, NON_SQUARE, OneReLUNet, ResidualNet


def _capture_with_grads(net):
    x = torch.randn(*NON_SQUARE, requires_grad=True)
    with Capture(net, ["features.0" if hasattr(net, "features") else next(n for n, _ in net.named_modules() if n)],
                 grads=True, stop_early=False) as cap:
        out = cap.run(x)
        torch.autograd.grad(out.sum(), x)


def _guided(net):
    x = torch.randn(*NON_SQUARE, requires_grad=True)
    with relu_rule(net, "guided"), evaluating(net):
        torch.autograd.grad(net(x).sum(), x)


def _raise_inside_capture(net):
    with Capture(net, next(n for n, _ in net.named_modules() if n)):
        raise RuntimeError("user code failed inside the block")


def _patched(net):
    name = next(n for n, _ in net.named_modules() if n)
    with torch.no_grad(), patch_outputs(net, {name: lambda y: y * 0}), evaluating(net):
        net(torch.randn(*NON_SQUARE))


OPERATIONS = {
    "list_layers": lambda net: list_layers(net, NON_SQUARE[2:]),
    "capture": lambda net: capture(net, torch.randn(*NON_SQUARE), [n for n, _ in net.named_modules() if n][:2]),
    "capture_grads": _capture_with_grads,
    "guided_rule": _guided,
    "deconv_rule_raises": lambda net: relu_rule(net, "bogus").__enter__(),
    "unknown_layer": lambda net: Capture(net, "nope"),
    "raise_inside_capture": _raise_inside_capture,
    "patch_outputs": _patched,
    "predict": lambda net: wrap(net, input_size=NON_SQUARE[2:]).predict(
        torch.rand(20, 28, 3).numpy(), k=2),
}


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("model", sorted(ALL_TINY))
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_operation_leaves_model_unchanged(op, model, train_mode):
    net = ALL_TINY[model]().train(train_mode)
    err = assert_unchanged(net, lambda: OPERATIONS[op](net))
    if op in ("deconv_rule_raises", "unknown_layer", "raise_inside_capture"):
        assert err is not None
    else:
        assert err is None, err


def test_lite0_operations_leave_it_unchanged(lite0, samples):
    m = lite0.module
    x = lite0.preprocess(samples["chelsea"]).requires_grad_()

    def guided():
        with relu_rule(m, "guided"):
            torch.autograd.grad(m(x)[0, 281], x)

    for op in (guided, lambda: lite0.predict(samples["coffee"]), lambda: capture(m, x, ["blocks.4.0", "nope"])):
        assert_unchanged(m, op)


def test_one_relu_net_inplace_flag_restored_after_error():
    net = OneReLUNet(inplace=True)

    def fails():
        with relu_rule(net, "deconv"):
            net(torch.randn(2, 3))  # wrong input width -> matmul error inside the block

    err = assert_unchanged(net, fails)
    assert isinstance(err, RuntimeError)
    assert ResidualNet  # the reused-ReLU model is covered by the parametrized test
