"""NMF of activations on the pretrained model and real photos: errors fall with k, factors are non-negative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.capture import Capture, evaluating
from cnnscope.dataset.factorize import factorize_dataset, factorize_image
from cnnscope.errors import CnnscopeError
from tests.conformance import assert_unchanged

LAYER = "blocks.4.0.bn1.act"  # ReLU6 outputs: non-negative


def test_image_factors_reconstruct_and_improve_with_k(lite0, samples):
    errors = []
    for k in (1, 2, 4, 8):
        f = factorize_image(lite0, samples["chelsea"], LAYER, k=k)
        assert f.spatial.shape == (k, 14, 14) and f.loadings.shape == (k, 480)
        assert (f.spatial >= 0).all() and (f.loadings >= 0).all()
        errors.append(f.relative_error)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # the reported error is |V - W H| of the real activations
    with torch.no_grad(), evaluating(lite0.module), Capture(lite0.module, LAYER) as cap:
        cap.run(lite0.preprocess(samples["chelsea"]))
    v = cap[LAYER][0].permute(1, 2, 0).reshape(-1, 480).double().numpy()
    recon = f.spatial.reshape(8, -1).T.double().numpy() @ f.loadings.double().numpy()
    assert f.error == pytest.approx(np.linalg.norm(v - recon), rel=1e-3)
    assert f.colored_map().shape == (14, 14, 3) and f.overlay().shape == (224, 224, 3)
    assert len(f.to_dict()["groups"]) == 8


def test_dataset_groups_with_bounded_positions(lite0, samples):
    photos = "sample:chelsea,astronaut,rocket,motorcycle_left"
    small = factorize_dataset(lite0, photos, "blocks.3.0.bn1.act", k=2, max_positions=1500, batch_size=4)
    large = factorize_dataset(lite0, photos, "blocks.3.0.bn1.act", k=6, max_positions=1500, batch_size=4)
    pre = factorize_dataset(lite0, photos, "blocks.3.0.bn1.act", k=2, max_positions=1500, batch_size=4,
                            pre_activation=True)  # the ReLU6's inputs, clipped: another matrix, other groups
    assert pre.pre_activation and not small.pre_activation
    assert not torch.allclose(pre.loadings, small.loadings)
    assert small.images == 4 and small.positions == 1500 and (large.loadings >= 0).all()
    assert large.relative_error < small.relative_error
    f = large.transform(lite0, samples["coffee"])
    assert f.spatial.shape == (6, 28, 28) and (f.spatial >= 0).all()
    assert large.to_dict()["groups"][0]["top_channels"]


def test_negative_values_and_errors(lite0, samples):
    with pytest.raises(CnnscopeError, match="negative"):
        factorize_image(lite0, samples["coffee"], "blocks.4", k=2, negative="error")
    f = factorize_image(lite0, samples["coffee"], "blocks.4", k=2, negative="abs")
    assert (f.loadings >= 0).all()
    with pytest.raises(CnnscopeError, match="k must be"):
        factorize_image(lite0, samples["coffee"], LAYER, k=0)
    assert assert_unchanged(lite0.module, lambda: factorize_image(lite0, samples["coffee"], LAYER, k=2)) is None
