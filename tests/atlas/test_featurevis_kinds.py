"""The feature-visualization kinds on a tiny ReLU6 net: dead units marked, several pictures per unit, and numbers
that a re-measurement of each stored picture reproduces."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.atlas.encode import decode_png
from cnnscope.atlas.kinds import default_kinds
from cnnscope.errors import CnnscopeError
from tests.atlas.helpers import ROOT

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # model-space pixels lie in [-2, 2]
DEAD, LIVE, FLAT = 0, 1, 2  # act1's unit 0 is never positive; dw's unit 2 is a constant 0
OPTIONS = BuildOptions(steps=8, size=32, units_per_chunk=2, seed=5)


def _model():
    sys.path.insert(0, str(ROOT))
    from cnnscope import wrap
    from tests.models import ReLU6Net

    net = ReLU6Net()
    with torch.no_grad():
        net.conv1.bias[DEAD] = -100.0
        net.conv1.bias[LIVE] = 0.5
        net.dw.weight[FLAT].zero_()
        net.dw.bias[FLAT] = 0.0
    return wrap(net, input_size=32, mean=MEAN, std=STD, name="relu6_dead")


def _pictures(out, layer: str, unit: int) -> dict:
    """``(kind, name) -> (numbers, uint8 picture)`` of one unit's renders (thumbnails left out)."""
    with AtlasStore(out) as st:
        return {(a.kind, a.name): (a.numbers, decode_png(st.artifact_bytes(a.id)[1]))
                for a in st.artifacts(layer, unit) if a.name != "thumbnail"}


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    out = tmp_path_factory.mktemp("fv")
    build_atlas(_model(), out, ["act1", "dw"], channels=[DEAD, LIVE, FLAT],
                kinds=["featurevis", "featurevis_diversity", "featurevis_neuron", "featurevis_negative"],
                options=OPTIONS)
    return out


def test_a_unit_that_is_never_positive_is_marked_dead(atlas):
    net = _model().module
    # closed form: |pre-activation| <= bias + sum|w| * max|x|, and model-space pixels lie in [-2, 2]
    bound = float(net.conv1.bias.detach()[DEAD] + net.conv1.weight.detach()[DEAD].abs().sum() * 2)
    assert bound < 0
    for (kind, name), (nums, _) in _pictures(atlas, "act1", DEAD).items():
        assert nums["dead"] is (kind != "featurevis_negative"), (kind, name)
        assert nums["optimised"] == "pre_activation"  # the ReLU6's input: it can move
        assert max(nums["trace"]["value"]) <= bound and nums["value"] <= bound
        if kind != "featurevis_negative":
            assert nums["activation"] == 0 and set(nums["trace"]["activation"]) == {0.0}
            assert "activation stayed at 0" in nums["dead_reason"]
            assert nums["trace"]["value"][-1] > nums["trace"]["value"][0]  # the pre-activation did move
    for (kind, name), (nums, _) in _pictures(atlas, "act1", LIVE).items():
        assert nums["dead"] is False and "dead_reason" not in nums, (kind, name)
        if kind != "featurevis_negative":
            assert nums["activation"] > 0


def test_an_objective_without_gradient_is_marked_dead(atlas):
    pics = _pictures(atlas, "dw", FLAT)  # dw is a convolution: its output is optimised, and it is 0 everywhere
    assert pics
    for nums, _ in pics.values():
        assert nums["optimised"] == "output" and nums["value"] == 0 and nums["dead"] is True
        assert "no gradient" in nums["dead_reason"]
    assert not any(n["dead"] for n, _ in _pictures(atlas, "dw", LIVE).values())


def test_a_unit_has_distinct_diversity_neuron_and_channel_pictures(atlas):
    pics = _pictures(atlas, "act1", LIVE)
    diversity = [("featurevis_diversity", f"diversity_{j}") for j in range(1, OPTIONS.diversity + 1)]
    shown = [("featurevis", "image"), *diversity, ("featurevis_neuron", "image"), ("featurevis_negative", "image")]
    assert set(pics) == set(shown)
    for a, b in itertools.combinations(shown, 2):
        assert not (pics[a][1] == pics[b][1]).all(), (a, b)
    with AtlasStore(atlas) as st:
        seeds = {a.name: a.provenance["seed"] for a in st.artifacts("act1", LIVE) if a.kind == "featurevis_diversity"}
    assert [seeds[n] for _, n in diversity] == [OPTIONS.seed + j for j in range(OPTIONS.diversity)]


def test_numbers_are_a_remeasurement_of_each_picture(atlas):
    from cnnscope.featurevis import channel, measure, neuron

    m = _model()
    for u in (DEAD, LIVE):
        for (kind, _), (nums, img) in _pictures(atlas, "act1", u).items():
            make = neuron if kind == "featurevis_neuron" else channel
            value = float(measure(m, img, make("act1", u, pre_activation=True))[0])
            act = float(measure(m, img, make("act1", u))[0])
            assert nums["value_stored_image"] == pytest.approx(value, rel=1e-5, abs=1e-6), kind
            assert nums["activation_stored_image"] == pytest.approx(act, rel=1e-5, abs=1e-6), kind
            assert nums["value"] == pytest.approx(value, rel=0.05, abs=0.02), kind  # before uint8 rounding
            assert nums["trace"]["value"][-1] == pytest.approx(value, rel=1e-5, abs=1e-6)  # the last step's picture
            assert nums["trace"]["step"][-1] == OPTIONS.steps
            assert nums["direction"] == ("minimise" if kind == "featurevis_negative" else "maximise")
    # the negative picture reports the channel's own value, which went down, below the maximised picture's
    neg, pos = (_pictures(atlas, "act1", LIVE)[k, "image"][0] for k in ("featurevis_negative", "featurevis"))
    assert neg["trace"]["value"][-1] < neg["trace"]["value"][0] and neg["value"] < pos["value"]


def test_diversity_and_neuron_renders_are_built_by_default():
    assert {"featurevis", "featurevis_diversity", "featurevis_neuron"} <= set(default_kinds(with_images=False))
    assert "featurevis_negative" not in default_kinds(with_images=True)


@pytest.mark.parametrize("k", [1, 9])
def test_a_diversity_outside_its_range_is_one_line(tmp_path, k):
    opts = BuildOptions(steps=1, size=16, diversity=k)
    with pytest.raises(CnnscopeError, match=r"diversity must be 2\.\.8 images per unit"):
        build_atlas(_model(), tmp_path / "a", ["act1"], channels=0, kinds=["featurevis_diversity"], options=opts)


def test_the_unit_page_says_a_dead_render_is_no_result(atlas):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(atlas, explain=False)) as client:
        dead = client.get(f"/layer/act1/unit/{DEAD}")
        live = client.get(f"/layer/act1/unit/{LIVE}")
    assert dead.status_code == live.status_code == 200
    assert "Dead unit, not a result: " in dead.text and "activation stayed at 0" in dead.text
    assert "Dead unit" not in live.text
