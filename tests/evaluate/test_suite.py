"""evaluate(): every metric of the registry on tiny CNNs, agreement with the single-metric functions,
the tables, and the model-unchanged rule for every public operation."""

from __future__ import annotations

import csv
import inspect
import io
import math

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.evaluate import (
    BASELINES,
    METRICS,
    MetricTable,
    deletion,
    evaluate,
    explainer,
    featurevis_quality,
    insertion,
    pointing_game,
    randomization_units,
    road,
    sanity_check,
    save_table,
)
from cnnscope.featurevis import channel
from cnnscope.models import wrap
from tests.conformance import assert_unchanged
from tests.models import GapLinearNet, InplaceReLUNet

COLUMNS_OF = {"deletion": ["deletion_auc"], "insertion": ["insertion_auc"], "road": ["road_morf", "road_lerf", "road"],
              "pointing": ["pointing"], "sanity": ["sanity_spearman_abs", "sanity_ssim"]}
BOXES = [(0, 0, 8, 8), (8, 8, 16, 16), (4, 4, 12, 12)]


def _x(n: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_fills_its_columns(metric):
    model = GapLinearNet()
    ev = evaluate(model, _x(), ["saliency", "gradcam", "random"], metrics=[metric], regions=BOXES, step=32,
                  road_percentages=(20, 60), image_names=["a", "b", "c"])
    assert set(COLUMNS_OF[metric]) | {"seconds"} == set(ev.table.metrics)
    assert ev.table.methods == ["saliency", "gradcam", "random"]
    for m in ev.table.methods:
        for c in COLUMNS_OF[metric]:
            vals = ev.table.values(m, c)
            assert len(vals) == 3 and all(math.isfinite(v) for v in vals), (m, c, vals)
    assert ev.maps["gradcam"].shape == (3, 16, 16)


def test_suite_equals_the_single_metric_functions():
    model = GapLinearNet()
    x = _x()
    ev = evaluate(model, x, ["saliency"], metrics=["deletion", "insertion", "road", "pointing"], step=32,
                  road_percentages=(30, 70), regions=BOXES)
    maps = ev.maps["saliency"]
    torch.testing.assert_close(torch.tensor(ev.table.values("saliency", "deletion_auc")),
                               deletion(model, x, maps, step=32).auc)
    torch.testing.assert_close(torch.tensor(ev.table.values("saliency", "insertion_auc")),
                               insertion(model, x, maps, step=32).auc)
    r = road(model, x, maps, percentages=(30, 70))
    torch.testing.assert_close(torch.tensor(ev.table.values("saliency", "road")), r.combined)
    p = pointing_game(maps, BOXES, size=(16, 16))
    assert ev.table.values("saliency", "pointing") == [float(h) for h in p.hits]
    direct = explainer("saliency")(model, x, ev.targets)
    torch.testing.assert_close(maps, direct[:, 0])


def test_table_summary_markdown_and_csv(tmp_path):
    t = MetricTable()
    t.extend("gradcam", "deletion_auc", ["a", "b", "c"], [0.1, 0.2, 0.6])
    t.extend("gradcam", "insertion_auc", ["a", "b", "c"], [0.5, float("nan"), 0.7])
    t.extend("random", "deletion_auc", ["a", "b", "c"], [0.3, 0.3, 0.3])
    summ = t.summary()
    assert summ[("gradcam", "deletion_auc")] == pytest.approx((0.3, float(np.std([0.1, 0.2, 0.6], ddof=1)), 3))
    assert summ[("gradcam", "insertion_auc")] == pytest.approx((0.6, float(np.std([0.5, 0.7], ddof=1)), 2))
    md = t.to_markdown()
    assert "| gradcam | 0.300 ± 0.265 | 0.600 ± 0.141 |" in md and "deletion AUC ↓" in md
    assert "| random | 0.300 ± 0.000 |  |" in md
    rows = list(csv.DictReader(io.StringIO(t.to_csv())))
    assert rows[0]["method"] == "gradcam" and float(rows[0]["deletion_auc_mean"]) == pytest.approx(0.3)
    assert rows[1]["insertion_auc_mean"] == "nan" and rows[0]["images"] == "3"
    paths = save_table(t, tmp_path, notes="- a note")
    assert [p.name for p in paths] == ["evaluation.md", "evaluation.csv", "per_image.csv"]
    assert "- a note" in paths[0].read_text() and len(paths[2].read_text().splitlines()) == 10


def test_baselines_are_seeded_and_model_free():
    x = _x(2)
    t = torch.zeros(2, dtype=torch.long)
    for name in BASELINES:
        a, b = explainer(name, seed=3), explainer(name, seed=3)
        torch.testing.assert_close(a(None, x, t), b(None, x, t))
    assert explainer("random")(None, x, t).shape == (2, 7, 7)
    assert explainer("random_pixel")(None, x, t).shape == (2, 16, 16)
    c = explainer("center")(None, x, t)
    assert c[0, 7:9, 7:9].min() > c[0, 0, 0] and torch.equal(c[0], c[1])


def test_unknown_names():
    with pytest.raises(MethodError, match="did you mean: gradcam"):
        explainer("gradcm")
    with pytest.raises(MethodError, match="did you mean: deletion"):
        evaluate(GapLinearNet(), _x(), ["random"], metrics=["deletion_auc"])
    with pytest.raises(MethodError, match="option"):
        explainer("saliency", n_stepz=3)
    with pytest.raises(CnnscopeError, match="regions"):
        evaluate(GapLinearNet(), _x(), ["random"], metrics=["pointing"])


def _operations(model, x):
    maps = torch.rand(x.shape[0], 4, 4)
    sal = explainer("saliency")
    return {
        "deletion": lambda: deletion(model, x, sal, step=64),
        "insertion": lambda: insertion(model, x, maps, step=64),
        "road": lambda: road(model, x, maps, percentages=(50,)),
        "sanity": lambda: sanity_check(model, x, {"saliency": sal}, measures=["spearman_abs"]),
        "evaluate": lambda: evaluate(model, x, ["saliency", "gradcam"], metrics=list(METRICS), step=64,
                                     road_percentages=(50,), regions=BOXES[: x.shape[0]]),
        "featurevis_quality": lambda: featurevis_quality(model, x[:1], dataset=x, objective=channel("features.0", 1),
                                                         n_transforms=2),
        "raises": lambda: deletion(model, x, torch.rand(x.shape[0] + 1, 4, 4)),
    }


@pytest.mark.parametrize("name", ["deletion", "insertion", "road", "sanity", "evaluate", "featurevis_quality",
                                  "raises"])
def test_public_operations_leave_the_model_unchanged(name):
    model = InplaceReLUNet().train()  # training mode, in-place ReLUs, BatchNorm running stats
    x = _x(2)
    err = assert_unchanged(model, _operations(model, x)[name])
    assert (err is not None) == (name == "raises"), err
    assert model.training


def test_plain_module_and_its_wrapper_give_equal_values():
    module = GapLinearNet()
    x = _x()
    loaded = wrap(module, input_size=16)
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    sal = explainer("saliency")
    for fn in (deletion, insertion):
        a, b = fn(module, x, sal, step=32), fn(loaded, x, sal, step=32)
        torch.testing.assert_close(a.scores, b.scores, atol=0, rtol=0)
    a, b = road(module, x, maps, percentages=(30, 70)), road(loaded, x, maps, percentages=(30, 70))
    torch.testing.assert_close(a.morf, b.morf, atol=0, rtol=0)
    torch.testing.assert_close(a.lerf, b.lerf, atol=0, rtol=0)
    a, b = (sanity_check(m, x, ["saliency"], measures=["spearman_abs"]) for m in (module, loaded))
    torch.testing.assert_close(a.similarity["saliency"]["spearman_abs"], b.similarity["saliency"]["spearman_abs"])
    a, b = (evaluate(m, x, ["saliency", "random"], metrics=["deletion", "road", "pointing"], step=32,
                     road_percentages=(50,), regions=BOXES) for m in (module, loaded))
    assert [r for r in a.table.rows if r[1] != "seconds"] == [r for r in b.table.rows if r[1] != "seconds"]


PUBLIC = {"deletion": deletion, "insertion": insertion, "road": road, "evaluate": evaluate,
          "sanity_check": sanity_check, "featurevis_quality": featurevis_quality,
          "randomization_units": randomization_units}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_model_first_and_options_keyword_only(name):
    params = list(inspect.signature(PUBLIC[name]).parameters.values())
    assert params[0].name == "model"
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 3 and all(p.default is p.empty for p in positional), positional
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(positional):])
    if "batch_size" in inspect.signature(PUBLIC[name]).parameters:
        assert inspect.signature(PUBLIC[name]).parameters["batch_size"].default is None


def test_options_cannot_be_given_by_position():
    model, x = GapLinearNet(), _x(1)
    maps = torch.rand(1, 16, 16)
    with pytest.raises(TypeError):
        deletion(model, x, maps, 0)
    with pytest.raises(TypeError):
        road(model, x, maps, 0)
    with pytest.raises(TypeError):
        evaluate(model, x, ["random"], ["deletion"])
    with pytest.raises(TypeError):
        explainer("saliency", "features.0")
