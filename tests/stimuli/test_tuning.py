"""Tuning heatmaps and families on a hand-built curve-detecting CNN (closed forms and a direct computation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, LayerError, MethodError
from cnnscope.models import AssumptionWarning, wrap
from cnnscope.stimuli import (
    TuningMap,
    discover_family,
    draw,
    find_family,
    radial_tuning,
    rf_offset,
    stimulus_responses,
    tuning_map,
    tuning_stats,
)
from cnnscope.stimuli.curves import grid

from .curvenet import CurveNet

WHITE_ON_BLACK = dict(width=2.0, color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0))
ORIENTATIONS = np.arange(0.0, 360.0, 15.0)
LEVELS = [4.0, 6.0, 8.0, 12.0, 16.0]


def identity(net: torch.nn.Module, size: int = 31):
    """``net`` fed the pictures in [0, 1] as they are (no normalisation)."""
    return wrap(net, input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def curvenet():
    return identity(CurveNet(blob=True))  # 12 curve units (0, 30, ..., 330 degrees) + 1 isotropic blob unit


@pytest.fixture(scope="module")
def tmap(curvenet):
    return tuning_map(curvenet, "conv", size=31, orientations=ORIENTATIONS, levels=LEVELS, **WHITE_ON_BLACK)


def test_each_curve_unit_peaks_at_its_designed_orientation_and_radius(tmap):
    pref = tmap.preferred()
    np.testing.assert_array_equal(pref["orientation"][:12].numpy(), np.arange(0.0, 360.0, 30.0))
    assert set(pref["level"][:12].tolist()) <= {6.0, 8.0}  # the kernel's arc radius (8) or the level next to it
    assert tmap.raw.shape == (13, len(LEVELS), len(ORIENTATIONS)) and tmap.raw.device.type == "cpu"
    # the opposite curvature inhibits: at the preferred radius, orientation + 180 is below zero
    for u in range(12):
        opposite = int((pref["orientation"][u] + 180) % 360 // 15)
        assert tmap.raw[u, LEVELS.index(8.0), opposite] < 0


def test_heatmap_equals_direct_correlation(curvenet):
    """Independent computation: the centre output is the kernel dotted with the rendered image window, + bias."""
    channels = [2, 5, 12]
    tm = tuning_map(curvenet, "conv", channels="12,2,5", size=31, orientations=[0.0, 50.0, 130.0], levels=[5.0, 9.0],
                    batch_size=4, **WHITE_ON_BLACK)
    w = curvenet.module.conv.weight.detach().numpy()
    b = curvenet.module.conv.bias.detach().numpy()
    imgs = draw(grid("curve", [0.0, 50.0, 130.0], [5.0, 9.0], **WHITE_ON_BLACK), 31)  # [6, 31, 31, 3]
    window = imgs[:, 8:23, 8:23, :].transpose(0, 3, 1, 2)  # the 15x15 window the centre unit sees
    direct = np.einsum("nchw,uchw->nu", window, w[channels]) + b[channels]
    np.testing.assert_allclose(tm.raw.numpy(), direct.reshape(2, 3, 3).transpose(2, 0, 1), rtol=1e-4, atol=1e-4)
    assert tm.channels.tolist() == channels  # a parse_channels selection, in ascending order


def test_batch_size_does_not_change_results(curvenet, tmap):
    again = tuning_map(curvenet, "conv", size=31, orientations=ORIENTATIONS, levels=LEVELS, batch_size=7,
                       **WHITE_ON_BLACK)
    torch.testing.assert_close(again.raw, tmap.raw, rtol=1e-5, atol=1e-5)


def test_a_plain_module_and_its_wrap_give_the_same_map():
    """A plain module gets the defaults of ``wrap`` (ImageNet normalisation), said once as a warning."""
    net = CurveNet()
    kw = dict(size=31, orientations=[0.0, 90.0, 200.0], levels=[6.0, 8.0], **WHITE_ON_BLACK)
    with pytest.warns(AssumptionWarning):
        plain = tuning_map(net, "conv", **kw)
    torch.testing.assert_close(plain.raw, tuning_map(wrap(net), "conv", **kw).raw)
    assert not torch.allclose(plain.raw, tuning_map(identity(net), "conv", **kw).raw)  # normalised, not raw


def test_standard_deviations_above_the_dataset_mean(curvenet, tmap):
    mean = np.linspace(-1.0, 1.0, 13)
    std = np.linspace(0.5, 2.0, 13)
    std[12] = 0.0  # a unit that never varies has no z-score
    z = tuning_map(curvenet, "conv", size=31, orientations=ORIENTATIONS, levels=LEVELS, mean=torch.tensor(mean),
                   std=std, **WHITE_ON_BLACK)
    assert z.in_std and not tmap.in_std
    raw = tmap.raw.numpy()
    np.testing.assert_allclose(z.values[:12].numpy(), (raw[:12] - mean[:12, None, None]) / std[:12, None, None],
                               rtol=1e-5, atol=1e-5)
    assert z.values[12].isnan().all()
    torch.testing.assert_close(z.preferred()["orientation"][:12], tmap.preferred()["orientation"][:12])
    with pytest.raises(CnnscopeError, match="both"):
        tuning_map(curvenet, "conv", size=31, orientations=[0.0], levels=[8.0], mean=mean)
    with pytest.raises(CnnscopeError, match="one value per channel"):
        tuning_map(curvenet, "conv", size=31, orientations=[0.0], levels=[8.0], mean=mean[:5], std=std[:5])


def test_pre_and_post_activation(curvenet, tmap):
    pre = tuning_map(curvenet, "act", size=31, orientations=ORIENTATIONS, levels=LEVELS, pre_activation=True,
                     **WHITE_ON_BLACK)
    post = tuning_map(curvenet, "act", size=31, orientations=ORIENTATIONS, levels=LEVELS, **WHITE_ON_BLACK)
    torch.testing.assert_close(pre.raw, tmap.raw, rtol=0, atol=1e-5)  # the ReLU's input: the convolution
    torch.testing.assert_close(post.raw, tmap.raw.clamp(min=0), rtol=0, atol=1e-5)  # its output
    assert pre.pre_activation and not post.pre_activation and (tmap.raw < -0.1).any()
    with pytest.raises(LayerError, match="activation"):
        tuning_map(curvenet, "conv", size=31, orientations=[0.0], levels=[8.0], pre_activation=True)


def test_positions_follow_the_unit_conventions(curvenet):
    """``"center"`` is the default; ``(row, col)`` another neuron; ``None`` the channel's mean; ``"max"`` its
    maximum."""
    kw = dict(size=31, orientations=[0.0, 120.0], levels=[8.0], **WHITE_ON_BLACK)
    centre = tuning_map(curvenet, "conv", **kw)
    torch.testing.assert_close(tuning_map(curvenet, "conv", position=(15, 15), **kw).raw, centre.raw)
    stims = grid("curve", [0.0, 120.0], [8.0], **WHITE_ON_BLACK)
    x = torch.from_numpy(draw(stims, 31)).permute(0, 3, 1, 2)
    with torch.no_grad():
        maps = curvenet.module.conv(x).double()  # [2, 13, 31, 31]
    for position, want in ((None, maps.mean(dim=(2, 3))), ("max", maps.amax(dim=(2, 3))), ((3, 20), maps[:, :, 3, 20])):
        got = tuning_map(curvenet, "conv", position=position, **kw).raw[:, 0, :]
        torch.testing.assert_close(got, want.T, rtol=1e-4, atol=1e-4)


def test_radial_tuning_reduces_over_radius(tmap):
    raw = tmap.raw.numpy()
    np.testing.assert_array_equal(tmap.radial().numpy(), np.maximum(raw.max(axis=1), 0))
    np.testing.assert_allclose(tmap.radial("mean", positive=False).numpy(), raw.mean(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(radial_tuning(tmap.raw[0]).numpy(), np.maximum(raw[0].max(axis=0), 0))
    with pytest.raises(CnnscopeError, match="reduce"):
        tmap.radial("median")


def synthetic_map(curves: np.ndarray, orientations: np.ndarray, period: float = 360.0) -> TuningMap:
    raw = torch.from_numpy(np.stack([curves, curves * 0.5], axis=1))  # [U, 2 levels, O]: level 0 is the strongest
    return TuningMap(layer="x", kind="curve", param="radius", channels=torch.arange(len(curves)),
                     orientations=torch.from_numpy(orientations), levels=torch.tensor([1.0, 2.0], dtype=torch.float64),
                     raw=raw, period=period)


def test_selectivity_closed_forms():
    """Vector strength of a half-wave rectified cosine is pi/4; a flat curve has none; lines use 2 theta."""
    theta = np.arange(0.0, 360.0, 1.0)
    rect = np.maximum(np.cos(np.radians(theta - 60.0)), 0.0)
    flat = np.full_like(theta, 3.0)
    st = tuning_stats(synthetic_map(np.stack([rect * 2.0, flat, rect * 2.0 + 1.0]), theta))
    np.testing.assert_allclose(st.selectivity.numpy(), [np.pi / 4, 0.0, np.pi / 4], atol=1e-3)
    np.testing.assert_allclose(st.preferred.numpy(), [60.0, 0.0, 60.0])
    np.testing.assert_allclose(st.depth.numpy(), [2.0, 0.0, 2.0])
    np.testing.assert_allclose(st.strength.numpy(), [np.pi / 2, 0.0, np.pi / 2], atol=2e-3)
    np.testing.assert_array_equal(st.level.numpy(), [1.0, 1.0, 1.0])
    lines = np.arange(0.0, 180.0, 1.0)
    line_rect = np.maximum(np.cos(np.radians(2 * (lines - 30.0))), 0.0)
    st = tuning_stats(synthetic_map(line_rect[None], lines, period=180.0))
    np.testing.assert_allclose(st.selectivity.numpy(), [np.pi / 4], atol=1e-3)


def test_family_is_the_tuned_units_in_orientation_order(tmap):
    fam = find_family(tmap, k=None, min_selectivity=0.1)
    assert fam.channels == list(range(12))  # the isotropic blob unit is left out
    np.testing.assert_array_equal(fam.stats.preferred.numpy(), np.arange(0.0, 360.0, 30.0))
    assert fam.coverage(0.5) == 1.0  # together they respond to every orientation
    st = tuning_stats(tmap)
    assert st.selectivity[12] < 0.02 < 0.1 < st.selectivity[:12].min()
    top3 = find_family(tmap, k=3, min_selectivity=0.0)
    assert sorted(top3.channels) == sorted(np.argsort(-st.strength.numpy(), kind="stable")[:3].tolist())
    assert top3.stats.preferred.tolist() == sorted(top3.stats.preferred.tolist())
    # a family that misses most orientations does not tile them
    sub = TuningMap(**{**tmap.__dict__, "channels": tmap.channels[:3], "raw": tmap.raw[:3]})
    assert find_family(sub, k=None, min_selectivity=0.0).coverage(0.5) < 0.5
    with pytest.raises(CnnscopeError):
        find_family(tmap, k=0)


def test_discover_family_measures_every_channel(curvenet, tmap):
    fam, full = discover_family(curvenet, "conv", k=4, size=31, orientations=ORIENTATIONS, levels=LEVELS,
                                min_selectivity=0.1, **WHITE_ON_BLACK)
    torch.testing.assert_close(full.raw, tmap.raw, rtol=0, atol=1e-5)
    assert fam.channels == find_family(tmap, k=4, min_selectivity=0.1).channels
    d = fam.to_dict()
    assert d["channels"] == fam.channels and len(d["radial"]) == 4


def test_rf_offset_is_zero_for_a_centred_odd_kernel(curvenet):
    assert rf_offset(curvenet, "conv", size=31) == (0.0, 0.0)
    # an even-sized input puts the centre unit half a pixel right of and below the image centre
    assert rf_offset(curvenet, "conv", size=32) == (0.5, -0.5)


@pytest.mark.parametrize("size,position", [(20, "center"), ((18, 26), "center"), (20, (2, 7))])
def test_rf_offset_extrapolated_from_another_size_equals_measured(size, position):
    """Receptive fields measured once (e.g. at the input size) give every stimulus size's offset."""
    from cnnscope.capture.receptive_field import receptive_fields
    from tests.models import InplaceReLUNet

    net = InplaceReLUNet()
    rf = receptive_fields(net, "features.5", (32, 40), cache=False)["features.5"]
    measured = rf_offset(net, "features.5", size=size, position=position)
    assert rf_offset(net, "features.5", size=size, position=position, rf=rf) == pytest.approx(measured, abs=1e-9)


