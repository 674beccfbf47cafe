"""Pointing game: the 15 px tolerance, boxes and masks, per-class mean accuracy, ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError
from cnnscope.evaluate import pointing_game


def _peak(y: int, x: int, size: int = 64) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[y, x] = 1.0
    return m


def test_tolerance_boundary_with_a_box():
    box = (20, 10, 30, 20)  # x in [20, 30), y in [10, 20): nearest pixel column to the right is x = 29
    maps = torch.stack([_peak(15, 29 + 15), _peak(15, 29 + 16), _peak(15, 25), _peak(10 - 9, 20 - 12)])
    res = pointing_game(maps, [box] * 4, size=(64, 64))
    assert res.hits.tolist() == [True, False, True, True]  # 15 px: hit, 16 px: miss, inside, (9, 12) -> 15
    np.testing.assert_allclose(res.distances.numpy(), [15, 16, 0, 15], atol=1e-6)
    assert res.points[0].tolist() == [15, 44]
    assert res.overall == pytest.approx(0.75)


def test_per_class_mean_accuracy_and_masks():
    mask = np.zeros((64, 64), bool)
    mask[40:50, 40:50] = True
    maps = torch.stack([_peak(45, 45), _peak(0, 0), _peak(0, 0), _peak(44, 44), _peak(44, 44)])
    labels = ["cat", "cat", "cat", "dog", "dog"]
    res = pointing_game(maps, [mask] * 5, labels)
    assert res.per_class == {"cat": pytest.approx(1 / 3), "dog": 1.0}
    assert res.accuracy == pytest.approx((1 / 3 + 1) / 2)  # mean over classes, not over images (3/5)
    assert res.overall == pytest.approx(3 / 5)


def test_low_resolution_maps_are_upsampled_and_ties_take_the_first_maximum():
    cam = torch.zeros(1, 7, 7)
    cam[0, 6, 6] = 1.0  # bottom-right cell
    res = pointing_game(cam, [(48, 48, 64, 64)], size=(64, 64))
    assert bool(res.hits[0])
    flat = torch.ones(1, 64, 64)
    res = pointing_game(flat, [(0, 0, 2, 2)], size=(64, 64))
    assert res.points[0].tolist() == [0, 0] and bool(res.hits[0])


def test_pointing_errors():
    with pytest.raises(CnnscopeError, match="size"):
        pointing_game(torch.rand(1, 8, 8), [(0, 0, 4, 4)])
    with pytest.raises(CnnscopeError, match="empty box"):
        pointing_game(torch.rand(1, 8, 8), [(4, 0, 4, 4)], size=(8, 8))
    with pytest.raises(CnnscopeError, match="labels"):
        pointing_game(torch.rand(2, 8, 8), [(0, 0, 4, 4)] * 2, ["a"], size=(8, 8))
    with pytest.raises(CnnscopeError, match="mask"):
        pointing_game(torch.rand(1, 8, 8), [np.zeros((4, 4), bool)], size=(8, 8))
