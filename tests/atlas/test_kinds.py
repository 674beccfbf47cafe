"""Every registered artifact kind, built on the tiny net, checked against independent computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas, get_kind, list_kinds
from cnnscope.atlas.encode import decode_png
from cnnscope.errors import MethodError
from tests.atlas import helpers

LAYER = "features.5"  # nn.ReLU: every kind reads its input (pre_activation=True), as Curve Detectors does
UNITS = [1, 4]
OPTIONS = BuildOptions(steps=6, size=32, top_k=3, units_per_chunk=2, batch_size=3, pre_activation=True, seed=3)
AVAILABLE = [k.name for k in list_kinds() if k.unavailable() is None and k.name != helpers.KIND]


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """One tiny atlas with every available kind (built once; each test reads its own kind)."""
    out = tmp_path_factory.mktemp("kinds")
    build_atlas(helpers.tiny_model(), out, [LAYER], channels=UNITS, source=helpers.tiny_images(), kinds=AVAILABLE,
                options=OPTIONS)
    return out


def _arts(atlas, kind: str, unit: int) -> dict:
    with AtlasStore(atlas) as st:
        return {a.name: (a, st.artifact_bytes(a.id)[1]) for a in st.artifacts(LAYER, unit) if a.kind == kind}


def _pre_activation() -> torch.Tensor:
    m = helpers.tiny_model()
    m.module.eval()
    with torch.no_grad():
        return m.module.features[:5](m.batch([a for _, a in helpers.tiny_images()]))


def test_the_builtin_kinds_are_registered():
    assert {"featurevis", "featurevis_neuron", "featurevis_negative", "examples", "histogram", "tuning"} <= {
        k.name for k in list_kinds()}
    with pytest.raises(MethodError, match="did you mean: histogram"):
        get_kind("histgram")


@pytest.mark.parametrize("kind", AVAILABLE)
def test_every_kind_stores_pictures_numbers_and_provenance(atlas, kind):
    with AtlasStore(atlas) as st:
        assert st.integrity_check() == []
        assert kind in st.get_meta("kinds")
    for u in UNITS:
        arts = _arts(atlas, kind, u)
        assert arts, f"{kind} made nothing for unit {u}"
        for rec, data in arts.values():
            json.dumps(rec.numbers)
            assert rec.provenance["cnnscope_version"] and rec.provenance["timing"]["chunk_units"] == 2
            assert "spec" in rec.provenance and "seed" in rec.provenance or kind == "tuning"
            if rec.mime == "image/png":
                img = decode_png(data)
                assert img.ndim == 3 and min(img.shape[:2]) >= 16 and img.std() > 0  # not blank


@pytest.mark.parametrize("kind", [k for k in ("featurevis", "featurevis_neuron", "featurevis_negative")
                                  if k in AVAILABLE])
def test_featurevis_numbers_describe_the_stored_picture(atlas, kind):
    from cnnscope.featurevis import channel, measure, neuron

    m = helpers.tiny_model()
    for u in UNITS:
        rec, data = _arts(atlas, kind, u)["image"]
        img = decode_png(data)
        assert img.shape == (32, 32, 3)
        # the negative render minimises the channel and reports the channel's own value
        make = {"featurevis": channel, "featurevis_negative": channel, "featurevis_neuron": neuron}[kind]
        obj = make(LAYER, u, pre_activation=True)
        again = float(measure(m, img, obj)[0])
        assert again == pytest.approx(rec.numbers["activation_stored_image"], rel=1e-5, abs=1e-6)
        assert rec.numbers["activation"] == pytest.approx(again, rel=0.05, abs=0.02)  # before uint8 rounding
        assert rec.provenance["seed"] == OPTIONS.seed and rec.provenance["spec"]["steps"] == OPTIONS.steps
        assert rec.provenance["spec"]["objective"] == (-obj if kind == "featurevis_negative" else obj).spec()
        assert len(rec.numbers["trace"]["value"]) == OPTIONS.steps


@pytest.mark.skipif("examples" not in AVAILABLE, reason="cnnscope.dataset is not installed")
def test_examples_are_the_strongest_positions(atlas):
    pre = _pre_activation()
    for u in UNITS:
        rec, data = _arts(atlas, "examples", u)["top"]
        values = [e["value"] for e in rec.numbers["examples"]]
        best_per_image = pre[:, u].flatten(1).amax(1)  # one example per image, positive values only
        expected = best_per_image[best_per_image > 0].sort(descending=True).values[:OPTIONS.top_k]
        torch.testing.assert_close(torch.tensor(values), expected, rtol=1e-5, atol=1e-5)
        assert rec.numbers["pre_activation"] is True
        best = rec.numbers["examples"][0]
        assert pre[best["image_id"], u, best["y"], best["x"]].item() == pytest.approx(values[0], rel=1e-5)
        assert decode_png(data).shape[0] >= 48


@pytest.mark.skipif("histogram" not in AVAILABLE, reason="cnnscope.dataset is not installed")
def test_histogram_counts_every_position(atlas):
    pre = _pre_activation()
    for u in UNITS:
        rec, _ = _arts(atlas, "histogram", u)["histogram"]
        v = pre[:, u].double()
        assert rec.numbers["count"] == v.numel() == sum(b[2] for b in rec.numbers["bins"])
        assert rec.numbers["mean"] == pytest.approx(float(v.mean()), rel=1e-4)
        assert rec.numbers["max"] == pytest.approx(float(v.max()), rel=1e-5)
        assert rec.numbers["fraction_positive"] == pytest.approx(float((v > 0).double().mean()))
        for lo, hi, count in rec.numbers["bins"]:  # every count is the number of values in its bin
            inside = ((v >= lo) & (v < hi)) if lo >= 0 else ((v > lo) & (v <= hi))
            assert int(inside.sum()) == count, (lo, hi)


@pytest.mark.skipif(not {"tuning", "histogram"} <= set(AVAILABLE), reason="cnnscope.stimuli is not installed")
def test_tuning_matches_a_direct_tuning_map(atlas):
    from cnnscope.stimuli.tuning import tuning_map

    m = helpers.tiny_model()
    direct = tuning_map(m, LAYER, channels=UNITS, pre_activation=True)
    for i, u in enumerate(UNITS):
        rec, _ = _arts(atlas, "tuning", u)["orientation_x_radius"]
        assert rec.numbers["orientations"] == direct.orientations.tolist()
        values = np.asarray(rec.numbers["values"])
        assert rec.numbers["in_std"]  # images in the build: z-scores against the histogram's dataset statistics
        hist, _ = _arts(atlas, "histogram", u)["histogram"]
        expected = (np.asarray(direct.raw[i]) - hist.numbers["mean"]) / hist.numbers["std"]
        np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)
        assert rec.numbers["preferred"]["value"] == pytest.approx(float(values.max()), rel=1e-6)


@pytest.mark.skipif("circuit" not in AVAILABLE, reason="cnnscope.dataset.circuits is not installed")
def test_circuit_holds_the_strongest_conv_kernels(atlas):
    conv = helpers.tiny_model().module.features[4].weight.detach()  # features.5 is the ReLU after this conv
    for u in UNITS:
        rec, _ = _arts(atlas, "circuit", u)["weights"]
        inputs = rec.numbers["inputs"]
        norms = conv[u].flatten(1).norm(dim=1)
        expected = norms.argsort(descending=True)[:OPTIONS.circuit_k].tolist()
        assert [it["unit"] for it in inputs] == expected
        assert rec.numbers["source"] == "features.3" and rec.numbers["conv"] == "features.4"
        for it in inputs:
            torch.testing.assert_close(torch.tensor(it["weights"]), conv[u, it["unit"]])


@pytest.mark.skipif("circuit" not in AVAILABLE, reason="cnnscope.dataset.circuits is not installed")
def test_kinds_that_do_not_apply_to_a_layer_are_recorded(tmp_path):
    """The pooled layer has no convolution of its own: circuit is left out there, with the reason, not faked."""
    build_atlas(helpers.tiny_model(), tmp_path, ["features.3", "features.4"], channels="0-1",
                kinds=["circuit", "featurevis"], options=BuildOptions(steps=1, size=16))
    with AtlasStore(tmp_path) as st:
        assert st.integrity_check() == []
        skipped = st.get_meta("not_applicable")
        assert list(skipped) == ["features.3"] and "MaxPool2d" in skipped["features.3"]["circuit"]
        assert {a.kind for a in st.artifacts("features.3", 0)} == {"featurevis"}
        assert {a.kind for a in st.artifacts("features.4", 0)} == {"featurevis", "circuit"}
    with pytest.raises(Exception, match="no chosen artifact kind applies"):
        build_atlas(helpers.tiny_model(), tmp_path / "b", ["features.3"], channels=0, kinds=["circuit"])
