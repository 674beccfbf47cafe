"""Real values: the pretrained EfficientNet-Lite0 has a family of curve detectors, as InceptionV1 has in 3b."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope import Capture
from cnnscope.stimuli import Curve, discover_family, stimulus_responses, tuning_map

LAYER = "blocks.3.1.bn1.act"  # expansion ReLU6 of the 4th stage (stride 16, 83 px receptive field)
ORIENTATIONS = np.arange(0.0, 360.0, 15.0)


@pytest.fixture(scope="module")
def dataset_stats(lite0, samples):
    """Mean/std of every pre-activation channel over all positions of the sample photos."""
    x = lite0.preprocess(list(samples.values()))
    with torch.no_grad(), Capture(lite0.module, LAYER, pre_activation=True) as cap:
        cap.run(x)
    act = cap[LAYER].double()
    return act.mean(dim=(0, 2, 3)).numpy(), act.std(dim=(0, 2, 3), unbiased=False).numpy()


@pytest.fixture(scope="module")
def family_and_map(lite0, dataset_stats):
    mean, std = dataset_stats
    return discover_family(lite0, LAYER, k=12, orientations=ORIENTATIONS, levels=[8.0, 16.0, 32.0],
                           mean=mean, std=std, size=96, pre_activation=True)


def test_lite0_has_an_orientation_family_that_tiles_orientations(family_and_map):
    family, tmap = family_and_map
    assert tmap.raw.shape == (480, 3, 24) and tmap.pre_activation
    assert len(family) == 12
    # strongly selective units (vector strength > 0.6; an untuned unit scores ~0) ...
    assert (family.stats.selectivity > 0.6).sum() >= 10
    # ... responding far above their dataset mean to their preferred curve ...
    assert family.stats.peak.min() > 2.5
    # ... whose preferred orientations spread around the circle (the article's Fig. 1 / 19)
    assert family.coverage(0.4) == 1.0
    assert len(set(family.stats.preferred.tolist())) >= 8


def test_preferred_curve_beats_the_opposite_and_survives_colour_and_fill(lite0, family_and_map, dataset_stats):
    """Curve detectors prefer one orientation and are invariant to colour and fill (the article's Fig. 15)."""
    family, tmap = family_and_map
    mean, std = dataset_stats
    channels = family.channels[:4]
    for u, pref, level in zip(channels, family.stats.preferred[:4].tolist(), family.stats.level[:4].tolist()):
        base = Curve(orientation=pref, radius=level)
        stims = [base, base.with_(orientation=float(pref) + 180.0),
                 base.with_(color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0)),
                 base.with_(color=(0.8, 0.1, 0.1), background=(0.2, 0.5, 0.9)),
                 base.with_(filled=True, span=180.0)]
        z = (stimulus_responses(lite0, stims, LAYER, channels=u, size=96, pre_activation=True)[:, 0]
             .double().numpy() - mean[u]) / std[u]
        assert z[0] == pytest.approx(float(tmap.channel_map(u).max()), rel=1e-4)  # same stimulus, same answer
        assert z[1] < z[0] - 2.0  # the opposite curve is far weaker
        assert max(z[2], z[3], z[4]) > 1.0  # inverted, coloured or filled it is still above the dataset mean


def test_tuning_is_unchanged_by_unmeasured_units(lite0, family_and_map, dataset_stats):
    """Asking for a few units (in other batches) gives exactly their rows of the all-channel map."""
    family, tmap = family_and_map
    mean, std = dataset_stats
    sub = tuning_map(lite0, LAYER, channels=family.channels[:3], orientations=ORIENTATIONS[:8], levels=[16.0],
                     mean=mean, std=std, size=96, pre_activation=True, batch_size=3)
    rows = [tmap.index(c) for c in sub.channels.tolist()]
    torch.testing.assert_close(sub.values, tmap.values[rows][:, 1:2, :8], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_joint_tuning_of_dataset_examples_agrees_with_synthetic_curves(lite0):
    """The article's two views of a family agree: rotating a unit's top dataset examples (sample photos) makes
    each other family member peak near the difference of their preferred orientations on synthetic curves."""
    from cnnscope.stimuli import tuning_report

    report = tuning_report(lite0, LAYER, family=8, step=15.0, levels=[8.0, 16.0, 32.0], examples=4,
                           joint_step=15.0, source="samples", size=112, pre_activation=True)
    assert report.joint.sources.tolist() == report.family.channels and report.joint.in_std
    recorded = report.joint.channels.tolist()
    pref = report.family.stats.preferred.numpy()
    pref_recorded = np.array([pref[report.family.channels.index(c)] for c in recorded])
    offsets = report.joint.peak_offsets().numpy()
    expected = pref_recorded[None, :] - pref[:, None]
    err = np.abs((offsets - expected + 180.0) % 360.0 - 180.0)
    own = np.array([[src == c for c in recorded] for src in report.family.channels])
    off_diagonal = err[~own]
    assert np.median(off_diagonal) <= 25.0
    assert (off_diagonal <= 45.0).mean() >= 0.85
