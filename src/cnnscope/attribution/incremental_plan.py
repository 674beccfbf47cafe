"""Planning incremental occlusion: which split layers to chain, and the crop of every window at each stage.

See :mod:`.incremental` for the method. A plan is a chain of block boundaries ``L1 -> L2 -> ...``; for each stage and
each window row/column an :class:`AxisCut` says which positions of the stage's layer the window changes and which
crop of the stage's source computes them. Chains are chosen by an estimated cost from measured layer times
(:func:`~cnnscope.capture.layer_times`) and receptive fields measured with NaN probes, and cached per model.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..capture import Capture, layer_times
from ..capture.receptive_field import receptive_fields
from ..errors import CnnscopeError

#: Plans tried per call (cheapest first) before falling back to full forwards (a plan with a failed stage rules out
#: every other plan with that stage).
MAX_TRIES = 3
#: A plan is used only when its estimated cost is at most this share of a full forward.
MAX_COST = 0.85
#: Layers after this share of the forward's time are not considered (their receptive fields cost probes).
MAX_SHARE = 0.75
#: Most split layers in one plan (stages); each further stage must lower the estimated cost by :data:`STAGE_GAIN`.
MAX_STAGES = 3
#: Share of a full forward a further stage must save to be worth its extra pass, crops and pastes (measured on
#: EfficientNet-Lite0 on one CPU core: a stage saving ~5% of a forward did not pay for itself).
STAGE_GAIN = 0.06
#: Timed forwards of the split planning (after one warm-up).
TIMING_RUNS = 2
#: Relative tolerance of the clean-image checks.
CHECK_RTOL = 1e-4


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class IncrementalUnavailable(CnnscopeError):
    """The model or the options do not allow incremental occlusion (the caller falls back to full forwards).

    ``pair`` is the ``(source, layer)`` stage that failed a check, when one did (``source`` ``None`` is the input).
    """

    def __init__(self, message: str, pair: tuple[str | None, str] | None = None) -> None:
        super().__init__(message)
        self.pair = pair


@dataclass(frozen=True)
class AxisCut:
    """Geometry of one window start along one axis for one stage: changed positions ``[r0, r1)`` of the stage's
    layer and the crop ``[c0, c1)`` of its source (the input for the first stage, the previous stage's layer
    after) that computes them; ``c0`` is a multiple of ``jump``, the layer's stride in source positions."""

    start: int
    stop: int
    r0: int
    r1: int
    c0: int
    c1: int
    jump: int

    @property
    def local(self) -> tuple[int, int, int]:
        """``(crop length, first changed position in the crop's output, number of changed positions)``."""
        return self.c1 - self.c0, self.r0 - self.c0 // self.jump, self.r1 - self.r0


@dataclass
class Stage:
    """One split layer of a plan: the cut of every window row and column, in the coordinates of its source."""

    source: str | None
    layer: str
    rows: list[AxisCut]
    cols: list[AxisCut]
    share: float
    area: float

    @property
    def pair(self) -> tuple[str | None, str]:
        return self.source, self.layer

    @property
    def mean_crop(self) -> list[float]:
        return [round(float(np.mean([c.c1 - c.c0 for c in cuts])), 1) for cuts in (self.rows, self.cols)]


@dataclass
class Plan:
    """Split layers in forward order; the first stage's source is the input, the suffix runs from the last."""

    stages: list[Stage]
    cost: float
    candidates: dict[str, float] = field(default_factory=dict)
    #: ``id(module) -> module_state(module)`` of the last state of each model whose crops passed every geometry's
    #: check (one entry per model, so a training loop does not grow it).
    verified: dict = field(default_factory=dict, repr=False)

    @property
    def layer(self) -> str:
        """The layer the suffix starts from."""
        return self.stages[-1].layer

    def summary(self) -> dict:
        first = self.stages[0]
        return {"used": True, "layer": first.layer, "layers": [st.layer for st in self.stages],
                "prefix_share": round(first.share, 4), "estimated_cost": round(self.cost, 4),
                "mean_crop": first.mean_crop, "stage_crops": [st.mean_crop for st in self.stages],
                "candidates": {k: round(v, 4) for k, v in self.candidates.items()}}


