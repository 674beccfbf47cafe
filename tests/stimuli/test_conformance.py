"""docs/ARCHITECTURE.md rule 2 for the stimuli area: every public operation leaves the model exactly as it found it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.stimuli import (
    Curve,
    discover_family,
    joint_tuning,
    rf_offset,
    stimulus_responses,
    tuning_map,
    tuning_report,
    unit_responses,
)
from tests.conformance import assert_unchanged
from tests.dataset.helpers import RandomImages
from tests.models import InplaceReLUNet

SMALL = dict(size=20, orientations=[0.0, 120.0, 240.0], levels=[4.0, 8.0])
CROPS = {1: [np.full((24, 24, 3), 90, np.uint8), np.eye(24, dtype=np.uint8)[..., None].repeat(3, 2) * 255]}

OPERATIONS = {
    "stimulus_responses": lambda m: stimulus_responses(m, [Curve(), Curve(orientation=90.0)], "features.4", size=20),
    "unit_responses": lambda m: unit_responses(m, [torch.rand(2, 3, 20, 20), torch.rand(1, 3, 20, 20)], "features.5"),
    "tuning_map": lambda m: tuning_map(m, "features.5", **SMALL),
    "tuning_map_pre": lambda m: tuning_map(m, "features.5", pre_activation=True, **SMALL),
    "discover_family": lambda m: discover_family(m, "features.2", k=2, min_selectivity=0.0, **SMALL),
    "joint_tuning": lambda m: joint_tuning(m, CROPS, "features.5", channels=[0, 3], step=90.0),
    "tuning_report": lambda m: tuning_report(m, "features.5", channels=[1, 2], source=RandomImages(3, (24, 24)),
                                             step=120.0, levels=[4.0], size=20, examples=1, joint_step=180.0,
                                             pre_activation=True),
    "rf_offset": lambda m: rf_offset(m, "features.5", size=20),
    "raises_bad_unit": lambda m: tuning_map(m, "features.5", channels=[99], **SMALL),
    "raises_bad_layer": lambda m: joint_tuning(m, CROPS, "features.55", step=90.0),
}


@pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")  # a plain module: ImageNet defaults assumed
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_model_unchanged(name):
    net = InplaceReLUNet().train()  # training mode, batch norm with running stats, in-place ReLUs
    error = assert_unchanged(net, lambda: OPERATIONS[name](net))
    assert (error is not None) == name.startswith("raises"), error
