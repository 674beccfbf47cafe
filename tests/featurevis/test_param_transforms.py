"""Parameterizations, colour decorrelation, spectra, transforms and blur filters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from cnnscope.errors import MethodError
from cnnscope.featurevis import (
    PARAMS,
    PRESETS,
    CropBack,
    FourierImage,
    Jitter,
    MacoImage,
    Noise,
    Pad,
    Pipeline,
    PixelImage,
    RandomCrop,
    RandomRotate,
    RandomScale,
    Resize,
    high_frequency_share,
    make_param,
)
from cnnscope.featurevis.param import generators, logit
from cnnscope.featurevis.spectra import from_rgb, natural_magnitude, power_law, to_rgb
from cnnscope.featurevis.transforms import make_transforms
from cnnscope.filters import bilateral_blur, gaussian_blur


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_range_shape_and_seeds(name):
    p = make_param(name, [3, 4, 3], (20, 28))
    x = p()
    assert x.shape == (3, 3, 20, 28) and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x[0], x[2])  # same seed, same image
    assert not torch.equal(x[0], x[1])
    alone = make_param(name, [4], (20, 28))()
    torch.testing.assert_close(alone[0], x[1])  # an image does not depend on the rest of the batch


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_set_image_round_trip(name):
    p = make_param(name, [0, 1], 24)
    target = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    p.set_image_(target)
    torch.testing.assert_close(p(), target, atol=1e-4, rtol=0)


def test_sigmoid_pixel_with_decorrelation_round_trip():
    p = PixelImage([0], 16, activation="sigmoid", decorrelate=True)
    target = torch.rand(1, 3, 16, 16) * 0.8 + 0.1
    p.set_image_(target)
    torch.testing.assert_close(p(), target, atol=1e-4, rtol=0)


def test_maco_cannot_be_set_from_an_image():
    with pytest.raises(MethodError, match="cannot be set from an image"):
        MacoImage([0], 16).set_image_(torch.rand(1, 3, 16, 16))


def test_colour_decorrelation_is_invertible_and_normalised():
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(from_rgb(to_rgb(x)), x, atol=1e-5, rtol=0)
    from cnnscope.featurevis.spectra import color_matrix
    assert color_matrix().norm(dim=0).max().item() == pytest.approx(1.0)


def expected_hf_share(scale: torch.Tensor) -> float:
    """Expected outer-half energy share of an image whose rFFT bins are i.i.d. noise times ``scale``."""
    from cnnscope.featurevis.spectra import rfft_frequencies

    h, wf = scale.shape
    w = 2 * (wf - 1)
    weight = torch.ones(h, wf)
    weight[:, 1:(w - 1) // 2 + 1] = 2
    energy = scale.double() ** 2 * weight
    f = rfft_frequencies(h, w)
    energy[0, 0] = 0
    return float(energy[f > 0.25].sum() / energy.sum())


def test_fourier_decay_power_sets_the_spectrum():
    seeds = list(range(8))
    flat = FourierImage(seeds, 64, decay_power=0.0, decorrelate=False)
    decay = FourierImage(seeds, 64, decay_power=1.0, decorrelate=False)
    hf_flat = high_frequency_share(logit(flat(), eps=1e-7)).mean()
    hf_decay = high_frequency_share(logit(decay(), eps=1e-7)).mean()
    assert hf_flat == pytest.approx(expected_hf_share(flat.scale), abs=0.03)  # white noise: ~0.8
    assert hf_decay == pytest.approx(expected_hf_share(decay.scale), abs=0.03)  # 1/f: ~0.2
    assert hf_decay < hf_flat / 3


def test_maco_keeps_the_natural_magnitude():
    """Whatever the phase, the image's spectrum (decorrelated space, before the sigmoid) has the fixed
    magnitude up to one scale factor (the standardisation); the DC term is removed by it."""
    p = MacoImage([0, 1], 32)
    with torch.no_grad():
        p.phase.add_(torch.randn(p.phase.shape, generator=torch.Generator().manual_seed(3)))
        spec = torch.fft.rfft2(from_rgb(logit(p(), eps=1e-7)), norm="ortho").abs()
    mag = p.magnitude
    ratio = (spec / mag)[:, :, :, 1:16]  # skip columns 0 and 16: irfft keeps only their Hermitian part
    assert (ratio.std(dim=(1, 2, 3)) / ratio.mean(dim=(1, 2, 3))).max() < 1e-2
    nat = natural_magnitude(32, 32)
    assert nat.shape == (3, 32, 17)
    # natural photos: amplitude falls with frequency like a power law
    f_low, f_high = nat[0, 1, 1], nat[0, 16, 16]
    assert f_low > 5 * f_high


def test_high_frequency_share_of_known_images():
    t = np.arange(32)
    stripes = np.zeros((2, 32, 32, 3), np.uint8)
    stripes[0] = (255 * (t % 2)).astype(np.uint8)[None, :, None]  # Nyquist-rate stripes
    stripes[1] = (127 + 100 * np.cos(2 * np.pi * t / 16)).astype(np.uint8)[None, :, None]  # 1/16 cycles/px
    hf = high_frequency_share(stripes)
    assert hf[0] == pytest.approx(1.0) and hf[1] == pytest.approx(0.0, abs=1e-3)


def test_power_law():
    p = power_law(8, 8, 1.0)
    assert p[0, 0] == pytest.approx(8.0) and p[0, 4] == pytest.approx(2.0)


def gens(n, seed=0):
    return generators([seed + i for i in range(n)], "cpu")


def test_pad_and_crop_back_is_identity():
    x = torch.rand(2, 3, 20, 28)
    torch.testing.assert_close(Pipeline([Pad(6), CropBack()])(x, gens(2)), x)
    padded = Pad(3, value=0.25)(x, gens(2))
    assert padded.shape == (2, 3, 26, 34)
    torch.testing.assert_close(padded[..., 3:-3, 3:-3], x, atol=1e-5, rtol=0)
    assert torch.allclose(padded[..., 0, :], torch.tensor(0.25))


def test_jitter_is_an_exact_integer_shift():
    x = torch.rand(4, 3, 16, 16)
    g = gens(4)
    y = Jitter(6)(x, g)
    for i in range(4):
        # find the shift by matching the interior against torch.roll
        best = min(((dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)),
                   key=lambda s: (torch.roll(x[i], s, dims=(1, 2))[:, 4:-4, 4:-4] - y[i, :, 4:-4, 4:-4]).abs().max())
        torch.testing.assert_close(torch.roll(x[i], best, dims=(1, 2))[:, 4:-4, 4:-4], y[i, :, 4:-4, 4:-4],
                                   atol=1e-5, rtol=0)


def test_rotate_90_and_scale_1_are_exact():
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(RandomScale([1.0])(x, gens(1)), x, atol=1e-5, rtol=0)
    y = RandomRotate([90.0])(x, gens(1))
    torch.testing.assert_close(y, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5, rtol=0)  # clockwise on screen
    torch.testing.assert_close(RandomCrop((1.0, 1.0))(x, gens(1)), x, atol=1e-5, rtol=0)


def test_resize_matches_interpolate():
    x = torch.rand(2, 3, 16, 12)
    ref = torch.nn.functional.interpolate(x, size=(24, 30), mode="bilinear", align_corners=False)
    torch.testing.assert_close(Resize((24, 30))(x, gens(2)), ref, atol=1e-5, rtol=0)
    fused = Pipeline([Pad(4), CropBack(), Resize(32)])(x[..., :12], gens(2))
    ref = torch.nn.functional.interpolate(x[..., :12], size=32, mode="bilinear")
    torch.testing.assert_close(fused[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def test_scale_2_zooms_the_centre():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 6:10, 6:10] = 1.0  # 4x4 square in the centre
    y = RandomScale([2.0])(x.expand(1, 3, -1, -1).contiguous(), gens(1))
    assert y[0, 0].sum().item() == pytest.approx(64.0, rel=0.05)  # area x4
    assert y[0, 0, 8, 8] == pytest.approx(1.0)


def test_fused_pipeline_matches_step_by_step():
    # a smooth image, so that five bilinear resamplings blur it only a little
    x = gaussian_blur(torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(0)), 2.0)
    x = (x - x.amin()) / (x.amax() - x.amin())
    steps = [Pad(4), Jitter(4), RandomScale([0.9, 1.1]), RandomRotate([-7.0, 5.0]), Jitter(2), CropBack()]
    fused = Pipeline(steps)(x, gens(3))
    g = gens(3)
    y = x
    for t in steps[:-1]:
        y = t(y, g)
    y = y[..., 4:-4, 4:-4]
    # one resampling (fused) vs five (step by step): the same geometry
    assert fused.shape == x.shape == y.shape
    assert (fused - y).abs().mean() < 0.01 and (fused - y).abs().max() < 0.1
    assert (fused - x).abs().mean() > 0.03  # ... and the transforms did move the image


def test_transforms_are_per_image():
    x = torch.rand(3, 3, 20, 20)
    pipe = make_transforms("standard")
    batched = pipe(x, gens(3, seed=7))
    for i in range(3):
        alone = pipe(x[i:i + 1], generators([7 + i], "cpu"))
        torch.testing.assert_close(batched[i:i + 1], alone)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_keep_the_size(name):
    x = torch.rand(2, 3, 20, 28)
    y = make_transforms(name)(x, gens(2))
    assert y.shape == x.shape


def test_noise_statistics():
    x = torch.zeros(2, 3, 64, 64)
    y = Noise(0.1)(x, gens(2))
    assert y.std().item() == pytest.approx(0.1, rel=0.05)


def test_unknown_preset():
    with pytest.raises(MethodError, match="unknown transform preset 'standrd'; did you mean: standard"):
        make_transforms("standrd")


def test_gaussian_blur_matches_scipy():
    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = gaussian_blur(x, 1.3, radius=4).numpy()
    ref = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.3, 1.3), mode="mirror", truncate=4 / 1.3)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_bilateral_blur_limits():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # huge colour sigma: a plain spatial Gaussian (same radius)
    torch.testing.assert_close(bilateral_blur(x, 1.0, 1e6, radius=2), gaussian_blur(x, 1.0, radius=2))
    # a step edge survives a small colour sigma, while a Gaussian blur smears it
    step = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    step[..., 8:] = 1.0
    kept = bilateral_blur(step, 2.0, 0.1)
    torch.testing.assert_close(kept, step, atol=1e-6, rtol=0)
    assert (gaussian_blur(step, 2.0) - step).abs().max() > 0.2