def split_candidates(module: nn.Module, x: torch.Tensor, batch: int = 4) -> dict[str, float]:
    """Block boundaries with a spatial output and the share of the forward's time spent before each.

    Timed (:func:`~cnnscope.capture.layer_times`) on a batch of ``batch`` images cycled from ``x``, the batch the
    occluded copies will run at: on a CPU the time share of early, high-resolution layers grows with it. Layers that
    run more than once and layers whose output is another candidate's (the same tensor) are left out.
    """
    containers = (nn.Sequential, nn.ModuleList)
    names: dict[nn.Module, str] = {}
    for parent_name, parent in module.named_modules():
        if parent is module or isinstance(parent, containers):
            for child_name, child in parent.named_children():
                names.setdefault(child, f"{parent_name}.{child_name}" if parent_name else child_name)
    times = layer_times(module, x[torch.arange(batch) % x.shape[0]], names.values(), runs=TIMING_RUNS)
    out: dict[str, float] = {}
    outputs: set[int] = set()
    for name, t in sorted(times.items(), key=lambda kv: kv[1].share, reverse=True):  # deepest name of an output
        spatial = t.shape is not None and len(t.shape) == 4 and min(t.shape[-2:]) > 1
        if spatial and t.calls == 1 and t.output not in outputs and 0 < t.share < 1:
            out[name] = t.share
            outputs.add(t.output)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


@dataclass(frozen=True)
class _Axis:
    """Input-pixel extent ``[top, bottom)`` of every position of a layer (or of the input) along one axis."""

    top: np.ndarray
    bottom: np.ndarray

    @classmethod
    def pixels(cls, n: int) -> _Axis:
        return cls(np.arange(n), np.arange(n) + 1)

    @property
    def jump(self) -> int | None:
        """The stride of the positions in input pixels (the most common step of ``top``), ``None`` if irregular."""
        top = self.top
        steps = np.diff(top[top > 0]) if (top > 0).sum() > 1 else np.diff(top)
        if steps.size == 0:
            return 1
        vals, counts = np.unique(steps, return_counts=True)
        j = int(vals[counts.argmax()])
        return j if j >= 1 else None


