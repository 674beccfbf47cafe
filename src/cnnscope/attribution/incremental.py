"""Incremental occlusion inference (Nakandala, Kumar, Papakonstantinou 2019, *Krypton*, SIGMOD).

An occluding window changes only a small patch of an early layer's output: the positions whose receptive field
overlaps the window. For a *split layer* ``L`` the occluded forward is computed in two parts:

1. **prefix on a crop**: the part of the model up to ``L`` runs on the input crop that holds the receptive fields of
   the changed patch (with the window occluded), and its output is pasted into ``L``'s clean activation;
2. **suffix**: the model runs from ``L`` on the pasted activation. A generic ``nn.Module`` cannot be entered in the
   middle, so the forward is given a tiny dummy input and a forward hook replaces ``L``'s output with the pasted
   activation: everything before ``L`` costs next to nothing.

The result is exact (equal to full forwards up to float rounding), not Krypton's approximate mode. Everything is
measured, never assumed: the receptive fields come from NaN probes (:func:`~cnnscope.capture.receptive_fields`),
the split layer is chosen by an estimated cost (the measured time share of the prefix times the crop's share of
the image, plus the suffix's share), and before use the plan is checked on the clean image: every crop geometry
must reproduce ``L``'s clean activation and the spliced forward must reproduce the clean scores. Models where that
fails (global operations before ``L`` such as squeeze-excitation, skip connections that bypass ``L``, inputs the
prefix cannot take) fall back to full forwards, and the reason is reported in the result's ``spec["incremental"]``.

Candidate split layers are block boundaries: the children of ``nn.Sequential``/``nn.ModuleList`` containers and of
the root module, with a spatial output, run once per forward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..capture import Capture, layer_times, patch_outputs
from ..capture.receptive_field import receptive_fields
from ..errors import CnnscopeError
from .targets import Scorer

#: Plans tried per call (cheapest first) before falling back to full forwards.
MAX_TRIES = 3
#: A split layer is used only when its estimated cost is at most this share of a full forward.
MAX_COST = 0.85
#: Layers after this share of the forward's time are not considered (their receptive fields cost probes).
MAX_SHARE = 0.6
#: Timed forwards of the split planning (after one warm-up).
TIMING_RUNS = 3
#: Relative tolerance of the clean-image checks.
CHECK_RTOL = 1e-4


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class IncrementalUnavailable(CnnscopeError):
    """The model or the options do not allow incremental occlusion (the caller falls back to full forwards)."""


@dataclass(frozen=True)
class AxisCut:
    """Geometry of one window start along one axis: changed positions ``[r0, r1)`` at the split layer and the
    input crop ``[c0, c1)`` that computes them (``c0`` a multiple of the layer's stride)."""

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
class Plan:
    """A split layer and the cut of every window row and column."""

    layer: str
    rows: list[AxisCut]
    cols: list[AxisCut]
    prefix_share: float
    cost: float
    candidates: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        crop = np.mean([r.c1 - r.c0 for r in self.rows]), np.mean([c.c1 - c.c0 for c in self.cols])
        return {"used": True, "layer": self.layer, "prefix_share": round(self.prefix_share, 4),
                "estimated_cost": round(self.cost, 4), "mean_crop": [round(float(v), 1) for v in crop],
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


def _cuts(top: np.ndarray, bottom: np.ndarray, starts: list[int], window: int, size: int, jump: int
          ) -> list[AxisCut] | None:
    cuts = []
    for s in starts:
        e = min(s + window, size)
        hit = np.nonzero((top < e) & (bottom > s))[0]
        if hit.size == 0 or hit[-1] - hit[0] + 1 != hit.size:
            return None
        r0, r1 = int(hit[0]), int(hit[-1]) + 1
        c0 = int(top[r0:r1].min()) // jump * jump
        c1 = int(bottom[r0:r1].max())
        cuts.append(AxisCut(s, e, r0, r1, c0, c1, jump))
    return cuts


def _jump(top: np.ndarray) -> int | None:
    steps = np.diff(top[top > 0]) if (top > 0).sum() > 1 else np.diff(top)
    if steps.size == 0:
        return 1
    vals, counts = np.unique(steps, return_counts=True)
    j = int(vals[counts.argmax()])
    return j if j >= 1 else None


def make_plans(module: nn.Module, x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
               layer: str | None = None, batch: int = 4) -> list[Plan]:
    """Split plans worth trying, cheapest first (only the given layer's when ``layer`` is set).

    Plans (and the reasons there is none) are cached per module, input size, windows and device type: the first
    call times the forward and probes receptive fields (~1 s for EfficientNet-Lite0 on one CPU core), later ones
    reuse them. The returned list is the cached one: :func:`discard_plan` removes a plan that failed its check.

    Raises:
        IncrementalUnavailable: no candidate layer, or none whose estimated cost is below :data:`MAX_COST`.
    """
    cache = _PLANS.setdefault(module, {})
    key = (*_key(x, window, starts, layer), batch)
    if key not in cache:
        try:
            cache[key] = _make_plans(module, x, window, starts, layer, batch)
        except IncrementalUnavailable as err:
            cache[key] = err
    got = cache[key]
    if isinstance(got, IncrementalUnavailable):
        raise got
    return got


def discard_plan(module: nn.Module, x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
                 layer: str | None, plan: Plan, batch: int = 4) -> None:
    """Forget ``plan`` for later calls (its split layer failed the clean-image check)."""
    got = _PLANS.get(module, {}).get((*_key(x, window, starts, layer), batch))
    if isinstance(got, list) and plan in got:
        got.remove(plan)


def _key(x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]], layer: str | None) -> tuple:
    return tuple(x.shape[1:]), tuple(window), tuple(starts[0]), tuple(starts[1]), layer, x.device.type


