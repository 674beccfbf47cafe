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
    invariance_study,
    occlusion_study,
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
    "project": lambda m: project(m.module, X, "features.5", 2),
    "rule_projection": lambda m: rule_projection(m.module, X, "features.5", 2),
    "DeconvNet": lambda m: DeconvNet(m.module, "features.3", (16, 16)).forward(X),
    "top_projections": lambda m: top_projections(m, IMGS, "features.5", [0, 1], k=2),
    "occlusion_study": lambda m: occlusion_study(m, IMGS[0], "features.5", size=8, stride=8),
    "invariance_study": lambda m: invariance_study(m, IMGS[:2], "rotate", [0, 90]),
    "correspondence": lambda m: correspondence(m, IMGS, [(0, 0, 4, 4)] * 3, n_random=1),
    "decision_plane": lambda m: decision_plane(m, IMGS, resolution=3),
    "feature_maps": lambda m: feature_maps(m.module, X, "features.2"),
    "evolution": lambda m: evolution([m], IMGS, "features.5", [0]),
}

#: operations that must raise on this model, and what
RAISING = {
    "project_unknown_layer": (lambda m: project(m.module, X, "features.9", 0), "did you mean"),
    "project_residual": (lambda m: project(m.module, X, "layer2.conv2", 0), "BasicBlock"),
    "occlusion_bad_channel": (lambda m: occlusion_study(m, IMGS[0], "features.5", channel=99, size=8),
                              "out of range"),
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
