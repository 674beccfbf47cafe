"""Human labels against activation (Cammarata et al., *Curve Detectors*, Distill 2020, Figs. 9, 11 and 12).

A unit's positive range ``[0, max]`` (and optionally its negative range ``[min, 0)``) is cut into equal activation
bands; each band keeps a uniform random sample of the dataset positions whose value falls in it (the band samples
of a statistics pass, :meth:`~.results.DatasetStats.band_examples`) and the number of positions it holds (from the
histogram). A person labels some sampled examples of each band (the article's "curve", "imperfect curve",
"unrelated", "opposing curve", or any text); from them:

- **composition**: per band, the share of its labelled examples carrying each label (Fig. 9's stacked bars: the
  probability of a label given the activation);
- **distributions**: per label, a histogram of the values of its examples, each example weighted by
  ``w = count_b / n_b`` (``count_b``: dataset positions in its band ``b``, ``n_b``: labelled examples of ``b``), so a
  histogram estimates the number of dataset positions with that label at each value (Fig. 11), and the same
  weighted by ``max(v, 0)``, each label's contribution to the expected value (Fig. 12);
- **agreement**: the share of the unit's expected rectified value ``E[max(x, 0)]`` carried by the positions
  labelled ``L``, estimated by stratified sampling over the bands::

      A(L) = sum_b count_b * mean_{e in b}(max(v_e, 0) * [label_e = L])  /  sum_b count_b * mean_{e in b}(max(v_e, 0))

  Equivalently ``sum_e w_e max(v_e, 0) [label_e = L] / sum_e w_e max(v_e, 0)`` over the labelled examples (the
  article's "curves and imperfect curves carry 55% of the expected value"). Negative bands add nothing to either
  sum. Bands without a labelled example drop out of both sums; ``coverage`` says which share of the expected value
  (from the histogram) the labelled bands hold, and a warning names the gap when it is below :data:`MIN_COVERAGE`.
  The estimate assumes the labelled examples of a band are a uniform sample of it (label the band samples in
  their order, not chosen by eye). Only labels of sampled band examples count: their weights are known.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import CnnscopeError
from .results import DatasetStats, Example

#: bands the positive range is cut into when none are given
DEFAULT_BANDS = 10
#: labels the viewer suggests (the article's four and "edge"; any text is accepted)
SUGGESTED_LABELS = ("curve", "imperfect curve", "edge", "unrelated", "opposing curve")
#: below this share of the expected value in labelled bands, :func:`label_report` warns
MIN_COVERAGE = 0.95


class LabelDataError(CnnscopeError, ValueError):
    """Labelled examples or bands that cannot give a report (no bands, no labelled examples, bad records)."""


@dataclass
class ActivationBand:
    """One activation band ``[low, high)`` of a unit with its sampled examples.

    Attributes:
        index: 0 for the lowest band.
        low, high: the band's value range (the last band's ``high`` is just above the unit's maximum).
        count: dataset positions with a value in the band (from the histogram; bins cut by a band edge are split in
            proportion to the overlap, so it is exact at bin edges and within one bin otherwise).
        contribution: the band's share of the unit's expected rectified value ``E[max(x, 0)]`` (histogram).
        examples: uniform random positions of the band (:class:`~.results.Example`, in sampling order).
    """

    index: int
    low: float
    high: float
    count: float
    contribution: float = 0.0
    examples: list[Example] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": self.index, "low": self.low, "high": self.high, "count": self.count,
                "contribution": self.contribution, "examples": [e.to_dict() for e in self.examples]}

    @classmethod
    def from_dict(cls, d: Mapping) -> ActivationBand:
        """Read a band written by :meth:`to_dict` (as the atlas's ``bands`` kind stores it)."""
        try:
            examples = [Example(int(e["image_id"]), str(e.get("name", f"image {e['image_id']}")), int(e["y"]),
                                int(e["x"]), float(e["value"]), tuple(int(v) for v in e.get("box", (0, 0, 0, 0))),
                                e.get("label")) for e in d.get("examples", [])]
            return cls(int(d["index"]), float(d["low"]), float(d["high"]), float(d["count"]),
                       float(d.get("contribution", 0.0)), examples)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelDataError(f"a band record lacks or mangles {exc}; pass bands written by ActivationBand."
                                 "to_dict (the atlas's bands kind)") from None


def _edges(stats: DatasetStats, layer: str, channel: int, bands: int | Iterable[float], negative: int
           ) -> np.ndarray:
    ls = stats[layer]
    if isinstance(bands, int):
        if bands < 1 or negative < 0:
            raise LabelDataError(f"bands must be 1 or more and negative_bands 0 or more, got {bands} and {negative}")
        top, bottom = float(ls.maximum[channel]), float(ls.minimum[channel])
        if not top > 0:
            raise LabelDataError(f"unit {channel} of {layer!r} is never positive (largest value {top:.4g}); there are "
                                 "no activation bands above 0 to label")
        edges = np.linspace(0.0, top, bands + 1)
        edges[-1] = math.nextafter(top, math.inf)
        if negative and bottom < 0:
            edges = np.concatenate([np.linspace(bottom, 0.0, negative + 1)[:-1], edges])
        return edges
    edges = np.asarray(list(bands), dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0) or not np.all(np.isfinite(edges)):
        raise LabelDataError(f"band edges must be 2 or more increasing finite numbers, got {edges.tolist()}")
    return edges


def band_counts(stats: DatasetStats, layer: str, channel: int, edges: Iterable[float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Dataset positions and their share of ``E[max(x, 0)]`` per band ``[edges[i], edges[i+1])``, from the histogram.

    Each bin's count is split over the bands in proportion to the overlap of its range (clipped to the unit's
    minimum and maximum) with theirs; a bin's value is its geometric centre (``0`` for the zero bin).

    Returns:
        ``(counts, contributions)``, ``float64 [len(edges) - 1]`` each.
    """
    ls = stats[layer]
    c = ls.check_channel(channel)
    e = np.asarray(list(edges), dtype=np.float64)
    lower, upper = stats.bins.bin_bounds()
    lo_v, hi_v = float(ls.minimum[c]), float(ls.maximum[c])
    lo, hi = np.clip(lower, lo_v, hi_v), np.clip(upper, lo_v, hi_v)
    counts = ls.hist[c].double().numpy()
    width = hi - lo
    a, b = e[:-1, None], e[1:, None]
    overlap = np.clip(np.minimum(b, hi[None]) - np.maximum(a, lo[None]), 0.0, None)
    share = np.where(width[None] > 0, overlap / np.where(width > 0, width, 1.0)[None],
                     ((lo[None] >= a) & (lo[None] < b)).astype(np.float64))  # a point bin: the band holding it
    center = np.where((lower > 0) & np.isfinite(upper), np.sqrt(np.abs(lower * upper)), np.maximum(lo, 0.0))
    band_count = share @ counts
    value = share @ (counts * np.maximum(center, 0.0))
    total = float((counts * np.maximum(center, 0.0)).sum())
    return band_count, value / total if total > 0 else np.zeros_like(value)


def activation_bands(stats: DatasetStats, layer: str, channel: int, *, bands: int | Iterable[float] = DEFAULT_BANDS,
                     negative_bands: int = 0, per_band: int | None = 4, seed: int = 0) -> list[ActivationBand]:
    """Cut a unit's values into activation bands and sample examples of each to label.

    A band's examples are the statistics' uniform band samples with a value in the band
    (:meth:`~.results.DatasetStats.band_examples`). The sampling bands are octaves, so a narrow band high in the
    tail may hold fewer samples than ``per_band``; when the top-k (bottom-k) examples hold every position of the
    band (the k-th largest value is below the band, the k-th smallest above it, or fewer than k positions were
    seen), its examples are drawn uniformly from those instead (a random subset, ``seed``), which is again a uniform
    sample of the band.

    Args:
        stats: a statistics pass with band samples (``collect_statistics(..., band_samples=m)``) and, for the tail,
            a top-k pool (``k``).
        layer, channel: the unit.
        bands: how many equal bands between 0 and the unit's maximum, or the band edges themselves (ascending).
        negative_bands: with ``bands`` a number, also this many equal bands between the unit's minimum and 0 (the
            article labels the negative side too: "opposing curves"; none when the unit is never negative). Their
            values add nothing to the expected rectified value.
        per_band: examples per band (``None``: every sample the statistics kept).
        seed: seed of the draw from the top-k pool.

    Returns:
        :class:`ActivationBand` records, lowest first.

    Raises:
        LabelDataError: the unit is never positive (with ``bands`` a number), or bad edges.
    """
    c = stats[layer].check_channel(channel)
    edges = _edges(stats, layer, c, bands, negative_bands)
    counts, contrib = band_counts(stats, layer, c, edges)
    top, bottom = stats.examples(layer, c, "top"), stats.examples(layer, c, "bottom")
    above = top[-1].value if len(top) >= stats.k else -math.inf  # every position above it is in top
    below = bottom[-1].value if len(bottom) >= stats.bottom_k else math.inf  # every position below it in bottom
    out = []
    for i in range(len(edges) - 1):
        a, b = float(edges[i]), float(edges[i + 1])
        chosen = stats.band_examples(layer, c, a, b, per_band)
        pool = top if a > above else bottom if b <= below else None
        if (per_band is None or len(chosen) < per_band) and pool is not None:
            inside = [ex for ex in pool if a <= ex.value < b]
            rng = np.random.default_rng([seed, c, i])
            picked = rng.permutation(len(inside))[:per_band] if inside else []
            if len(picked) > len(chosen):
                chosen = [inside[j] for j in picked]
        out.append(ActivationBand(i, a, b, float(counts[i]), float(contrib[i]), chosen))
    return out


@dataclass
class LabelledExample:
    """A sampled example with its human label: ``band`` is the index of the band it was sampled from and
    ``weight`` the dataset positions it stands for (``count_b / n_b``)."""

    image_id: int
    y: int
    x: int
    value: float
    label: str
    band: int
    weight: float
    name: str = ""

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "name": self.name, "y": self.y, "x": self.x, "value": self.value,
                "label": self.label, "band": self.band, "weight": self.weight}


@dataclass
class LabelReport:
    """Label composition per band, value distribution per label and agreement of one unit (numbers ``float``).

    Attributes:
        labels: the labels in order of their agreement (largest first).
        bands: the bands (with their examples).
        composition: ``[n_bands][n_labels]`` labelled examples per band and label; fractions: the same divided by
            each band's labelled examples (a band without any: zeros).
        hist_edges: edges of the value histograms; hist_counts: ``{label: examples per bin}``; hist_weighted:
            ``{label: estimated dataset positions per bin}`` (each example counted ``weight`` times, the article's
            Fig. 11); hist_value: ``{label: estimated sum of rectified values per bin}`` (``weight * max(v, 0)``, the
            contribution to the expected value, Fig. 12).
        agreement: ``{label: share of the expected value}`` (sums to 1 over the labels); value_total: the
            estimated sum of the rectified values over the dataset positions of the labelled bands
            (``sum_e w_e max(v_e, 0)``; divided by the dataset's positions it estimates their part of ``E[max(x, 0)]``).
        coverage: share of the unit's expected value (histogram) in bands with at least one labelled example.
        examples: the labelled examples that matched a band sample; unmatched: labels given to positions that are
            not among the bands' samples (left out: their weights are unknown).
    """

    layer: str
    unit: int
    labels: list[str]
    bands: list[ActivationBand]
    composition: list[list[int]]
    fractions: list[list[float]]
    hist_edges: list[float]
    hist_counts: dict[str, list[int]]
    hist_weighted: dict[str, list[float]]
    hist_value: dict[str, list[float]]
    agreement: dict[str, float]
    value_total: float
    coverage: float
    examples: list[LabelledExample]
    unmatched: int = 0

    def to_dict(self) -> dict:
        return {"layer": self.layer, "unit": self.unit, "labels": self.labels, "agreement": self.agreement,
                "value_total": self.value_total, "coverage": self.coverage, "unmatched": self.unmatched,
                "bands": [{"index": b.index, "low": b.low, "high": b.high, "count": b.count,
                           "contribution": b.contribution, "labelled": sum(row), "composition": dict(zip(self.labels,
                                                                                                           row)),
                           "fractions": dict(zip(self.labels, frac))}
                          for b, row, frac in zip(self.bands, self.composition, self.fractions)],
                "histograms": {"edges": self.hist_edges, "counts": self.hist_counts, "weighted": self.hist_weighted,
                               "value": self.hist_value},
                "examples": [e.to_dict() for e in self.examples]}


def _key(image_id: object, y: object, x: object) -> tuple[int, int, int]:
    return int(image_id), int(y), int(x)  # type: ignore[call-overload]


def label_report(bands: list[ActivationBand], labels: Mapping[tuple[int, int, int], str] | Iterable[Mapping], *,
                 layer: str = "", unit: int = 0, bins: int = 20) -> LabelReport:
    """The composition, distributions and agreement of a unit's labelled band samples (see the module docstring).

    Args:
        bands: the unit's bands (:func:`activation_bands`, or :meth:`ActivationBand.from_dict` of the atlas's
            ``bands`` kind).
        labels: ``{(image_id, y, x): label}``, or records with ``image_id``, ``y``, ``x`` and ``label`` (as
            :meth:`cnnscope.web.labels.LabelStore.example_labels` returns them); empty labels are ignored.
        layer, unit: named in the report.
        bins: bins of the value histograms between the lowest and the highest band edge.

    Raises:
        LabelDataError: no bands, or no label matches a band sample.
    """
    if not bands:
        raise LabelDataError("no activation bands to report on; build the atlas with the bands kind or pass "
                             "activation_bands(stats, layer, unit)")
    if isinstance(labels, Mapping):
        given = {_key(*k): str(v) for k, v in labels.items() if str(v).strip()}
    else:
        try:
            given = {_key(r["image_id"], r["y"], r["x"]): str(r["label"]) for r in labels if str(r["label"]).strip()}
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelDataError(f"a label record lacks or mangles {exc}; each needs image_id, y, x and label") \
                from None
    picked: list[tuple[ActivationBand, Example, str]] = []
    seen: set[tuple[int, int, int]] = set()
    for b in bands:
        for ex in b.examples:
            k = (ex.image_id, ex.y, ex.x)
            if k in given and k not in seen:
                seen.add(k)
                picked.append((b, ex, given[k]))
    if not given:
        raise LabelDataError(f"no example of {layer}:{unit} is labelled; label the examples of its activation bands "
                             "(the viewer's annotate mode, or `cnnscope labels import FILE.csv`)")
    if not picked:
        raise LabelDataError(f"none of the {len(given)} labels of {layer}:{unit} is on a sampled band example; "
                             "label the examples of the unit's activation bands")
    n_in = {b.index: 0 for b in bands}
    for b, _, _ in picked:
        n_in[b.index] += 1
    examples = [LabelledExample(ex.image_id, ex.y, ex.x, ex.value, lab, b.index, b.count / n_in[b.index], ex.name)
                for b, ex, lab in picked]
    weighted_value: dict[str, float] = {}
    for e in examples:
        weighted_value[e.label] = weighted_value.get(e.label, 0.0) + e.weight * max(e.value, 0.0)
    total = sum(weighted_value.values())
    names = sorted(weighted_value, key=lambda lab: (-weighted_value[lab], lab))
    agreement = {lab: weighted_value[lab] / total if total > 0 else 0.0 for lab in names}
    composition = [[sum(1 for e in examples if e.band == b.index and e.label == lab) for lab in names] for b in bands]
    fractions = [[n / sum(row) if sum(row) else 0.0 for n in row] for row in composition]
    edges = np.linspace(min(b.low for b in bands), max(b.high for b in bands), max(int(bins), 1) + 1)
    hist_counts, hist_weighted, hist_value = {}, {}, {}
    for lab in names:
        vals = np.array([e.value for e in examples if e.label == lab])
        w = np.array([e.weight for e in examples if e.label == lab])
        hist_counts[lab] = np.histogram(vals, edges)[0].astype(int).tolist()
        hist_weighted[lab] = np.histogram(vals, edges, weights=w)[0].tolist()
        hist_value[lab] = np.histogram(vals, edges, weights=w * np.maximum(vals, 0.0))[0].tolist()
    labelled_bands = [b for b in bands if n_in[b.index]]
    # each band's contribution is already its share of the unit's whole expected value: bands that leave part of
    # the range out lower the coverage too
    coverage = min(1.0, sum(b.contribution for b in labelled_bands))
    if coverage < MIN_COVERAGE:
        missing = [b.index for b in bands if not n_in[b.index] and b.contribution > 0]
        warnings.warn(f"{layer}:{unit}: the labelled bands hold {coverage:.0%} of the unit's expected value; bands "
                      f"{missing} have no labelled example, so the agreement speaks for the rest only", stacklevel=2)
    return LabelReport(layer=layer, unit=int(unit), labels=names, bands=bands, composition=composition,
                       fractions=fractions, hist_edges=edges.tolist(), hist_counts=hist_counts,
                       hist_weighted=hist_weighted, hist_value=hist_value, agreement=agreement,
                       value_total=total, coverage=coverage,
                       examples=examples, unmatched=len(given) - len(seen))
