"""Invariance study (paper Fig. 5): transforms against independent implementations, distances on Lite0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.models import wrap
from cnnscope.zf import TRANSFORMS, invariance_study
from cnnscope.zf.invariance import rotate, scale, translate
from tests.conformance import assert_unchanged
from tests.models import GapLinearNet

X = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transform_is_exactly_the_identity_at_its_neutral_amount(name):
    spec = TRANSFORMS.get(name)
    assert torch.equal(spec.fn(X, spec.identity), X)
    for a in spec.amounts:
        y = spec.fn(X, a)
        assert y.shape == X.shape and y.dtype == X.dtype and y.device == X.device
        assert float(y.min()) >= 0.0 - 1e-6 and float(y.max()) <= 1.0 + 1e-6  # border fill stays in range


def test_translation_shifts_rows_and_repeats_the_edge():
    y = translate(X, 3)
    assert torch.equal(y[..., 3:, :], X[..., :-3, :])
    assert torch.equal(y[..., :3, :], X[..., :1, :].expand(-1, -1, 3, -1))
    assert torch.equal(translate(X, -5)[..., :-5, :], X[..., 5:, :])


def test_rotation_by_90_degrees_is_rot90_and_scale_2_is_a_centre_zoom():
    torch.testing.assert_close(rotate(X, 90), torch.rot90(X, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(X, 360 + 180), torch.rot90(X, 2, dims=(-2, -1)), atol=1e-5, rtol=0)
    z = scale(X, 2.0)  # output pixel centres fall halfway between input centres 4..11: bilinear averages
    ref = torch.nn.functional.interpolate(X[..., 4:12, 4:12], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(z[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_distances_are_zero_at_zero_and_grow_with_the_translation(lite0, samples, one_thread):
    imgs = {k: samples[k] for k in ("chelsea", "coffee", "astronaut")}
    s = invariance_study(lite0, imgs, "translate", amounts=[0, 8, 24, 60], batch_size=8)
    assert s.layers == ["bn1.act", "global_pool.flatten"]  # layer 1 and the penultimate features
    assert s.distances.shape == (3, 2, 4) and s.probabilities.shape == (3, 4)
    assert s.distances.device.type == "cpu"  # a sweep's numbers
    assert bool((s.distances[:, :, 0] <= 1e-5 * s.norms).all())  # T_0 = identity, up to float rounding
    mean = s.distances.mean(0)
    assert bool((mean[:, 1:] > mean[:, :-1]).all())  # grows with the amount, at both layers, on average
    top1 = [lite0.predict(samples[k], k=1)[0][0][0] for k in imgs]
    assert s.targets == top1
    torch.testing.assert_close(s.probabilities[:, 0],
                               torch.tensor([lite0.predict(samples[k], k=1)[0][0][2] for k in imgs]),
                               rtol=1e-4, atol=1e-5)


def test_bad_inputs_and_model_unchanged():
    model = wrap(GapLinearNet().train(), 16, labels=["a", "b", "c"])
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(MethodError, match="did you mean: rotate"):
        invariance_study(model, [img], "rotat")
    with pytest.raises(CnnscopeError, match="empty"):
        invariance_study(model, [], "rotate")
    with pytest.raises(CnnscopeError, match="2 targets for 1 images"):
        invariance_study(model, [img], "rotate", targets=[0, 1])
    with pytest.raises(TypeError):
        invariance_study(model, [img], "scale", [1, 1.5])  # options are keyword-only
    assert assert_unchanged(model.module, lambda: invariance_study(model, [img, img], "scale",
                                                                   amounts=[1, 1.5])) is None
    err = assert_unchanged(model.module, lambda: invariance_study(model, [img], "scale", amounts=[0.0]))
    assert isinstance(err, CnnscopeError) and "positive" in str(err)


def test_transforms_in_model_space_equal_transforms_of_the_pictures():
    model = wrap(GapLinearNet(), 16, labels=["a", "b", "c"])
    imgs = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(2)]
    layers = ["features.1"]
    s = invariance_study(model, imgs, "rotate", amounts=[0, 30, 90], layers=layers)
    x01 = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in imgs])
    for i in range(2):
        with torch.no_grad():
            ref = model.module.features[:2](model.normalize(x01[i:i + 1]))
        for j, a in enumerate([0, 30, 90]):
            with torch.no_grad():
                moved = model.module.features[:2](model.normalize(rotate(x01[i:i + 1], a)))
            assert float(s.distances[i, 0, j]) == pytest.approx(float((moved - ref).norm()), rel=1e-4, abs=1e-5)
    plain = invariance_study(model.module, model.batch(imgs), "rotate", amounts=[0, 30, 90], layers=layers)
    torch.testing.assert_close(plain.distances, s.distances)


def test_a_registered_transform_is_found_by_name_and_by_the_cli(tmp_path, digits_run, capsys):
    from cnnscope.cli import main
    from cnnscope.zf import register_transform

    with TRANSFORMS.scoped():
        @register_transform(identity=0.0, unit="levels", amounts=(0.0, 0.5))
        def brighten(x, amount):
            return x + amount

        model = wrap(GapLinearNet(), 16, labels=["a", "b", "c"])
        s = invariance_study(model, [np.zeros((16, 16, 3), np.uint8)], "brighten", layers=["features.1"])
        assert s.unit == "levels" and s.amounts == [0.0, 0.5] and float(s.distances[0, 0, 0]) == 0.0
        code = main(["invariance", str(digits_run.checkpoints[1]), "digits:2", "--layers", "features.1",
                     "--out", str(tmp_path)])
        assert code == 0 and "brighten: mean distance" in capsys.readouterr().out
        assert [d["transform"] for d in json.loads((tmp_path / "invariance.json").read_text())] == TRANSFORMS.names()
    assert "brighten" not in TRANSFORMS