def _cuts(src: _Axis, dst: _Axis, starts: list[int], window: int, size: int) -> list[AxisCut] | None:
    """Cuts of every window start for the stage ``src -> dst`` (``None`` when the geometry is irregular).

    The source positions a ``dst`` position needs are those whose input extent lies inside its own (a superset of
    its true support, so the crop is never too small); the checks on the clean image confirm the result. All crops
    get one length (the largest, shifted inward at the borders) so the occluded copies batch together.
    """
    ja, jb = src.jump, dst.jump
    if ja is None or jb is None or jb % ja:
        return None
    jump = jb // ja
    inside = (src.top[None, :] >= dst.top[:, None]) & (src.bottom[None, :] <= dst.bottom[:, None])
    if not inside.any(axis=1).all():
        return None
    lo = inside.argmax(axis=1)
    hi = inside.shape[1] - inside[:, ::-1].argmax(axis=1)
    raw = []
    for s in starts:
        e = min(s + window, size)
        hit = np.nonzero((dst.top < e) & (dst.bottom > s))[0]
        if hit.size == 0 or hit[-1] - hit[0] + 1 != hit.size:
            return None
        r0, r1 = int(hit[0]), int(hit[-1]) + 1
        raw.append((s, e, r0, r1, int(lo[r0:r1].min()) // jump * jump, int(hi[r0:r1].max())))
    n = len(src.top)
    length = -(-max(c1 - c0 for *_, c0, c1 in raw) // jump) * jump
    last = max(0, (n - length) // jump * jump)
    cuts = []
    for s, e, r0, r1, c0, c1 in raw:
        c0 = min(c0, last)
        cuts.append(AxisCut(s, e, r0, r1, c0, max(c1, min(c0 + length, n)), jump))
    return cuts


def make_plans(module: nn.Module, x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
               layer: str | Sequence[str] | None = None, batch: int = 4,
               verify: Callable[[Plan], None] | None = None) -> list[Plan]:
    """Split plans worth trying, cheapest first (only the given layer or chain of layers when ``layer`` is set).

    Plans (and the reasons there is none) are cached per module, input size, windows and device type: the first
    call times the forward, probes receptive fields and, with ``verify`` (which raises
    :class:`IncrementalUnavailable` for a plan that fails the clean-image check), keeps only the layers that work as
    a single split before it chains them (~2-4 s for EfficientNet-Lite0 on one CPU core); later calls reuse them.
    The returned list is the cached one: :func:`discard_plans` removes plans with a failed stage.

    Raises:
        IncrementalUnavailable: no candidate layer, or no plan whose estimated cost is below :data:`MAX_COST`.
    """
    cache = _PLANS.setdefault(module, {})
    key = (*_key(x, window, starts, layer), batch)
    if key not in cache:
        try:
            cache[key] = _make_plans(module, x, window, starts, _layers(layer), batch, verify)
        except IncrementalUnavailable as err:
            cache[key] = err
    got = cache[key]
    if isinstance(got, IncrementalUnavailable):
        raise got
    return got


def discard_plans(module: nn.Module, x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
                  layer: str | Sequence[str] | None, pair: tuple[str | None, str], batch: int = 4) -> None:
    """Forget, for later calls, every plan with the stage ``pair`` (it failed the clean-image check)."""
    got = _PLANS.get(module, {}).get((*_key(x, window, starts, layer), batch))
    if isinstance(got, list):
        got[:] = [p for p in got if pair not in [st.pair for st in p.stages]]


def _layers(layer: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if layer is None:
        return None
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    if not layers or not all(isinstance(n, str) and n for n in layers):
        raise IncrementalUnavailable(f"split_layer must be a layer name or a list of them, got {layer!r}")
    return layers


def _key(x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
         layer: str | Sequence[str] | None) -> tuple:
    layer = layer if layer is None or isinstance(layer, str) else tuple(layer)
    return tuple(x.shape[1:]), tuple(window), tuple(starts[0]), tuple(starts[1]), layer, x.device.type


def _make_plans(module: nn.Module, x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
                layers: tuple[str, ...] | None, batch: int, verify: Callable[[Plan], None] | None) -> list[Plan]:
    h, w = x.shape[-2:]
    cands = split_candidates(module, x, batch)
    if layers is not None:
        Capture(module, list(layers))  # an unknown name raises LayerError with close matches
        bad = [n for n in layers if n not in cands]
        if bad:
            raise IncrementalUnavailable(f"split_layer {bad[0]!r} is not a block boundary with a spatial output "
                                         f"(candidates: {', '.join(cands) or 'none'})")
        if [cands[n] for n in layers] != sorted(cands[n] for n in layers) or len(set(layers)) != len(layers):
            raise IncrementalUnavailable(f"split layers {list(layers)} are not in forward order")
        cands = {n: cands[n] for n in layers}
    else:
        cands = {n: s for n, s in cands.items() if s <= MAX_SHARE}
    if not cands:
        raise IncrementalUnavailable("no block boundary with a spatial output to split the model at")
    rfs = receptive_fields(module, list(cands), (h, w))
    axes = {None: (_Axis.pixels(h), _Axis.pixels(w))}
    for name in cands:
        boxes = rfs[name].boxes
        axes[name] = (_Axis(boxes[:, :, 0].min(axis=1), boxes[:, :, 2].max(axis=1)),
                      _Axis(boxes[:, :, 1].min(axis=0), boxes[:, :, 3].max(axis=0)))
    stages: dict[tuple, Stage | None] = {}

    def stage(src: str | None, dst: str) -> Stage | None:
        if (src, dst) not in stages:
            rows = _cuts(axes[src][0], axes[dst][0], starts[0], window[0], h)
            cols = _cuts(axes[src][1], axes[dst][1], starts[1], window[1], w)
            if rows is None or cols is None:
                stages[src, dst] = None
            else:
                area = (np.mean([r.c1 - r.c0 for r in rows]) * np.mean([c.c1 - c.c0 for c in cols])
                        / (len(axes[src][0].top) * len(axes[src][1].top)))
                stages[src, dst] = Stage(src, dst, rows, cols, cands[dst], float(area))
        return stages[src, dst]

    names = list(cands)
    if layers is None and verify is not None:
        names = _working_layers(names, stage, verify)
    chains = [tuple(layers)] if layers is not None else [
        c for k in range(1, MAX_STAGES + 1) for c in itertools.combinations(names, k)]
    plans: list[Plan] = []
    for chain in chains:
        built = [stage(a, b) for a, b in zip((None, *chain[:-1]), chain)]
        if any(st is None for st in built):
            continue
        plans.append(Plan(built, _cost(built)))  # type: ignore[arg-type]
    if not plans:
        raise IncrementalUnavailable("no candidate layer has regular receptive fields")
    if layers is None:  # a further stage must pay for its extra pass
        best: dict[tuple, float] = {}
        for p in plans:
            best[tuple(st.layer for st in p.stages)] = p.cost
        plans = [p for p in plans if len(p.stages) == 1 or p.cost <= min(
            best.get(tuple(st.layer for st in p.stages[:k]), np.inf) for k in range(1, len(p.stages))) - STAGE_GAIN]
    plans.sort(key=lambda p: (p.cost, len(p.stages)))
    costs = {", ".join(st.layer for st in p.stages): p.cost for p in plans[:12]}
    for p in plans:
        p.candidates = costs
    if layers is None:
        top = plans[0]
        plans = [p for p in plans if p.cost <= MAX_COST]
        if not plans:
            raise IncrementalUnavailable(f"no split layer pays off (best {top.layer!r}: estimated {top.cost:.2f} "
                                         "of a full forward)")
    return plans


def _working_layers(names: list[str], stage: Callable, verify: Callable[[Plan], None]) -> list[str]:
    """The layers (of ``names``) whose single-split plan costs at most :data:`MAX_COST` and passes ``verify``.

    Chains are built from these only: a later stage whose source sits inside a residual block (the skip bypasses
    it) fails, and there are many such chains; a layer that works alone rarely fails in a chain, and the per-call
    check still catches it.
    """
    singles = [st for n in names if (st := stage(None, n)) is not None and _cost([st]) <= MAX_COST]
    ok, reasons = set(), []
    for st in sorted(singles, key=lambda st: _cost([st])):
        try:
            verify(Plan([st], _cost([st])))  # the caller checks the interior crops and the spliced forward
        except IncrementalUnavailable as err:
            reasons.append(str(err))
            continue
        ok.add(st.layer)
    if not ok:
        raise IncrementalUnavailable(join_reasons(reasons) or "no split layer pays off")
    return [n for n in names if n in ok]


def join_reasons(reasons: list[str], shown: int = 3) -> str:
    """The first ``shown`` reasons a plan failed, and how many more there were."""
    more = len(reasons) - shown
    return "; ".join(reasons[:shown]) + (f"; and {more} more" if more > 0 else "")


def _cost(stages: list[Stage]) -> float:
    """Estimated share of a full forward: each stage's time share times its crop's share of its source, plus the
    suffix."""
    before = 0.0
    cost = 0.0
    for st in stages:
        cost += (st.share - before) * st.area
        before = st.share
    return float(cost + 1.0 - before)
