"""docs/ARCHITECTURE.md rule 2 for every public operation of cnnscope.zf: the model is left exactly as it was found."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.models import wrap
from cnnscope.zf import (
    DeconvError,
    DeconvNet,
    correspondence,
    decision_plane,
    evolution,
    feature_maps,
    feature_space,
    invariance_study,
    occlusion_study,
    parameter_gradients,
    project,
    rule_projection,
    top_projections,
)
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet, ResidualNet

IMGS = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(3)]
X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))

#: name -> operation on a LoadedModel whose module is a training-mode InplaceReLUNet (BN, in-place ReLUs)
OPERATIONS = {
    "project": lambda m: project(m.module, X, "features.5", channel=2),
    "project_pre_activation": lambda m: project(m, X, "features.5", channel=2, pre_activation=True),
    "rule_projection": lambda m: rule_projection(m.module, X, "features.5", channel=2, position=None),
    "DeconvNet": lambda m: DeconvNet(m, "features.3").forward(X),
    "top_projections": lambda m: top_projections(m, IMGS, "features.5", channels=[0, 1], k=2),
    "occlusion_study": lambda m: occlusion_study(m, IMGS[0], "features.5", size=8, stride=8),
    "invariance_study": lambda m: invariance_study(m, IMGS[:2], "rotate", amounts=[0, 90]),
    "correspondence": lambda m: correspondence(m, IMGS, [(0, 0, 4, 4)] * 3, n_random=1),
    "decision_plane": lambda m: decision_plane(m, IMGS, resolution=3),
    "feature_maps": lambda m: feature_maps(m.module, X, "features.2", pre_activation=True),
    "evolution": lambda m: evolution([m], IMGS, "features.5", channels=[0]),
    "parameter_gradients": lambda m: parameter_gradients(m, IMGS[:2], score="loss"),
    "feature_space": lambda m: feature_space(m, IMGS, resolution=3),
}

#: operations that must raise on this model, and what
RAISING = {
    "project_unknown_layer": (lambda m: project(m.module, X, "features.9", channel=0), "did you mean"),
    "project_residual": (lambda m: project(m.module, X, "layer2.conv2", channel=0), "BasicBlock"),
    "rule_projection_bad_channel": (lambda m: rule_projection(m, X, "features.5", channel=99), "outside"),
    "occlusion_bad_channel": (lambda m: occlusion_study(m, IMGS[0], "features.5", channel=99, size=8),
                              "outside"),
    "top_projections_empty": (lambda m: top_projections(m, [], "features.5"), "empty"),
    "correspondence_box_outside": (lambda m: correspondence(m, IMGS[:2], [(0, 0, 4, 4), (10, 10, 20, 20)]),
                                   "outside"),
}


def _model(name: str = ""):
    net = ResidualNet(num_classes=4) if "residual" in name else InplaceReLUNet(num_classes=4)
    return wrap(net.train(), 16, labels=list("abcd"))


@pytest.fixture
def model():
    return _model()


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_leaves_the_model_unchanged(model, name):
    err = assert_unchanged(model.module, lambda: OPERATIONS[name](model))
    assert err is None, f"{name} raised {err!r}"


@pytest.mark.parametrize("name", sorted(RAISING))
def test_raising_operation_leaves_the_model_unchanged(name):
    model = _model(name)
    op, message = RAISING[name]
    err = assert_unchanged(model.module, lambda: op(model))
    assert err is not None and message in str(err)
    if name == "project_residual":
        assert isinstance(err, DeconvError)


#: every public function of cnnscope.zf that takes a model (evolution takes a list of them: its docstring says why)
MODEL_FIRST = ["DeconvNet", "conv_layers", "conv_weights", "correspondence", "decision_plane", "feature_maps",
               "invariance_study", "occlusion_study", "project", "rule_projection", "top_projections"]


@pytest.mark.parametrize("name", MODEL_FIRST + ["evolution"])
def test_signatures_take_the_model_first_and_options_by_keyword(name):
    import inspect

    import cnnscope.zf as zf

    params = list(inspect.signature(getattr(zf, name)).parameters.values())
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert params[0].name == ("checkpoints" if name == "evolution" else "model")
    assert len(positional) <= 3 and params[:len(positional)] == positional
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(positional):])
    names = {p.name: p for p in params}
    if "batch_size" in names:
        assert names["batch_size"].default is None
    assert "device" not in names or name == "evolution"  # evolution loads checkpoint files
    if name in ("project", "rule_projection"):
        assert names["position"].default == "max"
    for option in ("pre_activation", "progress"):
        if option in names:
            assert names[option].default is False
