"""The activation spectrum of a unit (Cammarata et al., *Curve Detectors*, Distill 2020, Figs. 6, 7, 11, 12).

From the statistics of one pass (pre-activation values, as the article, when collected with ``pre_activation``):
the probability density of the values (plotted on a log scale, where an exponential tail is a straight line), the
contribution of each value to the expected value of the rectified activation, ``max(x, 0) * p(x)``, and how the
positions split into activation bands, with uniform random examples per band (:meth:`DatasetStats.band_examples`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .histograms import density
from .results import DatasetStats, Example


@dataclass
class Band:
    """One activation band ``[low, high)`` of a unit.

    Attributes:
        fraction: share of all positions in the band.
        contribution: share of ``E[max(x, 0)]`` coming from the band.
        examples: uniform random positions of the band (records of :class:`~.results.Example`).
    """

    label: str
    low: float
    high: float
    fraction: float
    contribution: float
    examples: list[Example] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"label": self.label, "low": self.low, "high": self.high, "fraction": self.fraction,
                "contribution": self.contribution, "examples": [e.to_dict() for e in self.examples]}


@dataclass
class Spectrum:
    """Density and expected-value contribution of a unit's values, with its bands (``float64`` CPU tensors).

    Attributes:
        centers, widths, density: per resolved histogram bin (``[n]``) of the values.
        contribution: ``max(center, 0) * density`` per bin.
        output_density: density of the layer's output over the same bins (``density`` unless the values are
            pre-activations).
        zero_fraction: share of positions with ``|x| < 2**min_exp`` (not in the density bins).
        linear_centers, linear_density, linear_contribution: the same on ``display_bins`` equal-width bins between
            the minimum and the maximum (log bins merged by their centres): smoother, what the figures show.
    """

    layer: str
    channel: int
    pre_activation: bool
    centers: torch.Tensor
    widths: torch.Tensor
    density: torch.Tensor
    contribution: torch.Tensor
    output_density: torch.Tensor
    zero_fraction: float
    mean: float
    std: float
    fraction_positive: float
    minimum: float
    maximum: float
    images: int
    bands: list[Band]
    linear_centers: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    linear_density: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    linear_contribution: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    def to_dict(self) -> dict:
        keep = self.density > 0
        return {"layer": self.layer, "channel": self.channel, "pre_activation": self.pre_activation,
                "mean": self.mean, "std": self.std, "fraction_positive": self.fraction_positive,
                "minimum": self.minimum, "maximum": self.maximum, "images": self.images,
                "zero_fraction": self.zero_fraction, "bands": [b.to_dict() for b in self.bands],
                "bins": {"centers": self.centers[keep].tolist(), "widths": self.widths[keep].tolist(),
                         "density": self.density[keep].tolist(), "contribution": self.contribution[keep].tolist(),
                         "output_density": self.output_density[keep].tolist()},
                "linear": {"centers": self.linear_centers.tolist(), "density": self.linear_density.tolist(),
                           "contribution": self.linear_contribution.tolist()}}


def article_bands(low: float, high: float) -> list[tuple[str, float, float]]:
    """The article's four bands from a unit's value range (Fig. 7): strongly positive ``[max/2, max]``, weakly
    positive ``[0, max/2)``, weakly negative ``[min/2, 0)`` and strongly negative ``[min, min/2)``; bands on a
    side the unit never reaches are left out."""
    out = []
    if high > 0:
        out += [("strong", high / 2, math.nextafter(high, math.inf)), ("weak", 0.0, high / 2)]
    if low < 0:
        out += [("near zero / negative", low / 2, 0.0), ("strongly negative", low, low / 2)]
    return out


def linear_density(centers: torch.Tensor, mass: torch.Tensor, low: float, high: float, bins: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge log-bin masses into ``bins`` equal-width bins on ``[low, high]`` by their centres: ``(centres,
    density)``."""
    if not high > low:
        high = low + 1e-6
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    idx = (torch.searchsorted(edges, centers, right=True) - 1).clamp(0, bins - 1)
    merged = torch.bincount(idx, weights=mass, minlength=bins)
    return (edges[:-1] + edges[1:]) / 2, merged / (edges[1] - edges[0])


def spectrum(stats: DatasetStats, layer: str, channel: int, *, bands: list[tuple[str, float, float]] | None = None,
             examples: int = 9, display_bins: int = 80) -> Spectrum:
    """The spectrum of unit ``channel`` of ``layer``.

    Args:
        stats: a statistics pass (:func:`~cnnscope.dataset.examples.collect_statistics`).
        bands: ``(label, low, high)`` bands; default: :func:`article_bands` of the unit's range.
        examples: random examples kept per band.

    Band fractions and contributions come from the histogram, each bin counted in the band holding its centre
    (exact when the band edges are bin edges, otherwise within one bin).
    """
    ls = stats[layer]
    c = ls.check_channel(channel)
    counts = ls.hist[c]
    total = max(int(counts.sum()), 1)
    centers, widths, dens = density(counts, stats.bins)
    _, _, out_dens = density(ls.hist_output[c], stats.bins)
    positive = centers.clamp(min=0.0)
    contribution = positive * dens
    mass = dens * widths
    expected = float((positive * mass).sum())
    lo, hi = float(ls.minimum[c]), float(ls.maximum[c])
    out = []
    for label, a, b in (bands if bands is not None else article_bands(lo, hi)):
        inside = (centers >= a) & (centers < b)
        share = float((positive[inside] * mass[inside]).sum()) / expected if expected > 0 else 0.0
        out.append(Band(label=label, low=float(a), high=float(b), fraction=float(mass[inside].sum()),
                        contribution=share, examples=stats.band_examples(layer, c, a, b, examples)))
    lin_c, lin_d = linear_density(centers, mass, lo, hi, display_bins)
    return Spectrum(layer=layer, channel=c, pre_activation=ls.pre_activation, centers=centers, widths=widths,
                    density=dens, contribution=contribution, output_density=out_dens,
                    zero_fraction=1.0 - float(mass.sum()) - float(counts[[0, -1]].sum()) / total,
                    mean=float(ls.mean[c]), std=float(ls.std[c]), fraction_positive=float(ls.fraction_positive[c]),
                    minimum=lo, maximum=hi, images=stats.images, bands=out, linear_centers=lin_c,
                    linear_density=lin_d, linear_contribution=lin_c.clamp(min=0.0) * lin_d)
