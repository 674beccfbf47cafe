"""docs/ARCHITECTURE.md rule 2 for the stimuli area: every public operation leaves the model exactly as it found it."""

from __future__ import annotations

import numpy as np
import pytest

from cnnscope.stimuli import (
    Curve,
    discover_family,
    joint_tuning,
    render,
    rf_offset,
    stimulus_responses,
    tuning_map,
    unit_responses,
)
from cnnscope.stimuli.responses import image_batches
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet

SMALL = dict(size=20, orientations=[0.0, 120.0, 240.0], levels=[4.0, 8.0])
CROPS = {1: [np.full((24, 24, 3), 90, np.uint8), np.eye(24, dtype=np.uint8)[..., None].repeat(3, 2) * 255]}

OPERATIONS = {
    "stimulus_responses": lambda m: stimulus_responses(m, "features.4", [Curve(), Curve(orientation=90.0)], size=20),
    "unit_responses": lambda m: unit_responses(m, "features.5", image_batches(render([Curve()] * 3, 20), 2)),
    "tuning_map": lambda m: tuning_map(m, "features.5", **SMALL),
    "tuning_map_pre": lambda m: tuning_map(m, "features.5", pre_activation=True, **SMALL),
    "discover_family": lambda m: discover_family(m, "features.2", k=2, min_selectivity=0.0, **SMALL),
    "joint_tuning": lambda m: joint_tuning(m, "features.5", CROPS, units=[0, 3], step=90.0),
    "rf_offset": lambda m: rf_offset(m, "features.5", 20),
    "raises_bad_unit": lambda m: tuning_map(m, "features.5", [99], **SMALL),
    "raises_bad_layer": lambda m: joint_tuning(m, "features.55", CROPS, step=90.0),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_model_unchanged(name):
    net = InplaceReLUNet().train()  # training mode, batch norm with running stats, in-place ReLUs
    error = assert_unchanged(net, lambda: OPERATIONS[name](net))
    assert (error is not None) == name.startswith("raises"), error
