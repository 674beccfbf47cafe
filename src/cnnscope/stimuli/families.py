"""Automatic discovery of orientation-tuned families (the curve family of *Curve Detectors*) in a layer.

Each channel's radial tuning curve ``r(theta)`` (positive response, strongest over radius) gives

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
from dataclasses import dataclass, fields

import torch

from ..errors import CnnscopeError
from ..models import ModelLike
from .tuning import TuningMap, tuning_map


@dataclass
class TuningStats:
    """Per-channel orientation tuning summary, CPU tensors ``[U]`` aligned with ``channels``."""

    channels: torch.Tensor
    preferred: torch.Tensor
    level: torch.Tensor
    peak: torch.Tensor
    depth: torch.Tensor
    selectivity: torch.Tensor
    strength: torch.Tensor

    def subset(self, index: torch.Tensor) -> TuningStats:
        """The stats of the channels at positions ``index``."""
        return TuningStats(*(getattr(self, f.name)[index] for f in fields(self)))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}


@dataclass
class Family:
    """Orientation-tuned channels of one layer, ordered by preferred orientation.

    Attributes:
        layer: the layer name.
        kind: the stimulus kind the family was found with.
        stats: :class:`TuningStats` of the members (same order as ``channels``).
        orientations: degrees, ``[O]``.
        radial: the members' radial tuning curves, ``[K, O]``.
        period: orientation period (360 for curves).
    """

    layer: str
    kind: str
    stats: TuningStats
    orientations: torch.Tensor
    radial: torch.Tensor
    period: float = 360.0

    @property
    def channels(self) -> list[int]:
        return self.stats.channels.tolist()

    def __len__(self) -> int:
        return len(self.stats.channels)

    def coverage(self, threshold: float = 0.5) -> float:
        """Fraction of orientations where some member responds with at least ``threshold`` of its own peak.

        1.0 means the family tiles every orientation, as the article's curve family does.
        """
        if not len(self):
            return 0.0
        norm = self.radial / self.radial.amax(dim=1, keepdim=True).clamp(min=1e-12)
        return float((norm.amax(dim=0) >= threshold).double().mean())

    def to_dict(self) -> dict:
        return {"layer": self.layer, "kind": self.kind, "period": self.period, **self.stats.to_dict(),
                "orientations": self.orientations.tolist(), "radial": self.radial.tolist(),
                "coverage": self.coverage()}


def tuning_stats(tmap: TuningMap, *, reduce: str = "max") -> TuningStats:
    """Preferred orientation, selectivity, peak and strength of every channel of a tuning map."""
    r = torch.nan_to_num(tmap.radial(reduce=reduce, positive=True))  # [U, O]; NaN (no dataset spread) -> 0
    phase = torch.deg2rad(tmap.orientations) * (360.0 / tmap.period)
    peak, best = r.max(dim=1)
    low = r.amin(dim=1)
    m = r - low[:, None]
    total = m.sum(dim=1)
    vector = torch.hypot((m * torch.cos(phase)).sum(dim=1), (m * torch.sin(phase)).sum(dim=1))
    selectivity = torch.where(total > 0, vector / total.clamp(min=1e-300), 0.0)
    depth = peak - low
    level_index = torch.nan_to_num(tmap.values, nan=-torch.inf).amax(dim=2).argmax(dim=1)  # level of the strongest
    return TuningStats(channels=tmap.channels.clone(), preferred=tmap.orientations[best],
                       level=tmap.levels[level_index], peak=peak, depth=depth, selectivity=selectivity,
                       strength=selectivity * depth)


def find_family(tmap: TuningMap, k: int | None = 8, *, min_selectivity: float = 0.3, min_peak: float = 0.0,
                reduce: str = "max") -> Family:
    """The ``k`` most strongly orientation-tuned channels of a tuning map, ordered by preferred orientation.

    Args:
        tmap: a tuning map over (ideally) all channels of a layer.
        k: how many channels to keep (all that pass the thresholds when ``None``).
        min_selectivity: drop channels whose vector strength is below this (0..1).
        min_peak: drop channels whose peak positive response is at most this.
        reduce: how radial curves reduce over the swept parameter (``"max"`` or ``"mean"``).
    """
    if k is not None and k < 1:
        raise CnnscopeError(f"k must be >= 1 (or None for all), got {k}")
    st = tuning_stats(tmap, reduce=reduce)
    keep = torch.nonzero((st.selectivity >= min_selectivity) & (st.peak > min_peak)).flatten()
    keep = keep[torch.argsort(-st.strength[keep], stable=True)][:k]
    keep = keep[torch.argsort(st.preferred[keep], stable=True)]
    radial = torch.nan_to_num(tmap.radial(reduce=reduce, positive=True))[keep]
    return Family(layer=tmap.layer, kind=tmap.kind, stats=st.subset(keep), orientations=tmap.orientations.clone(),
                  radial=radial, period=tmap.period)


def discover_family(model: ModelLike, layer: str, *, k: int | None = 8, channels: Sequence[int] | str | None = None,
                    min_selectivity: float = 0.3, min_peak: float = 0.0, reduce: str = "max",
                    **tuning: object) -> tuple[Family, TuningMap]:
    """Measure the tuning map of every channel of ``layer`` (or ``channels``) and return its orientation family.

    ``**tuning`` goes to :func:`~cnnscope.stimuli.tuning.tuning_map` (``kind``, ``orientations``, ``levels``,
    ``mean``, ``std``, ``size``, ``position``, ``pre_activation``, ``batch_size``, ``progress``, stimulus
    parameters, ...).

    Returns:
        ``(family, tuning_map)``; the map holds every measured channel, the family the selected ones.
    """
    tmap = tuning_map(model, layer, channels=channels, **tuning)  # type: ignore[arg-type]
    return find_family(tmap, k, min_selectivity=min_selectivity, min_peak=min_peak, reduce=reduce), tmap