def _make_plans(module: nn.Module, x: torch.Tensor, window: tuple[int, int], starts: tuple[list[int], list[int]],
                layer: str | None, batch: int) -> list[Plan]:
    h, w = x.shape[-2:]
    cands = split_candidates(module, x, batch)
    if layer is not None:
        Capture(module, [layer])  # an unknown name raises LayerError with close matches
        if layer not in cands:
            raise IncrementalUnavailable(f"split_layer {layer!r} is not a block boundary with a spatial output "
                                         f"(candidates: {', '.join(cands) or 'none'})")
        cands = {layer: cands[layer]}
    else:
        cands = {n: s for n, s in cands.items() if s <= MAX_SHARE}
    if not cands:
        raise IncrementalUnavailable("no block boundary with a spatial output to split the model at")
    rfs = receptive_fields(module, list(cands), (h, w))
    plans: list[Plan] = []
    for name, share in cands.items():
        boxes = rfs[name].boxes
        top_r, bot_r = boxes[:, :, 0].min(axis=1), boxes[:, :, 2].max(axis=1)
        top_c, bot_c = boxes[:, :, 1].min(axis=0), boxes[:, :, 3].max(axis=0)
        jy, jx = _jump(top_r), _jump(top_c)
        if jy is None or jx is None:
            continue
        rows = _cuts(top_r, bot_r, starts[0], window[0], h, jy)
        cols = _cuts(top_c, bot_c, starts[1], window[1], w, jx)
        if rows is None or cols is None:
            continue
        area = np.mean([r.c1 - r.c0 for r in rows]) * np.mean([c.c1 - c.c0 for c in cols]) / (h * w)
        plans.append(Plan(name, rows, cols, share, float(share * area + (1.0 - share))))
    if not plans:
        raise IncrementalUnavailable("no candidate layer has regular receptive fields")
    plans.sort(key=lambda p: p.cost)
    costs = {p.layer: p.cost for p in plans}
    for p in plans:
        p.candidates = costs
    if layer is None:
        best = plans[0]
        plans = [p for p in plans if p.cost <= MAX_COST]
        if not plans:
            raise IncrementalUnavailable(f"no split layer pays off (best {best.layer!r}: estimated {best.cost:.2f} "
                                         "of a full forward)")
    return plans


