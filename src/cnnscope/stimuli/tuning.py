"""Response heatmaps (orientation x radius/curvature) and radial tuning curves of units to synthetic stimuli.

Cammarata et al., *Curve Detectors* (Distill 2020): every stimulus of an orientation x radius grid is drawn
centred on the unit's receptive field and the unit's activation is recorded; the article plots the heatmap in
standard deviations above the unit's mean activation over the dataset, and the *radial tuning curve* (a polar
plot of the positive response against orientation, taking the strongest response over radius).

The computation runs on the model's device; the results are small arrays returned as numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import CnnscopeError
from .curves import grid as stimulus_grid
from .curves import stimulus_class
from .responses import ModelLike, model_size, stimulus_responses, zscore

REDUCTIONS = ("max", "mean")


def default_orientations(step: float = 10.0, period: float = 360.0) -> np.ndarray:
    """Orientations ``0, step, ...`` below ``period`` degrees."""
    if not 0 < step <= period:
        raise CnnscopeError(f"orientation step must be in (0, {period}], got {step}")
    return np.arange(0.0, period - 1e-9, step)


def default_levels(kind: str, size: tuple[int, int], n: int = 8) -> np.ndarray:
    """Default values of a kind's sweep parameter for images of ``size`` (pixels, geometric spacing).

    Curves: radius from ``max(2, min(size) / 56)`` to ``min(size) / 3.5`` (4 to 64 px at 224). Angles (arm) and lines
    (length): ``min(size) / 16`` to ``min(size) / 3``.
    """
    s = float(min(size))
    lo, hi = (s / 56, s / 3.5) if stimulus_class(kind).sweep_param == "radius" else (s / 16, s / 3)
    return np.geomspace(max(lo, 2.0), max(hi, 4.0), n)


@dataclass
class TuningMap:
    """Responses of units to an orientation x parameter grid of stimuli.

    Attributes:
        layer: the layer name.
        kind: stimulus kind (``"curve"``, ``"angle"``, ``"line"``).
        param: the swept parameter besides orientation (``"radius"`` for curves).
        units: channel indices, ``[U]``.
        orientations: degrees, ``[O]``.
        levels: values of ``param``, ``[P]``.
        raw: activations, ``[U, P, O]``.
        mean, std: the dataset statistics of each unit (``[U]``) when given, else ``None``.
        fixed: the other stimulus parameters (width, span, colours, ...).
        period: orientation period of the kind (360 for curves and angles, 180 for lines).
    """

    layer: str
    kind: str
    param: str
    units: np.ndarray
    orientations: np.ndarray
    levels: np.ndarray
    raw: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    fixed: dict = field(default_factory=dict)
    period: float = 360.0

    @property
    def in_std(self) -> bool:
        """Whether :attr:`values` are in standard deviations above the dataset mean."""
        return self.mean is not None

    @property
    def values(self) -> np.ndarray:
        """``[U, P, O]``: z-scores ``(raw - mean) / std`` when dataset statistics were given, else raw."""
        if self.mean is None or self.std is None:
            return self.raw
        std = np.where(self.std > 0, self.std, np.nan)  # units constant over the dataset: NaN
        return (self.raw - self.mean[:, None, None]) / std[:, None, None]

    def index(self, unit: int) -> int:
        """Row of ``unit`` in :attr:`units`."""
        hits = np.flatnonzero(self.units == unit)
        if not len(hits):
            raise CnnscopeError(f"unit {unit} is not in this tuning map (units: {self.units.tolist()})")
        return int(hits[0])

    def unit_map(self, unit: int) -> np.ndarray:
        """One unit's heatmap ``[P, O]``."""
        return self.values[self.index(unit)]

    def radial(self, reduce: str = "max", positive: bool = True) -> np.ndarray:
        """Radial tuning curves ``[U, O]``: the response per orientation, reduced over the swept parameter.

        Args:
            reduce: ``"max"`` (the article's radial tuning curve) or ``"mean"``.
            positive: keep only the positive part (what the polar plots show).
        """
        return radial_tuning(self.values, reduce=reduce, positive=positive)

    def preferred(self) -> dict[str, np.ndarray]:
        """Per unit: ``orientation`` and ``level`` of the strongest response, and that ``value`` (``[U]`` each)."""
        v = np.nan_to_num(self.values, nan=-np.inf)
        flat = v.reshape(len(self.units), -1).argmax(1)
        p, o = np.unravel_index(flat, v.shape[1:])
        return {"orientation": self.orientations[o], "level": self.levels[p],
                "value": v.reshape(len(self.units), -1)[np.arange(len(self.units)), flat]}

    def to_dict(self) -> dict:
        """JSON-ready numbers (``values`` as nested lists ``[U][P][O]``)."""
        return {"layer": self.layer, "kind": self.kind, "param": self.param, "units": self.units.tolist(),
                "orientations": self.orientations.tolist(), "levels": self.levels.tolist(),
                "in_std": self.in_std, "values": self.values.tolist(), "raw": self.raw.tolist(),
                "mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist(), "fixed": self.fixed, "period": self.period}


def radial_tuning(values: np.ndarray, reduce: str = "max", positive: bool = True) -> np.ndarray:
    """Reduce ``[..., P, O]`` heatmaps over ``P`` (max or mean), optionally keeping the positive part.

    Shape:
        - values: ``[U, P, O]`` (or ``[P, O]``)
        - Output: ``[U, O]`` (or ``[O]``)
    """
    if reduce not in REDUCTIONS:
        raise CnnscopeError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    v = np.asarray(values)
    out = v.max(axis=-2) if reduce == "max" else v.mean(axis=-2)
    return np.maximum(out, 0.0) if positive else out


def tuning_map(model: ModelLike, layer: str, units: Sequence[int] | None = None, *, kind: str = "curve",
               orientations: Sequence[float] | None = None, levels: Sequence[float] | None = None,
               param: str | None = None, mean: Sequence[float] | np.ndarray | None = None,
               std: Sequence[float] | np.ndarray | None = None, size: int | tuple[int, int] | None = None,
               supersample: int = 3, offset: tuple[float, float] = (0.0, 0.0),
               position: tuple[int, int] | None = None, pre_activation: bool = False, batch_size: int = 64,
               progress: bool = False, **stimulus: object) -> TuningMap:
    """Heatmaps of units' responses to stimuli over orientation x a swept parameter (radius for curves).

    All units of the layer are read from the same forward passes, so asking for many units costs nothing more.
    The model runs in temporary eval mode; it is not modified.

    Args:
        model: a ``LoadedModel`` or a bare module (then give ``size``).
        layer: dotted layer name.
        units: channel indices (all channels when ``None``).
        kind: stimulus kind, a key of :data:`~cnnscope.stimuli.curves.STIMULI`.
        orientations: degrees (default: every 10 degrees over the kind's period).
        levels: values of ``param`` (default: :func:`default_levels`).
        param: swept parameter (default: the kind's, e.g. ``"radius"``).
        mean, std: per-channel dataset statistics of the layer (one value per channel); when given the heatmap is
            expressed in standard deviations above the dataset mean, as in the article.
        size: stimulus image size (default: the model's input size).
        supersample, offset: rendering options of :func:`~cnnscope.stimuli.curves.render`.
        position: ``(row, col)`` of the unit in the layer's map (default: the centre).
        pre_activation: read pre-activation values (``layer`` must be an activation module).
        batch_size: stimuli per forward pass (bounds memory).
        progress: show a progress bar.
        **stimulus: fixed stimulus parameters (``width``, ``span``, ``filled``, ``color``, ...).

    Returns:
        A :class:`TuningMap` with ``raw`` of shape ``[U, P, O]``.
    """
    cls = stimulus_class(kind)
    hw = model_size(model, size)
    param = param or cls.sweep_param
    orient = np.asarray(default_orientations(period=cls.period) if orientations is None else orientations, float)
    lev = np.asarray(default_levels(kind, hw) if levels is None else levels, float)
    if orient.ndim != 1 or lev.ndim != 1 or not len(orient) or not len(lev):
        raise CnnscopeError("orientations and levels must be non-empty 1-D sequences of numbers")
    stims = stimulus_grid(kind, orient, lev, param=param, **stimulus)
    resp = stimulus_responses(model, layer, stims, units=units, size=hw, supersample=supersample, offset=offset,
                              position=position, pre_activation=pre_activation, batch_size=batch_size,
                              progress=progress)
    unit_list = list(range(resp.shape[1])) if units is None else [int(u) for u in units]  # validated already
    raw = resp.double().cpu().numpy().reshape(len(lev), len(orient), len(unit_list)).transpose(2, 0, 1)
    _, m, s = zscore(raw, unit_list, mean, std)
    fixed = {k: v for k, v in stims[0].to_dict().items() if k not in ("orientation", param, "kind")}
    return TuningMap(layer=layer, kind=kind, param=param, units=np.asarray(unit_list), orientations=orient,
                     levels=lev, raw=raw, mean=m, std=s, fixed=fixed, period=float(cls.period))
