"""Incremental occlusion inference (Nakandala, Kumar, Papakonstantinou 2019, *Krypton*, SIGMOD).

An occluding window changes only a small patch of an early layer's output: the positions whose receptive field
overlaps the window. For a chain of *split layers* ``L1 -> L2 -> ...`` (Krypton's stages) the occluded forward is
computed in parts:

1. **first stage**: the model up to ``L1`` runs on the input crop that holds the receptive fields of ``L1``'s changed
   patch (with the window occluded); its output is pasted into ``L1``'s clean activation;
2. **later stages**: the layers from ``L(k-1)`` to ``Lk`` run on the crop of the pasted ``L(k-1)`` activation that
   computes ``Lk``'s changed patch, pasted into ``Lk``'s clean activation;
3. **the rest**: the model runs from the last split layer on the pasted activation.

A generic ``nn.Module`` cannot be entered in the middle, so stages 2-3 give the forward a one-image dummy input and
a forward hook swaps the crop (or the pasted activation) in for the previous split layer's output: everything before
it costs next to nothing.

The result is exact (equal to full forwards up to float rounding), not Krypton's approximate mode. Everything is
measured, never assumed: the receptive fields come from NaN probes (:func:`~cnnscope.capture.receptive_fields`),
the chain is chosen by an estimated cost (each stage's measured time share times its crop's share of its source,
plus the rest), and before use the plan is checked on the clean image: every crop geometry must reproduce each
split layer's clean activation and the spliced forward must reproduce the clean scores. Models where that fails
(global operations before a split such as squeeze-excitation, skip connections that bypass a split, inputs the
model cannot take, heads that depend on the input's batch size) fall back to full forwards, and the reason is
reported in the result's ``spec["incremental"]``.

Candidate split layers are block boundaries: the children of ``nn.Sequential``/``nn.ModuleList`` containers and of
the root module, with a spatial output, run once per forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..capture import Capture, module_state, patch_outputs
from .incremental_plan import (
    CHECK_RTOL,
    MAX_TRIES,
    IncrementalUnavailable,
    Plan,
    discard_plans,
    make_plans,
    split_candidates,
)
from .targets import Scorer

__all__ = ["IncrementalOcclusion", "IncrementalUnavailable", "MAX_TRIES", "Plan", "discard_plans", "make_plans",
           "split_candidates"]


class IncrementalOcclusion:
    """Scores of occluded copies through a :class:`Plan` (see the module docstring).

    Args:
        module: the model (in the mode the caller set). scorer: the call's scorer (class or callable target).
        x, base: clean images and the baseline fill, ``[B, C, H, W]``.
        plan: from :func:`make_plans`. channels_last: hand crops to the model in channels-last format.
    """

    def __init__(self, module: nn.Module, scorer: Scorer, x: torch.Tensor, base: torch.Tensor, plan: Plan,
                 channels_last: bool) -> None:
        self.module, self.scorer, self.x, self.base, self.plan = module, scorer, x, base, plan
        self.cl = channels_last
        # the caller has set the mode (eval or train) for the whole call. Clones: a first run goes all the way (it
        # checks for reuse), and in-place layers after a split layer would otherwise change what it captured
        layers = [st.layer for st in plan.stages]
        self.cap_all = Capture(module, layers, stop_early=True, clone=True, eval_mode=False)
        self.caps = [Capture(module, [n], stop_early=True, clone=True, eval_mode=False) for n in layers]
        jy, jx = plan.stages[0].rows[0].jump, plan.stages[0].cols[0].jump
        self.dummy = self._format(x.new_zeros((1, x.shape[1], min(x.shape[-2], max(8, 2 * jy)),
                                               min(x.shape[-1], max(8, 2 * jx)))))
        self._swaps: dict[str, torch.Tensor] = {}
        self._patch = patch_outputs(module, {n: lambda y, n=n: self._swaps.pop(n, y) for n in layers})

    def __enter__(self) -> IncrementalOcclusion:
        """Capture every split layer's clean activation (one image at a time, as the checks compare them), then keep
        a hook on each split layer that swaps in a given tensor for one pass (the passes of later stages and of the
        rest of the model)."""
        with torch.no_grad():
            per_image = []
            for i in range(self.x.shape[0]):
                with self.cap_all:
                    self.cap_all.run(self._format(self.x[i:i + 1]))
                per_image.append([self.cap_all.activations[st.layer] for st in self.plan.stages])
            self.clean = [torch.cat(acts) for acts in zip(*per_image)]
        self._patch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._swaps.clear()
        self._patch.__exit__(*exc)

    def _format(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.cl and t.ndim == 4 else t

    def _run_stage(self, k: int, crops: torch.Tensor) -> torch.Tensor:
        """Stage ``k``'s layer output for ``crops`` of its source (images for the first stage; for later ones a tiny
        dummy input enters the model and a hook swaps the crops in for the previous split layer's output)."""
        cap = self.caps[k]
        crops = self._format(crops)
        with cap:  # hooks only while the stage runs: later passes run through the same layers
            if k == 0:
                cap.run(crops)
            else:
                self._swaps[self.plan.stages[k - 1].layer] = crops
                try:
                    cap.run(self.dummy)
                finally:
                    self._swaps.clear()
        return cap.activations[self.plan.stages[k].layer]

    def _crops(self, k: int, jobs: list[tuple[int, int, int]], source: torch.Tensor | None, occlude: bool
               ) -> torch.Tensor:
        """Stage ``k``'s crops: of the images (``source`` ``None``; occluded when ``occlude``) or of ``source``,
        whose row ``n`` belongs to ``jobs[n]``."""
        st = self.plan.stages[k]
        out = []
        for n, (r, i, j) in enumerate(jobs):
            ry, cx = st.rows[i], st.cols[j]
            crop = (self.x[r] if source is None else source[n])[:, ry.c0:ry.c1, cx.c0:cx.c1]
            if occlude:
                crop = crop.clone()
                ys, xs = slice(ry.start - ry.c0, ry.stop - ry.c0), slice(cx.start - cx.c0, cx.stop - cx.c0)
                crop[:, ys, xs] = self.base[r, :, ry.start:ry.stop, cx.start:cx.stop]
            out.append(crop)
        return torch.stack(out)

    def _paste(self, k: int, jobs: list[tuple[int, int, int]], acts: torch.Tensor) -> torch.Tensor:
        """Stage ``k``'s clean activations of the jobs' images with each job's changed positions from ``acts``."""
        st = self.plan.stages[k]
        pasted = self.clean[k][[r for r, _, _ in jobs]].clone()
        for n, (_, i, j) in enumerate(jobs):
            ry, cx = st.rows[i], st.cols[j]
            _, oy, ny = ry.local
            _, ox, nx = cx.local
            pasted[n, :, ry.r0:ry.r1, cx.r0:cx.r1] = acts[n, :, oy:oy + ny, ox:ox + nx]
        return pasted

    def _through_stages(self, jobs: list[tuple[int, int, int]]) -> torch.Tensor:
        """The last split layer's activation of each job's occluded image."""
        source = None
        for k in range(len(self.plan.stages)):
            acts = self._run_stage(k, self._crops(k, jobs, source, occlude=k == 0))
            source = self._paste(k, jobs, acts)
        return source

    def _suffix(self, pasted: torch.Tensor, rows: torch.Tensor, kind: str) -> torch.Tensor:
        self._swaps[self.plan.layer] = pasted
        try:
            return self.scorer.scores(self.dummy, rows, kind=kind).float()
        finally:
            self._swaps.clear()

    def _geometry(self, k: int, i: int, j: int) -> tuple:
        st = self.plan.stages[k]
        return st.rows[i].local, st.cols[j].local

    @torch.no_grad()
    def check(self, clean_scores: torch.Tensor, kind: str, crops: str = "all") -> None:
        """Raise :class:`IncrementalUnavailable` unless the crops reproduce each stage layer's clean activation and
        the spliced forward reproduces the clean scores.

        ``crops``: ``"all"`` checks every distinct crop geometry of every stage, once per model state (the result is
        kept on the plan: locality is a property of the model, not of the image); ``"interior"`` only the most
        common one (what planning uses to weed out layers). The spliced forward is checked on every call.
        """
        state = module_state(self.module)
        if crops == "all" and self.plan.verified.get(id(self.module)) != state:
            self._check_crops(interior_only=False)
            self.plan.verified[id(self.module)] = state
        elif crops == "interior":
            self._check_crops(interior_only=True)
        self._check_spliced(clean_scores, kind)

    def _check_crops(self, interior_only: bool) -> None:
        for k, st in enumerate(self.plan.stages):
            groups: dict[tuple, list[tuple[int, int, int]]] = {}
            for i in range(len(st.rows)):
                for j in range(len(st.cols)):
                    groups.setdefault(self._geometry(k, i, j), []).append((0, i, j))
            reps = [jobs[0] for jobs in groups.values()]
            if interior_only:
                reps = [max(groups.values(), key=len)[0]]
            by_shape: dict[tuple, list] = {}
            for job in reps:
                by_shape.setdefault((st.rows[job[1]].local[0], st.cols[job[2]].local[0]), []).append(job)
            try:
                for same in by_shape.values():
                    for b in range(0, len(same), 16):
                        part = same[b:b + 16]
                        source = None if k == 0 else self.clean[k - 1][[r for r, _, _ in part]]
                        acts = self._run_stage(k, self._crops(k, part, source, occlude=False))
                        _close(self._paste(k, part, acts), self.clean[k][[r for r, _, _ in part]],
                               f"a crop's activation at {st.layer!r}", st.pair)
            except IncrementalUnavailable:
                raise
            except Exception as err:  # a model that cannot take the crop or the dummy input
                raise IncrementalUnavailable(f"split at {st.layer!r} failed: {type(err).__name__}: {err}",
                                             st.pair) from err

    def _check_spliced(self, clean_scores: torch.Tensor, kind: str) -> None:
        rows = torch.arange(self.x.shape[0]).repeat(2)  # a batch other than the dummy's: the rest of the model
        try:                                             # must not depend on the input's batch size
            spliced = self._suffix(self._format(self.clean[-1][rows]), rows, kind)
        except Exception as err:
            raise IncrementalUnavailable(f"the forward from {self.plan.layer!r} failed: {type(err).__name__}: "
                                         f"{err}", self.plan.stages[-1].pair) from err
        want = clean_scores.float().to(spliced.device)[rows.to(spliced.device)]
        _close(spliced, want, "the spliced forward's scores", self.plan.stages[-1].pair)

    @torch.no_grad()
    def scores(self, n_images: int, max_batch: int, kind: str, progress: Callable | None = None) -> torch.Tensor:
        """Scores of every (image, window) in row-major window order: ``[n_images * n_windows]``.

        Jobs whose crops have the same sizes at every stage run together (all of them, but for a few at the
        borders of some models), ``max_batch`` at a time; the rest of the model runs in full batches of
        ``max_batch`` across those groups.
        """
        first = self.plan.stages[0]
        n_rows, n_cols = len(first.rows), len(first.cols)
        jobs = [(r, i, j) for r in range(n_images) for i in range(n_rows) for j in range(n_cols)]
        order: dict[tuple, list[int]] = {}
        for idx, (_, i, j) in enumerate(jobs):
            key = tuple((st.rows[i].local[0], st.cols[j].local[0]) for st in self.plan.stages)
            order.setdefault(key, []).append(idx)
        out = torch.empty(len(jobs))
        waiting: list[tuple[list[int], torch.Tensor]] = []

        def run_suffix(final: bool) -> None:
            while waiting and (final or sum(len(c) for c, _ in waiting) >= max_batch):
                idxs = [t for c, _ in waiting for t in c]
                pasted = torch.cat([p for _, p in waiting]) if len(waiting) > 1 else waiting[0][1]
                waiting.clear()
                if len(idxs) > max_batch:
                    waiting.append((idxs[max_batch:], pasted[max_batch:]))
                    idxs, pasted = idxs[:max_batch], pasted[:max_batch]
                rows = torch.tensor([jobs[t][0] for t in idxs])
                out[idxs] = self._suffix(self._format(pasted), rows, kind).cpu()
                if progress is not None:
                    progress(len(idxs))

        for idxs in order.values():
            for b in range(0, len(idxs), max_batch):
                chunk = idxs[b:b + max_batch]
                waiting.append((chunk, self._through_stages([jobs[t] for t in chunk])))
                run_suffix(final=False)
        run_suffix(final=True)
        return out


def _close(got: torch.Tensor, want: torch.Tensor, what: str, pair: tuple[str | None, str] | None = None) -> None:
    scale = float(want.abs().max()) if want.numel() else 0.0
    diff = float((got - want).abs().max()) if want.numel() else 0.0
    if got.shape != want.shape or diff > CHECK_RTOL * max(scale, 1e-6):
        raise IncrementalUnavailable(f"{what} differs from the full forward (max |diff| {diff:.3g}, scale "
                                     f"{scale:.3g})", pair)
