"""Planning incremental inference: which split layers to chain, and the crop of every window at each stage.

A plan is a chain of block boundaries ``L1 -> L2 -> ...`` (see :mod:`.incremental`); for each stage and each window
row/column an :class:`~.geometry.AxisCut` says which positions of the stage's layer the window changes and which crop
of the stage's source computes them. The chain is chosen by an estimated cost from measured layer times
(:func:`~cnnscope.capture.layer_times`) and receptive fields measured with NaN probes
(:func:`~cnnscope.capture.receptive_field.receptive_fields`); :mod:`.plan_cache` remembers plans in memory and on
disk.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..capture import Capture, LayerTime, layer_times
from ..capture.receptive_field import receptive_fields
from ..errors import CnnscopeError
from .geometry import Axis, AxisCut, Link, probe_link, stage_cuts

#: A plan is used only when its estimated cost is at most this share of a full forward.
MAX_COST = 0.85
#: Exact plans: layers after this share of the forward's time are not considered (a window changes nearly all of
#: their positions, and their receptive fields cost probes).
MAX_SHARE = 0.75
#: Share of a full forward one stage costs besides its layers (its hook, crops and pastes), so a stage that saves
#: less is not added.
STAGE_OVERHEAD = 0.004
#: Links between candidate layers whose source has at most this many positions along each axis are measured with
#: NaN probes between the two layers (cheap at low resolution, where receptive fields cover the whole image).
PROBE_SIZE = 32
#: Timed forwards of the split planning (after one warm-up), and their largest batch (shares barely change above it).
TIMING_RUNS = 2
TIMING_BATCH = 8
#: Candidate layers kept for planning, the outermost block boundaries first (a model with a hundred nested
#: boundaries, e.g. ConvNeXt's Sequential blocks, would otherwise cost a receptive-field probe for each).
MAX_CANDIDATES = 32
#: Relative tolerance of the clean-image checks.
CHECK_RTOL = 1e-4
#: Plans tried per call before falling back to full forwards (a failed stage is left out of the next plan).
MAX_TRIES = 3

Windows = tuple[list[tuple[int, int]], list[tuple[int, int]]]

_GEOMETRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class IncrementalUnavailable(CnnscopeError):
    """The model or the options do not allow incremental inference (the caller falls back to full forwards).

    ``pair`` is the ``(source, layer)`` stage that failed a check, when one did (``source`` ``None`` is the input).
    """

    def __init__(self, message: str, pair: tuple[str | None, str] | None = None) -> None:
        super().__init__(message)
        self.pair = pair


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
    """Split layers in forward order; the first stage's source is the input, the rest of the model runs from the
    last. ``tau`` is the projective-field threshold of an approximate plan (``None``: exact)."""

    stages: list[Stage]
    cost: float
    windows: Windows
    tau: float | None = None
    candidates: dict[str, float] = field(default_factory=dict)
    #: where the plan came from: ``"planned"`` in this call, ``"memory"`` or ``"disk"`` (:mod:`.plan_cache`)
    origin: str = "planned"
    #: ``id(module) -> module_state(module)`` of the last state of each model whose crops passed every geometry's
    #: check (one entry per model, so a training loop does not grow it).
    verified: dict = field(default_factory=dict, repr=False)

    @property
    def layer(self) -> str:
        """The layer the rest of the model runs from."""
        return self.stages[-1].layer

    @property
    def layers(self) -> list[str]:
        return [st.layer for st in self.stages]

    def summary(self) -> dict:
        first = self.stages[0]
        return {"used": True, "approximate": self.tau, "layer": first.layer, "layers": self.layers,
                "prefix_share": round(first.share, 4), "estimated_cost": round(self.cost, 4),
                "mean_crop": first.mean_crop, "stage_crops": [st.mean_crop for st in self.stages],
                "candidates": {k: round(v, 4) for k, v in self.candidates.items()}, "plan": self.origin}


def split_candidates(module: nn.Module, x: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """Block boundaries with a spatial output and the share of the forward's time spent before each.

    Block boundaries are the children of ``nn.Sequential``/``nn.ModuleList`` containers and of the root module.
    Timed (:func:`~cnnscope.capture.layer_times`) on a batch of ``batch`` images (at most :data:`TIMING_BATCH`)
    cycled from ``x``, as the occluded copies will run: on a CPU the time share of early, high-resolution layers
    grows with the batch. Layers that
    run more than once and layers whose output is another candidate's (the same tensor) are left out.
    """
    return {n: t.share for n, t in _candidates(module, x, batch).items()}


@dataclass
class Geometry:
    """What planning measures once: the candidate layers' time shares, their positions' input extents, and how
    each reads the one before it (:class:`~.geometry.Link`, rows and columns)."""

    shares: dict[str, float]
    extents: dict[str | None, tuple[Axis, Axis]]
    links: dict[tuple[str | None, str], tuple[Link, Link] | None]
    windows: Windows

    def link(self, src: str | None, dst: str) -> tuple[Link, Link] | None:
        """How ``dst`` reads ``src`` (``None``: the input), composed along the candidates between them."""
        if (src, dst) not in self.links:
            order = list(self.shares)
            path = order[order.index(src):order.index(dst) + 1]
            got = self.links.get((path[0], path[1]))
            for a, b in zip(path[1:], path[2:]):
                nxt = self.links.get((a, b))
                got = None if got is None or nxt is None else (got[0].then(nxt[0]), got[1].then(nxt[1]))
            self.links[src, dst] = got
        return self.links[src, dst]

    def stages(self, chain: Sequence[str], tau: float | None) -> list[Stage] | None:
        """The stages of ``chain`` (``None`` when a stage's geometry is irregular)."""
        regions = [list(self.windows[0]), list(self.windows[1])]
        centres = [[(s + e - 1) / 2.0 for s, e in ws] for ws in self.windows]
        out = []
        for src, dst in zip((None, *chain[:-1]), chain):
            link = self.link(src, dst)
            if link is None:
                return None
            cuts = []
            for ax in (0, 1):
                got = stage_cuts(link[ax], len(self.extents[src][ax]), self.extents[dst][ax], regions[ax],
                                 centres[ax], self.windows[ax], tau)
                if got is None:
                    return None
                cuts.append(got[0])
                centres[ax] = got[1]
            rows, cols = cuts
            n_src = len(self.extents[src][0]) * len(self.extents[src][1])
            area = np.mean([r.c1 - r.c0 for r in rows]) * np.mean([c.c1 - c.c0 for c in cols]) / n_src
            out.append(Stage(src, dst, rows, cols, self.shares[dst], float(area)))
            regions = [[(c.r0, c.r1) for c in rows], [(c.r0, c.r1) for c in cols]]
        return out


def cost(stages: list[Stage]) -> float:
    """Estimated share of a full forward: each stage's time share times its crop's share of its source, plus the
    rest of the model and :data:`STAGE_OVERHEAD` per stage."""
    before = 0.0
    total = 0.0
    for st in stages:
        total += (st.share - before) * st.area + STAGE_OVERHEAD
        before = st.share
    return float(total + 1.0 - before)


def measure(module: nn.Module, x: torch.Tensor, windows: Windows, batch: int, layers: tuple[str, ...] | None,
            approximate: bool, progress: bool = False) -> Geometry:
    """Time the candidate layers and probe their receptive fields (only ``layers`` when given); kept per model
    while it lives."""
    key = (tuple(x.shape[1:]), x.dtype, x.device.type, x.is_contiguous(memory_format=torch.channels_last),
           repr(windows), batch, layers, approximate)
    store = _GEOMETRY.setdefault(module, {})
    if key not in store:
        store[key] = _measure(module, x, windows, batch, layers, approximate, progress)
    return store[key]


def _measure(module: nn.Module, x: torch.Tensor, windows: Windows, batch: int, layers: tuple[str, ...] | None,
             approximate: bool, progress: bool) -> Geometry:
    h, w = x.shape[-2:]
    times = _candidates(module, x, batch)
    cands = {n: t.share for n, t in times.items()}
    if layers is not None:
        Capture(module, list(layers))  # an unknown name raises LayerError with close matches
        bad = [n for n in layers if n not in cands]
        if bad:
            raise IncrementalUnavailable(f"split_layer {bad[0]!r} is not a block boundary with a spatial output "
                                         f"(candidates: {', '.join(cands) or 'none'})")
        if [cands[n] for n in layers] != sorted(cands[n] for n in layers) or len(set(layers)) != len(layers):
            raise IncrementalUnavailable(f"split layers {list(layers)} are not in forward order")
        cands = {n: cands[n] for n in layers}
    elif not approximate:
        cands = {n: s for n, s in cands.items() if s <= MAX_SHARE}
    if not cands:
        raise IncrementalUnavailable("no block boundary with a spatial output to split the model at")
    rfs = receptive_fields(module, list(cands), (h, w), progress=progress)
    extents: dict[str | None, tuple[Axis, Axis]] = {None: (Axis.pixels(h), Axis.pixels(w))}
    for name in cands:
        boxes = rfs[name].boxes
        extents[name] = (Axis(boxes[:, :, 0].min(axis=1), boxes[:, :, 2].max(axis=1)),
                         Axis(boxes[:, :, 1].min(axis=0), boxes[:, :, 3].max(axis=0)))
    links: dict[tuple[str | None, str], tuple[Link, Link] | None] = {}
    order = list(cands)
    for src, dst in zip((None, *order[:-1]), order):
        got = None
        if src is None or max(len(a) for a in extents[src]) > PROBE_SIZE:
            pair = [Link.from_extents(a, b) for a, b in zip(extents[src], extents[dst])]
            got = None if None in pair else (pair[0], pair[1])
        if got is None and src is not None:
            got = probe_link(module, x[:1], src, dst, times[src].shape)
        links[src, dst] = got
    for name in order[1:]:  # a chain may start at any candidate
        pair = [Link.from_extents(a, b) for a, b in zip(extents[None], extents[name])]
        links[None, name] = None if None in pair else (pair[0], pair[1])
    return Geometry(cands, extents, links, windows)


def _candidates(module: nn.Module, x: torch.Tensor, batch: int) -> dict[str, LayerTime]:
    containers = (nn.Sequential, nn.ModuleList)
    names: dict[nn.Module, str] = {}
    for parent_name, parent in module.named_modules():
        if parent is module or isinstance(parent, containers):
            for child_name, child in parent.named_children():
                names.setdefault(child, f"{parent_name}.{child_name}" if parent_name else child_name)
    n = min(batch, TIMING_BATCH)
    times = layer_times(module, x[torch.arange(n) % x.shape[0]], names.values(), runs=TIMING_RUNS)
    out: dict[str, LayerTime] = {}
    outputs: set[int] = set()
    for name, t in sorted(times.items(), key=lambda kv: kv[1].share, reverse=True):  # deepest name of an output
        spatial = t.shape is not None and len(t.shape) == 4 and min(t.shape[-2:]) > 1
        if spatial and t.calls == 1 and t.output not in outputs and 0 < t.share < 1:
            out[name] = t
            outputs.add(t.output)
    kept = sorted(out, key=lambda n: (n.count("."), out[n].share))[:MAX_CANDIDATES]
    return dict(sorted(((n, out[n]) for n in kept), key=lambda kv: kv[1].share))


def make_plan(module: nn.Module, x: torch.Tensor, windows: Windows, *, batch: int,
              layers: tuple[str, ...] | None = None, tau: float | None = None,
              splices: Callable[[str], bool] | None = None, verify: Callable[[Plan], None] | None = None,
              exclude: Sequence[str] = (), progress: bool = False) -> Plan:
    """The cheapest chain of split layers for these windows (the chain ``layers`` when given).

    Times the forward and probes receptive fields (kept in memory per model). Candidate layers that fail
    ``splices`` (something reaches the output past them: a skip connection around the layer, the input used again
    at the end) are left out, and so are those in ``exclude`` (they failed in an earlier try). With ``verify``
    (which raises :class:`IncrementalUnavailable` for a plan that fails the clean-image check) a chain that fails
    is chosen again without the stage's layer, until one passes. ``progress`` shows the receptive-field probe's bar
    (the longest part of planning).

    Raises:
        IncrementalUnavailable: no candidate layer, or no plan whose estimated cost is below :data:`MAX_COST`.
    """
    geo = measure(module, x, windows, batch, layers, approximate=tau is not None, progress=progress)
    if layers is not None:
        stages = geo.stages(layers, tau)
        if stages is None:
            raise IncrementalUnavailable("the split layers have irregular receptive fields")
        return Plan(stages, cost(stages), windows, tau)
    names = [n for n in geo.shares if n not in exclude]
    spliced: dict[str, bool] = {}
    reasons: list[str] = []
    while True:
        if not names:
            raise IncrementalUnavailable("no split layer: something reaches the output past every candidate layer "
                                         "(a skip connection around it, or the input used again)")
        plan = select(geo, names, tau)
        # splicing is checked on the chosen chain only (a forward per layer): a layer that fails leaves the
        # candidates and the chain is chosen again
        bad = [n for n in plan.layers if splices is not None and not spliced.setdefault(n, splices(n))]
        if bad:
            names = [n for n in names if n not in bad]
            continue
        if splices is not None:  # the summary lists only alternatives made of layers known to splice
            plan.candidates = {k: v for k, v in plan.candidates.items() if all(spliced.get(n) for n in k.split(", "))}
        if verify is None:
            return plan
        try:
            verify(plan)
            return plan
        except IncrementalUnavailable as err:
            reasons.append(str(err))
            if err.pair is None or err.pair[1] not in names or len(names) == 1:
                raise IncrementalUnavailable(join_reasons(reasons), err.pair) from None
            names.remove(err.pair[1])


def select(geo: Geometry, names: list[str], tau: float | None) -> Plan:
    """The cheapest chain of ``names`` by greedy elimination: start from all of them and drop, one at a time, the
    layer whose removal lowers the estimated cost most."""
    chain = [n for n in names if geo.stages([n], tau) is not None]
    if not chain:
        raise IncrementalUnavailable("no candidate layer has regular receptive fields")
    stages = geo.stages(chain, tau)
    while stages is None and len(chain) > 1:  # a stage between two layers can be irregular where each alone is not
        chain.pop()
        stages = geo.stages(chain, tau)
    best = cost(stages)
    while len(chain) > 1:
        tries = [(cost(st), c) for c in ([n for n in chain if n != drop] for drop in chain)
                 if (st := geo.stages(c, tau)) is not None]
        if not tries or min(tries)[0] >= best:
            break
        best, chain = min(tries)
        stages = geo.stages(chain, tau)
    singles = {n: cost(st) for n in names if (st := geo.stages([n], tau)) is not None}
    plan = Plan(stages, best, geo.windows, tau,
                {", ".join(chain): best, **dict(sorted(singles.items(), key=lambda kv: kv[1])[:8])})
    if plan.cost > MAX_COST:
        raise IncrementalUnavailable(f"no split layer pays off (best {', '.join(chain)}: estimated "
                                     f"{plan.cost:.2f} of a full forward)")
    return plan


def join_reasons(reasons: list[str], shown: int = 3) -> str:
    """The first ``shown`` reasons a plan failed, and how many more there were."""
    more = len(reasons) - shown
    return "; ".join(reasons[:shown]) + (f"; and {more} more" if more > 0 else "")
