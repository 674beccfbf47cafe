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

:func:`classify_units` labels every channel by the shape of ``r(theta)`` instead of dropping what the selectivity
filter rejects (see :data:`UNIT_CLASSES`): a second peak of comparable height makes a *double curve* unit, a weak
second peak about half a period away a *secondary-range echo* (the article's conv2d2 and 3a curves), and a
:class:`~cnnscope.stimuli.combing.Concentric` stimulus that beats the single curve at the unit's preferred
orientation and radius a *concentric* unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch

from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from .tuning import TuningMap, tuning_map

#: the labels of :func:`classify_units`, strongest claim first
UNIT_CLASSES = ("double", "concentric", "echo", "curve", "unselective")


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
        classes: each member's label from :func:`classify_units` (``"curve"``, ``"double"``, ``"echo"``, ...).
    """

    layer: str
    kind: str
    stats: TuningStats
    orientations: torch.Tensor
    radial: torch.Tensor
    period: float = 360.0
    classes: list[str] = field(default_factory=list)

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
                "coverage": self.coverage(), "classes": list(self.classes)}


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
                reduce: str = "max", double: bool = False) -> Family:
    """The ``k`` most strongly orientation-tuned channels of a tuning map, ordered by preferred orientation.

    Args:
        tmap: a tuning map over (ideally) all channels of a layer.
        k: how many channels to keep (all that pass the thresholds when ``None``).
        min_selectivity: drop channels whose vector strength is below this (0..1).
        min_peak: drop channels whose peak positive response is at most this.
        reduce: how radial curves reduce over the swept parameter (``"max"`` or ``"mean"``).
        double: keep double-curve channels (two peaks, so a low vector strength) too, ranked by their depth;
            :attr:`Family.classes` labels every member either way.
    """
    if k is not None and k < 1:
        raise CnnscopeError(f"k must be >= 1 (or None for all), got {k}")
    st = tuning_stats(tmap, reduce=reduce)
    labels = classify_units(tmap, min_selectivity=min_selectivity, reduce=reduce).labels
    is_double = torch.tensor([lab == "double" for lab in labels], dtype=torch.bool)
    passes = st.selectivity >= min_selectivity
    if double:
        passes = passes | is_double
    keep = torch.nonzero(passes & (st.peak > min_peak)).flatten()
    rank = torch.where(is_double, st.depth, st.strength) if double else st.strength
    keep = keep[torch.argsort(-rank[keep], stable=True)][:k]
    keep = keep[torch.argsort(st.preferred[keep], stable=True)]
    radial = torch.nan_to_num(tmap.radial(reduce=reduce, positive=True))[keep]
    return Family(layer=tmap.layer, kind=tmap.kind, stats=st.subset(keep), orientations=tmap.orientations.clone(),
                  radial=radial, period=tmap.period, classes=[labels[i] for i in keep.tolist()])


def discover_family(model: ModelLike, layer: str, *, k: int | None = 8, channels: Sequence[int] | str | None = None,
                    min_selectivity: float = 0.3, min_peak: float = 0.0, reduce: str = "max", double: bool = False,
                    **tuning: object) -> tuple[Family, TuningMap]:
    """Measure the tuning map of every channel of ``layer`` (or ``channels``) and return its orientation family.

    ``**tuning`` goes to :func:`~cnnscope.stimuli.tuning.tuning_map` (``kind``, ``orientations``, ``levels``,
    ``mean``, ``std``, ``size``, ``position``, ``pre_activation``, ``batch_size``, ``progress``, stimulus
    parameters, ...). ``double`` keeps double-curve units (see :func:`find_family`).

    Returns:
        ``(family, tuning_map)``; the map holds every measured channel, the family the selected ones.
    """
    tmap = tuning_map(model, layer, channels=channels, **tuning)  # type: ignore[arg-type]
    return find_family(tmap, k, min_selectivity=min_selectivity, min_peak=min_peak, reduce=reduce,
                       double=double), tmap


@dataclass
class UnitClasses:
    """The class of every channel of a tuning map (CPU tensors ``[U]`` aligned with ``channels``).

    Attributes:
        layer: the layer; channels: ``int64 [U]``.
        labels: one of :data:`UNIT_CLASSES` per channel.
        preferred: orientation of the highest peak of the radial curve (degrees).
        second: orientation of the second peak (``NaN`` when there is none).
        second_ratio: height of the second peak over the first (0 when there is none).
        selectivity: vector strength (as :func:`tuning_stats`).
        concentric_ratio: response to the concentric stimulus over the single curve's, at the preferred
            orientation and radius (``None`` when not measured; ``NaN`` for a channel whose single-curve response
            is not positive).
    """

    layer: str
    channels: torch.Tensor
    labels: list[str]
    preferred: torch.Tensor
    second: torch.Tensor
    second_ratio: torch.Tensor
    selectivity: torch.Tensor
    concentric_ratio: torch.Tensor | None = None

    def of(self, channel: int) -> str:
        """The label of ``channel``."""
        hits = torch.nonzero(self.channels == channel).flatten()
        if not len(hits):
            raise CnnscopeError(f"channel {channel} was not classified (channels: {self.channels.tolist()})")
        return self.labels[int(hits[0])]

    def counts(self) -> dict[str, int]:
        """How many channels carry each label (every label of :data:`UNIT_CLASSES`, zeros included)."""
        return {lab: self.labels.count(lab) for lab in UNIT_CLASSES}

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels.tolist(), "labels": list(self.labels),
                "counts": self.counts(), "preferred": self.preferred.tolist(), "second": self.second.tolist(),
                "second_ratio": self.second_ratio.tolist(), "selectivity": self.selectivity.tolist(),
                "concentric_ratio": None if self.concentric_ratio is None else self.concentric_ratio.tolist()}


def _second_peak(r: list[float], orientations: list[float], period: float, min_separation: float, dip: float
                 ) -> tuple[float, float]:
    """``(orientation, height ratio)`` of the highest local maximum of the circular curve ``r`` at least
    ``min_separation`` degrees from the top, with the response between them falling to at most ``dip`` times its
    height on both sides; ``(nan, 0)`` when none."""
    n = len(r)
    top = max(range(n), key=r.__getitem__)
    if n < 3 or not r[top] > 0:
        return math.nan, 0.0
    best, where = 0.0, math.nan
    for i in range(n):
        here = r[i]
        if i == top or not (here > 0 and here >= r[i - 1] and here >= r[(i + 1) % n]) or here <= best:
            continue
        gap = abs(orientations[i] - orientations[top]) % period
        if min(gap, period - gap) < min_separation:
            continue
        # both ways round the circle from this peak to the top the response must fall well below this peak
        a, b = sorted((i, top))
        if max(min(r[a:b + 1]), min(r[b:] + r[:a + 1])) <= dip * here:
            best, where = here, orientations[i]
    return where, best / r[top]


def classify_units(tmap: TuningMap, *, min_selectivity: float = 0.3, double_ratio: float = 0.5,
                   echo_ratio: float = 0.1, min_separation: float = 60.0, echo_window: float = 45.0,
                   dip: float = 0.5, reduce: str = "max", concentric_ratio: torch.Tensor | None = None,
                   min_concentric: float = 1.5) -> UnitClasses:
    """Label every channel of a tuning map by the shape of its radial tuning curve ``r(theta)``.

    In order (the first that applies):

    * ``"double"``: a second peak at least ``min_separation`` degrees from the highest, the response between
      them falling to at most ``dip`` times its height both ways round, and at least ``double_ratio`` of the
      highest (a unit that detects curves of two orientations);
    * ``"concentric"``: an orientation-selective unit (as ``"curve"``) whose ``concentric_ratio`` (from
      :func:`concentric_ratios`) is at least ``min_concentric``;
    * ``"echo"``: a weaker second peak (``echo_ratio`` to ``double_ratio`` of the highest) within ``echo_window``
      degrees of half a period away (the article's *secondary range echo*);
    * ``"curve"``: vector strength at least ``min_selectivity`` and a positive peak;
    * ``"unselective"``: the rest.

    Args:
        tmap: a tuning map (curves: 360 degree period).
        reduce: how radial curves reduce over the swept parameter (``"max"`` or ``"mean"``).
        concentric_ratio: ``[U]`` ratios aligned with ``tmap.channels``; without them no unit is concentric.
    """
    if not 0 < echo_ratio <= double_ratio <= 1:
        raise CnnscopeError(f"need 0 < echo_ratio <= double_ratio <= 1, got {echo_ratio}, {double_ratio}")
    st = tuning_stats(tmap, reduce=reduce)
    r = torch.nan_to_num(tmap.radial(reduce=reduce, positive=True))
    if concentric_ratio is not None and len(concentric_ratio) != len(r):
        raise CnnscopeError(f"concentric_ratio needs one value per channel ({len(r)}), got {len(concentric_ratio)}")
    labels, second, ratio = [], [], []
    curves, orientations = r.tolist(), tmap.orientations.tolist()
    for u in range(len(r)):
        where, rel = _second_peak(curves[u], orientations, tmap.period, min_separation, dip)
        second.append(where)
        ratio.append(rel)
        gap = abs(where - float(st.preferred[u])) % tmap.period if rel > 0 else math.nan
        near_half = rel > 0 and abs(min(gap, tmap.period - gap) - tmap.period / 2) <= echo_window
        selective = float(st.selectivity[u]) >= min_selectivity and float(st.peak[u]) > 0
        conc = selective and concentric_ratio is not None and float(concentric_ratio[u]) >= min_concentric
        if rel >= double_ratio:
            labels.append("double")
        elif conc:
            labels.append("concentric")
        elif rel >= echo_ratio and near_half:
            labels.append("echo")
        elif selective:
            labels.append("curve")
        else:
            labels.append("unselective")
    return UnitClasses(layer=tmap.layer, channels=tmap.channels.clone(), labels=labels, preferred=st.preferred,
                       second=torch.tensor(second, dtype=torch.float64),
                       second_ratio=torch.tensor(ratio, dtype=torch.float64), selectivity=st.selectivity,
                       concentric_ratio=None if concentric_ratio is None else torch.as_tensor(concentric_ratio))


def concentric_ratios(model: ModelLike, tmap: TuningMap, *, rings: int = 3, gap: float | None = None,
                      size: int | tuple[int, int] | None = None, offset: tuple[float, float] = (0.0, 0.0),
                      position: tuple[int, int] | str | None = "center", batch_size: int | None = None
                      ) -> torch.Tensor:
    """Each channel's response to :class:`~cnnscope.stimuli.combing.Concentric` arcs over its response to the
    single curve, both at the channel's preferred orientation and radius (from ``tmap``, a curve map).

    The concentric stimulus shares the map's fixed parameters (width, span, colours) and its innermost arc is the
    single curve. Responses are read as the map was (``pre_activation``, ``position``); the ratio is of raw
    values, ``NaN`` where the single curve's response is not positive.

    Args:
        model: the model the map was measured on; not modified.
        tmap: a ``kind="curve"`` tuning map.
        rings: arcs of the concentric stimulus; gap: their radius step (default: twice the stroke width).
        size, offset, position, batch_size: as for :func:`~cnnscope.stimuli.tuning.tuning_map` (use the map's).

    Returns:
        ``float64 [U]`` on the CPU, aligned with ``tmap.channels``.
    """
    from .curves import make_stimulus
    from .responses import draw_and_read

    m = as_model(model)
    if tmap.kind != "curve" or tmap.param != "radius":
        raise CnnscopeError(f"concentric ratios need a curve x radius tuning map, got {tmap.kind} x {tmap.param}")
    fixed = {k: v for k, v in tmap.fixed.items() if k in ("width", "span", "color", "background")}
    width = float(fixed.get("width", 3.0))
    best = tmap.preferred()
    stims = []
    for o, lv in zip(best["orientation"].tolist(), best["level"].tolist()):
        stims.append(make_stimulus("curve", **fixed, orientation=o, radius=lv))
        stims.append(make_stimulus("concentric", **fixed, orientation=o, radius=lv, rings=rings,
                                   gap=2 * width if gap is None else gap))
    chans = tmap.channels.tolist()
    resp, _ = draw_and_read(m, stims, tmap.layer, channels=chans, size=size, supersample=3, offset=offset,
                            position=position, pre_activation=tmap.pre_activation, batch_size=batch_size,
                            progress=False)
    resp = resp.double().cpu().reshape(len(chans), 2, len(chans))
    own = torch.arange(len(chans))
    single, conc = resp[own, 0, own], resp[own, 1, own]
    return torch.where(single > 0, conc / single.clamp(min=1e-300), math.nan)
