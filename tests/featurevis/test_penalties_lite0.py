"""Penalty normalisation on the pretrained EfficientNet-Lite0: at the documented weight (1) total variation and
blur lower the high-frequency share of plain gradient-ascent renders by at least a fifth, at 64 and at 128 px."""

from __future__ import annotations

import pytest

from cnnscope.featurevis import blur, channel, high_frequency_share, render, total_variation
from cnnscope.featurevis.penalties import DEFAULT_WEIGHT

LAYER, CHANNELS, STEPS = "blocks.4.0", (0, 1), 48


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 128])
def test_default_weight_lowers_the_high_frequency_share(lite0, size):
    penalties = {"none": None, "total_variation": total_variation(), "blur": blur()}
    objs = [channel(LAYER, c) if p is None else channel(LAYER, c) - DEFAULT_WEIGHT * p
            for p in penalties.values() for c in CHANNELS]
    res = render(lite0, objs, recipe="plain", steps=STEPS, size=size, seed=0)
    hf = high_frequency_share(res.images).view(len(penalties), len(CHANNELS))
    free = hf[0]
    assert (free > 0.5).all(), free  # plain ascent's high-frequency patterns
    for row, name in zip(hf[1:], list(penalties)[1:]):
        assert (row <= 0.8 * free).all(), (name, size, row, free)
    # the unit still responds: the penalty trades activation for smoothness, it does not erase the unit
    acts = res.activations.view(len(penalties), len(CHANNELS))
    assert (acts[1:] > 0.25 * acts[0]).all(), acts
