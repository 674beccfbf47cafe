"""Automatic discovery of orientation-tuned families (the curve family of *Curve Detectors*) in a layer.

Each unit's radial tuning curve ``r(theta)`` (positive response, strongest over radius) gives

* ``peak``: the largest value of ``r`` (in standard deviations above the dataset mean when the map has them) and
  ``depth = peak - min r``, how much the response changes with orientation,
* ``selectivity``: the vector strength of the baseline-free curve ``m = r - min r``,
  ``|sum m(theta) e^{i k theta}| / sum m(theta)`` with ``k = 360 / period`` (1 for curves): a unit that
  responds to one orientation only scores near 1, one with a broad or two-lobed tuning lower, an untuned one 0,
* ``strength = selectivity * depth``, by which units are ranked, and
* ``preferred``: the orientation of the peak, by which the members of a family are ordered, as the article lays
  out the curve family around a circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CnnscopeError
from .responses import ModelLike
from .tuning import TuningMap, tuning_map


@dataclass
class TuningStats:
    """Per-unit orientation tuning summary, arrays ``[U]`` aligned with ``units``."""

    units: np.ndarray
    preferred: np.ndarray
    level: np.ndarray
    peak: np.ndarray
    depth: np.ndarray
    selectivity: np.ndarray
    strength: np.ndarray

    def subset(self, index: np.ndarray) -> TuningStats:
        """The stats of the units at positions ``index``."""
        return TuningStats(*(getattr(self, f)[index] for f in _STAT_FIELDS))

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in _STAT_FIELDS}


_STAT_FIELDS = ("units", "preferred", "level", "peak", "depth", "selectivity", "strength")


@dataclass
class Family:
    """Orientation-tuned units of one layer, ordered by preferred orientation.

    Attributes:
        layer: the layer name.
        kind: the stimulus kind the family was found with.
        stats: :class:`TuningStats` of the members (same order as ``units``).
        orientations: degrees, ``[O]``.
        radial: the members' radial tuning curves, ``[K, O]``.
        period: orientation period (360 for curves).
    """

    layer: str
    kind: str
    stats: TuningStats
    orientations: np.ndarray
    radial: np.ndarray
    period: float = 360.0

    @property
    def units(self) -> list[int]:
        return self.stats.units.tolist()

    def __len__(self) -> int:
        return len(self.stats.units)

    def coverage(self, threshold: float = 0.5) -> float:
        """Fraction of orientations where some member responds with at least ``threshold`` of its own peak.

        1.0 means the family tiles every orientation, as the article's curve family does.
        """
        if not len(self):
            return 0.0
        norm = self.radial / np.maximum(self.radial.max(axis=1, keepdims=True), 1e-12)
        return float((norm.max(axis=0) >= threshold).mean())

    def to_dict(self) -> dict:
        return {"layer": self.layer, "kind": self.kind, "period": self.period, **self.stats.to_dict(),
                "orientations": self.orientations.tolist(), "radial": self.radial.tolist(),
                "coverage": self.coverage()}


def tuning_stats(tmap: TuningMap, reduce: str = "max") -> TuningStats:
    """Preferred orientation, selectivity, peak and strength of every unit of a tuning map."""
    r = np.nan_to_num(tmap.radial(reduce=reduce, positive=True))  # [U, O]; NaN (no dataset spread) -> 0
    harmonic = 360.0 / tmap.period
    phase = np.exp(1j * np.radians(tmap.orientations) * harmonic)
    best = r.argmax(axis=1)
    peak = r[np.arange(len(r)), best]
    m = r - r.min(axis=1, keepdims=True)
    total = m.sum(axis=1)
    vector = np.abs((m * phase).sum(axis=1))
    selectivity = np.where(total > 0, vector / np.maximum(total, 1e-300), 0.0)
    depth = peak - r.min(axis=1)
    level_index = np.nan_to_num(tmap.values, nan=-np.inf).max(axis=2).argmax(axis=1)  # level of the strongest
    return TuningStats(units=tmap.units.copy(), preferred=tmap.orientations[best], level=tmap.levels[level_index],
                       peak=peak, depth=depth, selectivity=selectivity, strength=selectivity * depth)


def find_family(tmap: TuningMap, k: int | None = 8, *, min_selectivity: float = 0.3, min_peak: float = 0.0,
                reduce: str = "max") -> Family:
    """The ``k`` most strongly orientation-tuned units of a tuning map, ordered by preferred orientation.

    Args:
        tmap: a tuning map over (ideally) all channels of a layer.
        k: how many units to keep (all that pass the thresholds when ``None``).
        min_selectivity: drop units whose vector strength is below this (0..1).
        min_peak: drop units whose peak positive response is at most this.
        reduce: how radial curves reduce over the swept parameter (``"max"`` or ``"mean"``).
    """
    if k is not None and k < 1:
        raise CnnscopeError(f"k must be >= 1 (or None for all), got {k}")
    st = tuning_stats(tmap, reduce)
    keep = np.flatnonzero((st.selectivity >= min_selectivity) & (st.peak > min_peak))
    keep = keep[np.argsort(-st.strength[keep], kind="stable")][:k]
    keep = keep[np.argsort(st.preferred[keep], kind="stable")]
    sub = st.subset(keep)
    radial = np.nan_to_num(tmap.radial(reduce=reduce, positive=True))[keep]
    return Family(layer=tmap.layer, kind=tmap.kind, stats=sub, orientations=tmap.orientations.copy(),
                  radial=radial, period=tmap.period)


def discover_family(model: ModelLike, layer: str, k: int | None = 8, *, units: Sequence[int] | None = None,
                    min_selectivity: float = 0.3, min_peak: float = 0.0, reduce: str = "max",
                    **tuning: object) -> tuple[Family, TuningMap]:
    """Measure the tuning map of every unit of ``layer`` (or ``units``) and return its orientation family.

    ``**tuning`` goes to :func:`~cnnscope.stimuli.tuning.tuning_map` (``kind``, ``orientations``, ``levels``,
    ``mean``, ``std``, ``size``, ``batch_size``, ``progress``, stimulus parameters, ...).

    Returns:
        ``(family, tuning_map)``; the map holds every measured unit, the family the selected ones.
    """
    tmap = tuning_map(model, layer, units, **tuning)  # type: ignore[arg-type]
    return find_family(tmap, k, min_selectivity=min_selectivity, min_peak=min_peak, reduce=reduce), tmap
