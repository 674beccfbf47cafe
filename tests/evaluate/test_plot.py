"""Figures of the evaluation results: Agg figures with one line per method, written by save_figure."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from cnnscope.evaluate import deletion, explainer, road, sanity_check
from cnnscope.plot.common import save_figure
from cnnscope.plot.evaluate import curves_figure, road_figure, sanity_figure, sanity_maps_figure
from tests.models import GapLinearNet


def test_figures(tmp_path):
    model = GapLinearNet()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    maps = {"a": torch.rand(2, 12, 12), "b": torch.rand(2, 3, 3)}
    curves = {k: deletion(model, x, m, step=16) for k, m in maps.items()}
    roads = {k: road(model, x, m, percentages=(30, 70)) for k, m in maps.items()}
    sanity = sanity_check(model, x, {"saliency": explainer("saliency"), "random": explainer("random")},
                          keep_maps=True, measures=["spearman_abs", "ssim"])
    figs = [curves_figure(curves, "deletion"), road_figure(roads), sanity_figure(sanity),
            sanity_figure(sanity, "ssim"), sanity_maps_figure(sanity)]
    assert all(isinstance(f, Figure) for f in figs)
    assert len(figs[0].axes[0].get_lines()) == 2 and "AUC" in figs[0].axes[0].get_legend().get_texts()[0].get_text()
    assert [len(ax.get_lines()) for ax in figs[1].axes] == [2, 2]
    assert len(figs[2].axes[0].get_lines()) == 2 + 1  # two methods and the zero line
    assert [t.get_text() for t in figs[2].axes[0].get_xticklabels()] == sanity.steps
    assert len(figs[4].axes) == 2 * len(sanity.steps)
    path = save_figure(figs[2], tmp_path / "sanity.png")
    assert path.stat().st_size > 1000