class IncrementalOcclusion:
    """Scores of occluded copies through a :class:`Plan` (see the module docstring).

    Args:
        module: the model (in the mode the caller set). scorer: the call's scorer (class or callable target).
        x, base: clean images and the baseline fill, ``[B, C, H, W]``.
        plan: from :func:`make_plans`. channels_last: hand crops to the model in channels-last format.
    """

    def __init__(self, module: nn.Module, scorer: Scorer, x: torch.Tensor, base: torch.Tensor, plan: Plan,
                 channels_last: bool, eval_mode: bool) -> None:
        self.module, self.scorer, self.x, self.base, self.plan = module, scorer, x, base, plan
        self.cl = channels_last
        # clones: the first run goes all the way (it checks for reuse), and in-place layers after the split would
        # otherwise change what it captured
        self.cap = Capture(module, [plan.layer], stop_early=True, clone=True, eval_mode=eval_mode)
        jy, jx = plan.rows[0].jump, plan.cols[0].jump
        self.dummy_size = (min(x.shape[-2], max(8, 2 * jy)), min(x.shape[-1], max(8, 2 * jx)))

    def __enter__(self) -> IncrementalOcclusion:
        with torch.no_grad():
            self.clean = torch.cat([self._prefix(self.x[i:i + 1]) for i in range(self.x.shape[0])])
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _prefix(self, batch: torch.Tensor) -> torch.Tensor:
        """The split layer's output for ``batch`` (after the first call, the forward stops right after it)."""
        if self.cl:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self.cap:  # hooks only while the prefix runs: the suffix passes through the split layer too
            self.cap.run(batch)
        return self.cap.activations[self.plan.layer]

    def _crops(self, jobs: list[tuple[int, int, int]], occlude: bool) -> torch.Tensor:
        out = []
        for r, i, j in jobs:
            ry, cx = self.plan.rows[i], self.plan.cols[j]
            crop = self.x[r, :, ry.c0:ry.c1, cx.c0:cx.c1].clone()
            if occlude:
                ys, xs = slice(ry.start - ry.c0, ry.stop - ry.c0), slice(cx.start - cx.c0, cx.stop - cx.c0)
                crop[:, ys, xs] = self.base[r, :, ry.start:ry.stop, cx.start:cx.stop]
            out.append(crop)
        return torch.stack(out)

    def _paste(self, jobs: list[tuple[int, int, int]], acts: torch.Tensor) -> torch.Tensor:
        pasted = self.clean[[r for r, _, _ in jobs]].clone()
        for k, (_, i, j) in enumerate(jobs):
            ry, cx = self.plan.rows[i], self.plan.cols[j]
            _, oy, ny = ry.local
            _, ox, nx = cx.local
            pasted[k, :, ry.r0:ry.r1, cx.r0:cx.r1] = acts[k, :, oy:oy + ny, ox:ox + nx]
        if self.cl and pasted.ndim == 4:  # indexing returns the default layout; the suffix runs as fast as the prefix
            pasted = pasted.contiguous(memory_format=torch.channels_last)
        return pasted

    def _suffix(self, pasted: torch.Tensor, rows: torch.Tensor, kind: str) -> torch.Tensor:
        n = pasted.shape[0]
        dummy = self.x.new_zeros((n, self.x.shape[1], *self.dummy_size))
        with patch_outputs(self.module, {self.plan.layer: lambda _y: pasted}):
            return self.scorer.scores(dummy, rows, kind=kind).float()

    @torch.no_grad()
    def check(self, clean_scores: torch.Tensor, kind: str) -> None:
        """Raise :class:`IncrementalUnavailable` unless every crop geometry reproduces the clean activation and the
        spliced forward reproduces the clean scores."""
        groups: dict[tuple, tuple[int, int, int]] = {}
        for i, ry in enumerate(self.plan.rows):
            for j, cx in enumerate(self.plan.cols):
                groups.setdefault((ry.local, cx.local), (0, i, j))
        jobs = list(groups.values())
        try:
            for k in range(0, len(jobs), 8):
                part = jobs[k:k + 8]
                by_shape: dict[tuple, list] = {}
                for job in part:
                    by_shape.setdefault((self.plan.rows[job[1]].local[0], self.plan.cols[job[2]].local[0]),
                                        []).append(job)
                for same in by_shape.values():
                    acts = self._prefix(self._crops(same, occlude=False))
                    got = self._paste(same, acts)
                    want = self.clean[[r for r, _, _ in same]]
                    _close(got, want, "a crop's activation")
            rows = torch.arange(self.x.shape[0])
            spliced = self._suffix(self.clean.clone(), rows, kind)
        except IncrementalUnavailable:
            raise
        except Exception as err:  # a model that cannot take the crop or the dummy input
            raise IncrementalUnavailable(f"split at {self.plan.layer!r} failed: {type(err).__name__}: {err}") from err
        _close(spliced, clean_scores.float().to(spliced.device), "the spliced forward's scores")

    @torch.no_grad()
    def scores(self, n_images: int, max_batch: int, kind: str, progress: Callable | None = None) -> torch.Tensor:
        """Scores of every (image, window) in row-major window order: ``[n_images * n_windows]``."""
        n_rows, n_cols = len(self.plan.rows), len(self.plan.cols)
        jobs = [(r, i, j) for r in range(n_images) for i in range(n_rows) for j in range(n_cols)]
        order: dict[tuple, list[int]] = {}
        for idx, (_, i, j) in enumerate(jobs):
            order.setdefault((self.plan.rows[i].local, self.plan.cols[j].local), []).append(idx)
        out = torch.empty(len(jobs))
        for idxs in order.values():
            for k in range(0, len(idxs), max_batch):
                chunk = idxs[k:k + max_batch]
                part = [jobs[t] for t in chunk]
                acts = self._prefix(self._crops(part, occlude=True))
                pasted = self._paste(part, acts)
                rows = torch.tensor([r for r, _, _ in part])
                out[chunk] = self._suffix(pasted, rows, kind).cpu()
                if progress is not None:
                    progress(len(chunk))
        return out


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.abs().max()) if want.numel() else 0.0
    diff = float((got - want).abs().max()) if want.numel() else 0.0
    if got.shape != want.shape or diff > CHECK_RTOL * max(scale, 1e-6):
        raise IncrementalUnavailable(f"{what} differs from the full forward (max |diff| {diff:.3g}, scale "
                                     f"{scale:.3g})")
