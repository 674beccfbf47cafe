"""Deletion/insertion (RISE protocol): closed forms on synthetic models, orderings, batching, substrates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.evaluate import SUBSTRATES, auc, deletion, insertion, pixel_ranks
from cnnscope.evaluate.deletion_insertion import curve_points
from cnnscope.filters import gaussian_blur
from cnnscope.models import wrap

from .helpers import ConstantNet, RegionSumNet, checker, square_region


def _images(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 0.5 * torch.rand(n, 3, size, size, generator=g)


def _maps(region: torch.Tensor, n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    perfect = region.expand(n, -1, -1).clone()
    return {"perfect": perfect, "random": torch.rand(n, *region.shape, generator=g), "inverted": 1 - perfect}


def test_deletion_closed_form_on_region_model():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 192, offset=3.0)
    x = torch.ones(1, 3, 16, 16)
    res = deletion(model, x, region, target=0, step=16)
    removed = curve_points(256, 16).double()
    inside_left = (64 - removed.clamp(max=64)) * 3
    expected = torch.sigmoid(inside_left * 6 / 192 - 3.0).float()
    torch.testing.assert_close(res.scores[0], expected, atol=1e-6, rtol=0)
    assert res.fractions[0] == 0 and res.fractions[-1] == 1 and res.fractions.numel() == 17
    torch.testing.assert_close(res.auc, auc(expected.double(), res.fractions).float().view(1))


def test_deletion_orders_perfect_random_inverted_on_a_region_sum():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 144, offset=3.0)  # output: the plain sum over the region
    x = _images(4)
    dele = {k: deletion(model, x, m, target=0, step=16).auc for k, m in _maps(region, 4).items()}
    assert (dele["perfect"] < dele["random"]).all() and (dele["random"] < dele["inverted"]).all(), dele


def test_perfect_map_beats_random_beats_inverted():
    # a plain region sum barely changes under a blur (mass is conserved inside the region), so insertion from a
    # blurred start needs a model that the blur silences: a matched filter of a checkerboard inside the region
    region = square_region()
    model = RegionSumNet(region, scale=6 / 96, offset=3.0, pattern=checker())  # a matched filter
    g = torch.Generator().manual_seed(5)
    x = (0.5 + 0.5 * checker() + 0.1 * torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
    maps = _maps(region, 4)
    dele = {k: deletion(model, x, m, target=0, step=16).auc for k, m in maps.items()}
    ins = {k: insertion(model, x, m, target=0, step=16).auc for k, m in maps.items()}
    assert (dele["perfect"] < dele["random"]).all() and (dele["random"] < dele["inverted"]).all(), dele
    assert (ins["perfect"] > ins["random"]).all() and (ins["random"] > ins["inverted"]).all(), ins


def test_auc_of_constant_curve_is_the_constant():
    model = ConstantNet()
    p = torch.softmax(torch.tensor([1.0, 0.0, -0.5]), 0)[0]
    x = _images(2, size=10)
    for step in (7, 100, 30):  # uneven last steps: trapezoid weights must still sum to 1
        res = deletion(model, x, torch.rand(2, 10, 10), step=step)
        torch.testing.assert_close(res.auc, p.expand(2), atol=1e-6, rtol=0)
    fr = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    assert float(auc(torch.full((4,), 0.37, dtype=torch.float64), fr)) == pytest.approx(0.37)
    assert float(auc(fr.clone(), fr)) == pytest.approx(0.5)  # y = x on [0, 1]


def test_rise_protocol_has_225_points_at_224px():
    region = torch.zeros(224, 224)
    region[50:100, 60:120] = 1
    model = RegionSumNet(region, scale=1e-4)
    res = deletion(model, _images(1, size=224), region)
    assert res.scores.shape == (1, 225) and res.protocol == "RISE" and res.substrate == "zero"
    assert insertion(model, _images(1, size=224), region).protocol == "RISE"
    assert deletion(model, _images(1, size=224), region, step=448).protocol == "custom"


def test_curve_endpoints_are_image_and_substrate():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 144, offset=3.0)
    x = _images(2)
    m = torch.rand(2, 16, 16)
    score = lambda z: torch.softmax(model(z), 1)[:, 0]  # noqa: E731
    d = deletion(model, x, m, target=0, step=10)
    i = insertion(model, x, m, target=0, step=10)
    torch.testing.assert_close(d.scores[:, 0], score(x))
    torch.testing.assert_close(d.scores[:, -1], score(torch.zeros_like(x)))
    torch.testing.assert_close(i.scores[:, 0], score(gaussian_blur(x, 5.0, 5, padding="zeros")))
    torch.testing.assert_close(i.scores[:, -1], score(x))


def test_batching_does_not_change_curves():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 144, offset=3.0)
    x = _images(3)
    m = torch.rand(3, 4, 4)  # low resolution: upsampled bilinearly
    a = deletion(model, x, m, target=0, step=8, batch_size=1)
    b = deletion(model, x, m, target=0, step=8, batch_size=1000)
    one = deletion(model, x[1:2], m[1:2], target=0, step=8, batch_size=7)
    torch.testing.assert_close(a.scores, b.scores, atol=0, rtol=0)
    torch.testing.assert_close(a.scores[1:2], one.scores, atol=1e-7, rtol=0)


def test_callable_maps_equal_given_maps():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 144, offset=3.0)
    x = _images(3)
    m = torch.rand(3, 16, 16)
    seen = []

    def explain(loaded, images, targets):
        assert loaded.module is model  # explainers get the LoadedModel around the module
        seen.append(int(images.shape[0]))
        return m[: images.shape[0]] if len(seen) == 1 else m[2:]

    a = insertion(model, x, explain, step=16, batch_size=2)
    b = insertion(model, x, m, step=16)
    assert seen == [2, 1]
    torch.testing.assert_close(a.scores, b.scores)


def test_top1_target_default_and_labels():
    model = ConstantNet((0.0, 2.0, 1.0))
    res = deletion(model, _images(2, size=8), torch.rand(2, 8, 8), step=64)
    assert res.targets.tolist() == [1, 1]
    labelled = wrap(model, input_size=8, labels=["cat", "dog", "cow"])
    by_label = deletion(labelled, _images(2, size=8), torch.rand(2, 8, 8), target=["cow", 0], step=64)
    assert by_label.targets.tolist() == [2, 0]
    p = torch.softmax(torch.tensor([0.0, 2.0, 1.0]), 0)
    torch.testing.assert_close(by_label.auc, p[[2, 0]])


def test_pictures_equal_their_model_space_tensor():
    region = square_region()
    m = wrap(RegionSumNet(region, scale=6 / 144, offset=3.0), input_size=16)
    g = np.random.default_rng(0)
    pictures = g.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    a = deletion(m, pictures, maps, target=0, step=16)
    b = deletion(m, m.batch(pictures), maps, target=0, step=16)
    torch.testing.assert_close(a.scores, b.scores, atol=0, rtol=0)
    assert a.fractions.device.type == "cpu" and a.scores.device == m.device


def test_pixel_ranks_order_and_ties():
    m = torch.tensor([[[0.5, 0.9], [0.5, 0.1]]])
    assert pixel_ranks(m).tolist() == [[1, 0, 2, 3]]  # ties keep raster order
    assert pixel_ranks(m, descending=False).tolist() == [[1, 3, 2, 0]]


def test_gaussian_blur_matches_scipy():
    from scipy.ndimage import correlate

    x = torch.rand(1, 2, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    r = np.arange(11) - 5
    k = np.exp(-r ** 2 / 50.0)
    k /= k.sum()
    ref = np.stack([correlate(x[0, c].numpy(), np.outer(k, k), mode="constant") for c in range(2)])
    np.testing.assert_allclose(gaussian_blur(x, 5.0, 5, padding="zeros")[0].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SUBSTRATES))
def test_substrates_keep_shape_dtype_and_device(name):
    x = _images(2, size=12)
    out = SUBSTRATES[name](x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    region = square_region(12, 2, 2, 6)
    res = deletion(RegionSumNet(region, 0.05), x, region, substrate=name, step=36)
    assert res.substrate == name and res.protocol == "custom"  # step 36 is not the RISE step


def test_custom_tensor_substrate():
    region = square_region()
    model = RegionSumNet(region, scale=6 / 144, offset=3.0)
    x = _images(1)
    ones = torch.ones(1, 3, 1, 1)
    res = deletion(model, x, region, target=0, step=256, substrate=ones)
    assert res.substrate == "custom tensor"
    torch.testing.assert_close(res.scores[0, -1], torch.softmax(model(torch.ones_like(x)), 1)[0, 0])


def test_errors_are_actionable():
    region = square_region()
    model = RegionSumNet(region)
    x = _images(2)
    with pytest.raises(CnnscopeError, match="2 images"):
        deletion(model, x, torch.rand(3, 16, 16))
    with pytest.raises(MethodError, match="did you mean: blur"):
        insertion(model, x, torch.rand(2, 16, 16), substrate="blurr")
    with pytest.raises(CnnscopeError, match="step"):
        deletion(model, x, torch.rand(2, 16, 16), step=0)
    with pytest.raises(CnnscopeError, match="NaN"):
        deletion(model, x, torch.full((2, 16, 16), float("nan")))
    with pytest.raises(CnnscopeError, match=r"\[B, classes\]"):
        deletion(torch.nn.Identity(), x, torch.rand(2, 16, 16))
