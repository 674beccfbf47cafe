"""Response heatmaps (orientation x radius/curvature) and radial tuning curves of units to synthetic stimuli.

Cammarata et al., *Curve Detectors* (Distill 2020): every stimulus of an orientation x radius grid is drawn
centred on the unit's receptive field and the unit's activation is recorded; the article plots the heatmap in
standard deviations above the unit's mean activation over the dataset, and the *radial tuning curve* (a polar
plot of the positive response against orientation, taking the strongest response over radius).

The forward passes run on the model's device; a map is an aggregate over a sweep, so its tensors are on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from .curves import grid as stimulus_grid
from .curves import stimulus_class
from .responses import draw_and_read, stimulus_size, zscore

REDUCTIONS = ("max", "mean")


def default_orientations(step: float = 10.0, period: float = 360.0) -> torch.Tensor:
    """Orientations ``0, step, ...`` below ``period`` degrees (``float64``)."""
    if not 0 < step <= period:
        raise CnnscopeError(f"orientation step must be in (0, {period}], got {step}")
    return torch.arange(0.0, period - 1e-9, step, dtype=torch.float64)


def default_levels(kind: str, size: tuple[int, int], n: int = 8) -> torch.Tensor:
    """Default values of a kind's sweep parameter for images of ``size`` (pixels, geometric spacing, ``float64``).

    Curves: radius from ``max(2, min(size) / 56)`` to ``min(size) / 3.5`` (4 to 64 px at 224). Angles (arm) and lines
    (length): ``min(size) / 16`` to ``min(size) / 3``.
    """
    s = float(min(size))
    lo, hi = (s / 56, s / 3.5) if stimulus_class(kind).sweep_param == "radius" else (s / 16, s / 3)
    return torch.logspace(math.log10(max(lo, 2.0)), math.log10(max(hi, 4.0)), n, dtype=torch.float64)


def _axis(values: Sequence[float] | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).cpu()
    if t.ndim != 1 or not len(t):
        raise CnnscopeError(f"{what} must be a non-empty 1-D sequence of numbers")
    return t


@dataclass
class TuningMap:
    """Responses of channels to an orientation x parameter grid of stimuli (``float64`` CPU tensors).

    Attributes:
        layer: the layer name.
        kind: stimulus kind (``"curve"``, ``"angle"``, ``"line"``, ...).
        param: the swept parameter besides orientation (``"radius"`` for curves).
        channels: channel indices, ``int64 [U]``.
        orientations: degrees, ``[O]``.
        levels: values of ``param``, ``[P]``.
        raw: activations, ``[U, P, O]``.
        mean, std: the dataset statistics of each channel (``[U]``) when given, else ``None``.
        fixed: the other stimulus parameters (width, span, colours, ...).
        period: orientation period of the kind (360 for curves and angles, 180 for lines).
        pre_activation: whether the values are an activation module's inputs.
    """

    layer: str
    kind: str
    param: str
    channels: torch.Tensor
    orientations: torch.Tensor
    levels: torch.Tensor
    raw: torch.Tensor
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    fixed: dict = field(default_factory=dict)
    period: float = 360.0
    pre_activation: bool = False

    @property
    def in_std(self) -> bool:
        """Whether :attr:`values` are in standard deviations above the dataset mean."""
        return self.mean is not None

    @property
    def values(self) -> torch.Tensor:
        """``[U, P, O]``: z-scores ``(raw - mean) / std`` when dataset statistics were given, else raw."""
        if self.mean is None or self.std is None:
            return self.raw
        std = torch.where(self.std > 0, self.std, float("nan"))  # channels constant over the dataset: NaN
        return (self.raw - self.mean[:, None, None]) / std[:, None, None]

    def index(self, channel: int) -> int:
        """Row of ``channel`` in :attr:`channels`."""
        hits = torch.nonzero(self.channels == channel).flatten()
        if not len(hits):
            raise CnnscopeError(f"channel {channel} is not in this tuning map (channels: {self.channels.tolist()})")
        return int(hits[0])

    def channel_map(self, channel: int) -> torch.Tensor:
        """One channel's heatmap ``[P, O]``."""
        return self.values[self.index(channel)]

    def radial(self, reduce: str = "max", positive: bool = True) -> torch.Tensor:
        """Radial tuning curves ``[U, O]``: the response per orientation, reduced over the swept parameter.

        Args:
            reduce: ``"max"`` (the article's radial tuning curve) or ``"mean"``.
            positive: keep only the positive part (what the polar plots show).
        """
        return radial_tuning(self.values, reduce=reduce, positive=positive)

    def preferred(self) -> dict[str, torch.Tensor]:
        """Per channel: ``orientation`` and ``level`` of the strongest response, and that ``value`` (``[U]`` each)."""
        v = torch.nan_to_num(self.values, nan=-torch.inf).reshape(len(self.channels), -1)
        value, flat = v.max(dim=1)
        p, o = flat // len(self.orientations), flat % len(self.orientations)
        return {"orientation": self.orientations[o], "level": self.levels[p], "value": value}

    def to_dict(self) -> dict:
        """JSON-ready numbers (``values`` as nested lists ``[U][P][O]``)."""
        return {"layer": self.layer, "kind": self.kind, "param": self.param, "channels": self.channels.tolist(),
                "orientations": self.orientations.tolist(), "levels": self.levels.tolist(),
                "in_std": self.in_std, "pre_activation": self.pre_activation, "values": self.values.tolist(),
                "raw": self.raw.tolist(), "mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist(), "fixed": self.fixed, "period": self.period}


def radial_tuning(values: torch.Tensor, *, reduce: str = "max", positive: bool = True) -> torch.Tensor:
    """Reduce ``[..., P, O]`` heatmaps over ``P`` (max or mean), optionally keeping the positive part.

    Shape:
        - values: ``[U, P, O]`` (or ``[P, O]``)
        - Output: ``[U, O]`` (or ``[O]``)
    """
    if reduce not in REDUCTIONS:
        raise CnnscopeError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    v = torch.as_tensor(values)
    out = v.amax(dim=-2) if reduce == "max" else v.mean(dim=-2)
    return out.clamp(min=0.0) if positive else out


def tuning_map(model: ModelLike, layer: str, *, channels: str | int | Sequence[int] | None = None,
               kind: str = "curve", orientations: Sequence[float] | torch.Tensor | None = None,
               levels: Sequence[float] | torch.Tensor | None = None, param: str | None = None,
               mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | torch.Tensor | None = None,
               size: int | tuple[int, int] | None = None, supersample: int = 3,
               offset: tuple[float, float] = (0.0, 0.0), position: tuple[int, int] | str | None = "center",
               pre_activation: bool = False, batch_size: int | None = None, progress: bool = False,
               **stimulus: object) -> TuningMap:
    """Heatmaps of channels' responses to stimuli over orientation x a swept parameter (radius for curves).

    All channels of the layer are read from the same forward passes, so asking for many costs nothing more.
    The model runs in temporary eval mode; it is not modified.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        layer: dotted layer name.
        channels: channel selection (:func:`cnnscope.parse_channels`; all channels when ``None``).
        kind: stimulus kind, a name in :data:`~cnnscope.stimuli.curves.STIMULI`.
        orientations: degrees (default: every 10 degrees over the kind's period).
        levels: values of ``param`` (default: :func:`default_levels`).
        param: swept parameter (default: the kind's, e.g. ``"radius"``).
        mean, std: per-channel dataset statistics of the layer (one value per channel, read the same way:
            ``pre_activation`` alike); when given the heatmap is in standard deviations above the dataset mean, as
            in the article.
        size: stimulus image size (default: the model's input size).
        supersample, offset: drawing options of :func:`~cnnscope.stimuli.curves.draw`.
        position: the neuron read: ``"center"`` (the centre of the layer's map, where the stimuli are drawn),
            ``(row, col)``, ``"max"`` or ``None`` (the channel's mean), as :class:`cnnscope.Unit`.
        pre_activation: read pre-activation values (``layer`` must be an activation module).
        batch_size: stimuli per forward pass (``None``: a default for the model's device).
        progress: show a progress bar.
        **stimulus: fixed stimulus parameters (``width``, ``span``, ``filled``, ``color``, ...).

    Returns:
        A :class:`TuningMap` with ``raw`` of shape ``[U, P, O]``.
    """
    m = as_model(model)
    cls = stimulus_class(kind)
    hw = stimulus_size(m, size)
    param = param or cls.sweep_param
    orient = _axis(default_orientations(period=cls.period) if orientations is None else orientations, "orientations")
    lev = _axis(default_levels(kind, hw) if levels is None else levels, "levels")
    stims = stimulus_grid(kind, orient.tolist(), lev.tolist(), param=param, **stimulus)
    resp, chosen = draw_and_read(m, stims, layer, channels=channels, size=hw, supersample=supersample,
                                 offset=offset, position=position, pre_activation=pre_activation,
                                 batch_size=batch_size, progress=progress)
    raw = resp.double().cpu().reshape(len(lev), len(orient), len(chosen)).permute(2, 0, 1).contiguous()
    _, mu, sd = zscore(raw, chosen, mean, std)
    fixed = {k: v for k, v in stims[0].to_dict().items() if k not in ("orientation", param, "kind")}
    return TuningMap(layer=layer, kind=kind, param=param, channels=torch.as_tensor(chosen, dtype=torch.int64),
                     orientations=orient, levels=lev, raw=raw, mean=mu, std=sd, fixed=fixed,
                     period=float(cls.period), pre_activation=pre_activation)