def test_loaded_model_normalisation_and_default_size(curvenet):
    """A wrapped model normalises the rendered images: mean 0.5 / std 0.5 maps [0, 1] to [-1, 1]."""
    loaded = wrap(curvenet.module, input_size=31, mean=(0.5,) * 3, std=(0.5,) * 3)
    stims = grid("curve", [0.0, 90.0], [8.0], **WHITE_ON_BLACK)
    got = stimulus_responses(loaded, stims, "conv")
    x = torch.from_numpy(draw(stims, 31)).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        want = curvenet.module.conv(x)[:, :, 15, 15]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call,error,match", [
    (lambda net: tuning_map(net, "convv", size=31, orientations=[0.0], levels=[8.0]), LayerError, "conv"),
    (lambda net: tuning_map(net, "conv", channels=[40], size=31, orientations=[0.0], levels=[8.0]), CnnscopeError,
     "outside"),
    (lambda net: tuning_map(net, "conv", size=31, orientations=[0.0], levels=[8.0], position=(40, 0)), LayerError,
     "outside"),
    (lambda net: tuning_map(net, "conv", size=31, orientations=[0.0], levels=[8.0], position="corner"), LayerError,
     "position"),
    (lambda net: tuning_map(net, "conv", size=31, orientations=[], levels=[8.0]), CnnscopeError, "non-empty"),
    (lambda net: tuning_map(net, "fc", size=31, orientations=[0.0], levels=[8.0]), LayerError, "feature maps"),
    (lambda net: tuning_map(net, "conv", size=31, kind="spiral"), MethodError, "stimulus kind"),
    (lambda net: tuning_map(net, "conv", size=31, orientations=[0.0], levels=[8.0], batch_size=0), CnnscopeError,
     "batch_size"),
    (lambda net: tuning_map(net, "conv", [1]), TypeError, "positional"),
])
def test_errors_a_person_can_act_on(curvenet, call, error, match):
    with pytest.raises(error, match=match):
        call(curvenet)
