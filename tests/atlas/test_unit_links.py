"""What an atlas stores beside the artifacts: circuit links (incoming and outgoing units), the facts a layer page
sorts by, and the dataset examples' whole images, each checked against an independent computation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnscope import wrap
from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.atlas.encode import jpeg_bytes
from cnnscope.dataset.circuits import connection, feeding_layers
from tests.atlas import helpers

K = 3
OPTIONS = BuildOptions(steps=4, size=32, top_k=3, units_per_chunk=4, batch_size=4, circuit_k=K, seed=1)
KINDS = ["featurevis", "examples", "histogram", "circuit"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("links")
    m = helpers.tiny_model()
    report = build_atlas(m, out, ["features.3", "features.5"], channels=None, source=helpers.tiny_images(),
                         kinds=KINDS, options=OPTIONS)
    return m, out, report


def _top_inputs(m, unit: int) -> list[dict]:
    conn = connection(m, "features.5", unit)
    return [{"layer": "features.3", "unit": int(conn.inputs[i]), "weight": float(conn.weights[i].sum()),
             "norm": float(conn.norms[i])} for i in conn.ranked(K)]


def test_incoming_links_are_the_strongest_folded_kernels(built):
    m, out, report = built
    assert report.advice == []  # the feeding layer (the max-pool) is in the atlas
    with AtlasStore(out) as st:
        for u in range(16):
            got = st.incoming("features.5", u)
            want = _top_inputs(m, u)
            assert [(g["layer"], g["unit"]) for g in got] == [(w["layer"], w["unit"]) for w in want]
            np.testing.assert_allclose([g["weight"] for g in got], [w["weight"] for w in want], rtol=1e-5)
            np.testing.assert_allclose([g["norm"] for g in got], [w["norm"] for w in want], rtol=1e-5)


def test_outgoing_links_are_the_units_that_list_this_one(built):
    m, out, _ = built
    edges = {(w["unit"], u): w["norm"] for u in range(16) for w in _top_inputs(m, u)}
    with AtlasStore(out) as st:
        for s in range(8):
            got = st.outgoing("features.3", s, limit=100)
            want = sorted(((u, n) for (src, u), n in edges.items() if src == s), key=lambda t: -t[1])
            assert [(g["layer"], g["unit"]) for g in got] == [("features.5", u) for u, _ in want]
            assert st.outgoing("features.3", s, limit=1) == got[:1]


def test_facts_equal_the_histogram_and_render_numbers(built):
    _, out, _ = built
    with AtlasStore(out) as st:
        assert set(st.fact_names("features.5")) == {"dead", "fraction_positive", "max", "mean"}
        means = st.fact_values("features.5", "mean")
        assert sorted(means) == list(range(16))
        for u in (0, 7, 15):
            arts = {(a.kind, a.name): a for a in st.artifacts("features.5", u)}
            hist, render = arts[("histogram", "histogram")].numbers, arts[("featurevis", "image")].numbers
            assert st.facts("features.5", u) == pytest.approx({"mean": hist["mean"], "max": hist["max"],
                                                              "fraction_positive": hist["fraction_positive"],
                                                              "dead": float(render["dead"])})
            assert means[u] == pytest.approx(hist["mean"])


def test_examples_whole_images_are_the_fitted_source_images(built):
    m, out, _ = built
    photos = helpers.tiny_images()
    with AtlasStore(out) as st:
        seen = set()
        for u in (0, 5):
            top = next(a for a in st.artifacts("features.5", u) if a.kind == "examples" and a.name == "top")
            for ex in top.numbers["examples"]:
                info, data = st.image(ex["image_id"])
                seen.add(ex["image_id"])
                assert info["name"] == ex["name"] == photos[ex["image_id"]][0]
                assert info["mime"] == "image/jpeg" and (info["width"], info["height"]) == (32, 32)
                fitted = m.fit_image(photos[ex["image_id"]][1])
                assert data == jpeg_bytes(fitted)  # the fitted image, through the atlas's (deterministic) encoder
        assert seen
        assert st.integrity_check() == []


def test_thumbnails_are_small_jpegs_of_the_channel_render(built):
    _, out, _ = built
    with AtlasStore(out) as st:
        arts = {a.name: a for a in st.artifacts("features.5", 3) if a.kind == "featurevis"}
        rec, data = st.artifact_bytes(arts["thumbnail"].id)
        assert rec.mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == (96, 96)
        full = np.asarray(Image.open(io.BytesIO(st.artifact_bytes(arts["image"].id)[1])).convert("RGB"))
        small = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
        want = np.asarray(Image.fromarray(full).resize((96, 96), Image.Resampling.LANCZOS), dtype=np.float64)
        assert np.abs(small - want).mean() < 8


def test_the_build_names_the_feeding_layer_it_leaves_out(tmp_path):
    report = build_atlas(helpers.tiny_model(), tmp_path, ["features.5"], channels=[0], kinds=["circuit"],
                         options=OPTIONS)
    assert len(report.advice) == 1 and "features.3" in report.advice[0] and "features.5" in report.advice[0]
    with AtlasStore(tmp_path) as st:  # the inputs are still listed (a later build that adds the layer links them)
        assert [link["layer"] for link in st.incoming("features.5", 0)] == ["features.3"] * K
        assert st.layer_names() == ["features.5"]


class _TwoNames(nn.Module):
    """The second conv's input is the output of ``block`` and of its last child ``block.1``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))

    def forward(self, x):
        return self.head(self.conv2(self.block(x)))


def test_the_feeding_layer_is_named_as_the_atlas_holds_it(tmp_path):
    m = wrap(_TwoNames(), input_size=16, name="two_names")
    assert feeding_layers(m, "conv2") == ["block", "block.1"]
    build_atlas(m, tmp_path, ["block.1", "conv2"], channels=[0, 1], kinds=["circuit"], options=OPTIONS)
    with AtlasStore(tmp_path) as st:
        assert {link["layer"] for link in st.incoming("conv2", 0)} == {"block.1"}
        assert st.outgoing("block.1", 0) or st.outgoing("block.1", 1)


def test_links_stored_under_another_name_of_the_tensor_are_found(tmp_path):
    from cnnscope.web.views import circuit_view

    m = wrap(_TwoNames(), input_size=16, name="two_names")
    build_atlas(m, tmp_path, ["conv2"], channels=[0, 1], kinds=["circuit"], options=OPTIONS)  # links under "block"
    build_atlas(m, tmp_path, ["block.1"], channels=[0, 1, 2, 3], kinds=["circuit"], options=OPTIONS)
    with AtlasStore(tmp_path) as st:
        assert {link["layer"] for link in st.incoming("conv2", 0)} == {"block"}
        assert st.get_meta("tensor_aliases")["block.1"] == ["block", "block.1"]
        v = circuit_view(st, "conv2", 0)
        assert {i["layer"] for i in v["incoming"]} == {"block.1"} and all(i["url"] for i in v["incoming"])
        assert v["note"] == ""
        src = v["incoming"][0]["unit"]
        out = circuit_view(st, "block.1", src)["outgoing"]
        assert ("conv2", 0) in [(o["layer"], o["unit"]) for o in out]


def test_only_the_channel_render_marks_dead_units(tmp_path):
    build_atlas(helpers.tiny_model(), tmp_path, ["features.5"], channels=[0], kinds=["featurevis_neuron"],
                options=OPTIONS)
    with AtlasStore(tmp_path) as st:
        assert "dead" not in st.fact_names("features.5")
