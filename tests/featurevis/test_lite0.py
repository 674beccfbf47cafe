"""The pretrained EfficientNet-Lite0 on real photos: rendered channels beat the best photo crop, and the lucid
recipe's images hold less high-frequency energy than plain gradient ascent's (Olah et al. 2017)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnscope.featurevis import channel, high_frequency_share, measure, render
from cnnscope.images import resize

LAYER, CHANNELS, SIZE, STEPS = "blocks.4.0", range(8), 128, 256


def photo_crops(samples: dict, size: int = SIZE, sides=(128, 192, 256), stride: int = 64) -> np.ndarray:
    """Every ``size`` crop (stride ``stride``) of every sample photo scaled so its shorter side is each of
    ``sides``: ``uint8 [N, size, size, 3]``."""
    crops = []
    for arr in samples.values():
        for side in sides:
            scale = side / min(arr.shape[:2])
            h, w = max(size, round(arr.shape[0] * scale)), max(size, round(arr.shape[1] * scale))
            img = resize(arr, (h, w))
            for y in range(0, h - size + 1, stride):
                for x in range(0, w - size + 1, stride):
                    crops.append(img[y:y + size, x:x + size])
    return np.stack(crops)


@pytest.fixture(scope="module")
def objectives():
    return [channel(LAYER, c) for c in CHANNELS]


@pytest.fixture(scope="module")
def lucid(lite0, objectives):
    return render(lite0, objectives, recipe="lucid", steps=STEPS, size=SIZE, seed=0)


@pytest.mark.slow
def test_rendered_channels_beat_the_best_photo_crop(lite0, samples, objectives, lucid):
    crops = photo_crops(samples)
    assert len(crops) > 100
    best = measure(lite0, crops, objectives, pairwise=True).max(dim=1).values  # [channel]
    stored = measure(lite0, lucid.images, objectives)  # on the saved uint8 pictures, at their size
    assert (lucid.activations > best).all(), (lucid.activations, best)
    assert (stored > best).all(), (stored, best)
    assert lucid.images.shape == (8, SIZE, SIZE, 3)
    assert (lucid.trace[-1] > lucid.trace[0]).all()


@pytest.mark.slow
def test_lucid_has_less_high_frequency_energy_than_plain(lite0, objectives, lucid):
    plain = render(lite0, objectives, recipe="plain", steps=STEPS, size=SIZE, seed=0)
    hf_lucid = high_frequency_share(lucid.images)
    hf_plain = high_frequency_share(plain.images)
    assert (hf_lucid < hf_plain).all(), (hf_lucid, hf_plain)
    assert hf_lucid.mean() < 0.5 * hf_plain.mean()
