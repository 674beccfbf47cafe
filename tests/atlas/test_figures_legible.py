"""The unit page's figures are legible at the size they are stored (80 dpi): no overlapping tick labels or kernel
captions, and no text smaller than 8 pt."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from matplotlib.text import Text

from cnnscope.dataset.histograms import LogBins, density
from cnnscope.plot.atlas import MAX_TICKS, circuit_figure, unit_histogram

DPI = 80  # cnnscope.atlas.encode.figure_png


def _texts(fig):
    fig.set_dpi(DPI)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for t in fig.findobj(match=Text):
        if t.get_visible() and t.get_text().strip():
            out.append((t.get_text(), t.get_fontsize(), t.get_window_extent(renderer)))
    return out


def _overlaps(texts) -> list[tuple[str, str]]:
    return [(a[0], b[0]) for a, b in itertools.combinations(texts, 2) if a[2].overlaps(b[2])]


def _histogram(values: np.ndarray):
    bins = LogBins()
    counts = torch.bincount(bins.lookup(torch.as_tensor(values, dtype=torch.float32)).flatten(),
                            minlength=bins.n_bins)
    centers, widths, dens = (t.numpy() for t in density(counts, bins))
    return unit_histogram(centers, widths, dens * widths, title="blocks.5.3.bn1.act:117 activations over 2,000 images",
                          mean=float(values.mean()))


@pytest.mark.parametrize("spread", [0.5, 60.0, 5000.0])
def test_histogram_ticks_never_overlap(spread):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-spread / 3, spread / 10, 4000), rng.exponential(spread, 4000)])
    fig = _histogram(values)
    texts = _texts(fig)
    ticks = [t for t in texts if t[0] not in ("activation", "fraction of positions") and "blocks" not in t[0]]
    assert _overlaps(ticks) == []
    assert min(t[1] for t in texts) >= 8
    assert len(fig.axes[0].get_xticks()) <= MAX_TICKS + 2  # the locator's ticks, and matplotlib's edge ticks


@pytest.mark.parametrize("kernel", [(3, 3), (1, 1)])
def test_circuit_captions_are_readable(kernel):
    w = np.random.default_rng(1).normal(size=(8,) + kernel)
    labels = [f"blocks.3.2.bn1.act:{100 + i}" for i in range(8)]
    fig = circuit_figure(w, labels, title="blocks.4.0.bn1.act:3: strongest of 80 inputs from blocks.3.2.bn1.act")
    texts = _texts(fig)
    assert min(t[1] for t in texts) >= 8
    captions = [t for t in texts if t[0] in {str(100 + i) for i in range(8)}]
    assert len(captions) == 8 and _overlaps(captions) == []
