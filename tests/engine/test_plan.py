"""``plan_build``: a timed sample of an atlas build, extrapolated to every unit and image."""

from __future__ import annotations

import numpy as np
import pytest

from cnnscope import wrap
from cnnscope.atlas.kinds import BuildOptions
from cnnscope.engine.plan import BuildPlan, KindPlan, human_bytes, human_seconds, plan_build
from cnnscope.errors import CnnscopeError, LayerError
from tests.models import ReLU6Net


@pytest.fixture(scope="module")
def tiny():
    return wrap(ReLU6Net(seed=1), input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_plan_without_images_adds_up(tiny, single_thread):
    opts = BuildOptions(steps=64, size=24, units_per_chunk=3)
    plan = plan_build(tiny, ["act1", "pw"], ["featurevis", "circuit"], channels="0-5", options=opts, workers=4)
    assert plan.layers == {"act1": 6, "pw": 6} and plan.units == 12 and plan.images == 0
    assert [k.name for k in plan.kinds] == ["featurevis", "circuit"]
    assert plan.sampled["steps"] == 4 and plan.sampled["layers"] == ["act1", "pw"]
    for k in plan.kinds:
        assert k.units == 12 and k.seconds_per_unit > 0 and k.bytes_per_unit > 100  # a PNG per unit
        assert k.seconds == pytest.approx(k.seconds_per_unit * k.units)
        assert k.bytes == pytest.approx(k.bytes_per_unit * k.units)
    assert plan.seconds == pytest.approx(sum(k.seconds for k in plan.kinds))
    assert plan.seconds_on(4) == pytest.approx(plan.seconds / 4)
    first = plan.lines()[0]
    assert first.startswith("12 units x 2 kinds, about ") and first.endswith(" on 4 workers")
    assert f"about {human_seconds(plan.seconds)} on this machine" in first
    assert plan.to_dict()["units"] == 12 and len(plan.lines()) == 3


def test_plan_with_images_times_the_pass(tiny, single_thread):
    rng = np.random.default_rng(0)
    pics = [(f"p{i}", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in range(3)]
    plan = plan_build(tiny, "act2", ["histogram"], channels="0,1", source=pics, images=1_000_000,
                      options=BuildOptions(units_per_chunk=2), sample_images=2)
    assert plan.images == 1_000_000 and plan.sampled["images"] == 2 and plan.seconds_per_image > 0
    assert plan.seconds == pytest.approx(plan.kinds[0].seconds + 1_000_000 * plan.seconds_per_image)
    assert plan.lines()[-1].startswith("  dataset pass: 1,000,000 images x ")


def test_plan_text_and_errors(tiny):
    plan = BuildPlan(layers={"a": 19_200}, kinds=[KindPlan("featurevis", 19_200, 3.0, 1e5, 57_600.0, 1.92e9)],
                     images=100, seconds_per_image=1.5, workers=8)
    assert plan.lines()[0] == ("19,200 units x 1 kind, about 1.9 GB, about 16.0 h on this machine; about 2.0 h "
                               "on 8 workers")
    assert human_bytes(2.1e9) == "2.1 GB" and human_seconds(3 * 86400) == "3.0 days"
    with pytest.raises(LayerError, match="unknown layer"):
        plan_build(tiny, ["nope"], ["featurevis"])
    with pytest.raises(CnnscopeError, match="workers must be a positive int, got 0"):
        plan_build(tiny, ["act1"], ["featurevis"], workers=0)
