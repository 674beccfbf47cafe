"""Incremental inference of occluded copies (Nakandala, Kumar, Papakonstantinou 2019, *Krypton*, SIGMOD).

An occluding window changes only a patch of each early layer's output: the positions whose receptive field overlaps
it. For a chain of *split layers* ``L1 -> L2 -> ...`` (Krypton's stages, planned by :mod:`.plan`) a batch of occluded
copies takes one forward pass:

1. the model's input is, per copy, the crop of the image that holds the receptive fields of ``L1``'s changed patch,
   with the window filled in;
2. at each split layer a hook takes the crops' output, pastes each copy's changed patch into the layer's clean
   activation, and hands the layers that follow the crop of the result that computes the next split layer's
   changed patch;
3. at the last split layer the hook hands on the whole pasted activation, and the rest of the model runs on it.

A generic ``nn.Module`` is never rewritten: the hooks swap tensors in a normal forward. The result is exact (equal
to full forwards up to float rounding) unless the plan is approximate (:mod:`.approximate`). Nothing is assumed:
before a plan is used, every crop geometry of every stage must reproduce its layer's clean activation (once per
model state) and, on every call, the spliced forward must reproduce each image's clean score. Models where that
fails (global operations before a split such as squeeze-excitation, translation-variant layers, skip connections
that bypass a split, inputs the model cannot take) fall back to full forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ..batching import chunks, track
from ..capture import Capture, StopForward, module_state, patch_outputs
from .plan import CHECK_RTOL, IncrementalUnavailable, Plan, Stage

Score = Callable[[object, torch.Tensor], torch.Tensor]
class IncrementalForward:
    """Scores of occluded copies through a :class:`~.plan.Plan` (context manager; see the module docstring).

    Args:
        module: the model that runs (in the mode the caller set).
        batch_size: copies per forward (at most).
        plan: the split layers and every window's crops.
        x, base: clean images and the baseline fill, ``[B, C, H, W]``.
        score: ``(outputs, rows) -> Tensor[N]``, the target's score of each copy (``rows``: its image).
        channels_last: hand 4-D tensors to the model in channels-last memory format.
        clean: the split layers' clean activations, if already captured (``layer -> [B, ...]``).
    """

    def __init__(self, module: nn.Module, plan: Plan, x: torch.Tensor, base: torch.Tensor, score: Score,
                 channels_last: bool, batch_size: int, clean: dict[str, torch.Tensor] | None = None) -> None:
        self.module, self.plan, self.x, self.base, self.score = module, plan, x, base, score
        self.cl = channels_last
        self.stages = plan.stages
        self.jobs = [(r, i, j) for r in range(x.shape[0]) for i in range(len(plan.windows[0]))
                     for j in range(len(plan.windows[1]))]
        #: copies per pass: ``batch_size`` evened out over the largest group of copies (:func:`even_batch`)
        n = max(len(g) for g in self._groups(self.jobs))
        self.batch = n if n <= batch_size else even_batch(n, batch_size)
        self._given = clean
        self._jobs: list[tuple[int, int, int]] = []
        self._rows = torch.zeros(0, dtype=torch.long)
        self._checking = False
        self._stage: int | None = None
        self._reached = -1

    def __enter__(self) -> IncrementalForward:
        layers = self.plan.layers
        got = self._given if self._given is not None else capture_clean(self.module, self.x, layers, self.cl)
        self.clean = [got[n] for n in layers]
        self.scale = [c.flatten(1).abs().max(dim=1).values.clamp(min=1e-6).cpu() for c in self.clean]
        self._patch = patch_outputs(self.module, {n: partial(self._hook, k) for k, n in enumerate(layers)})
        self._patch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.__exit__(*exc)

    def _format(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.cl and t.ndim == 4 else t

    # -- one pass ------------------------------------------------------------------------------------
    def _index(self, k: int, jobs: list[tuple[int, int, int]]) -> tuple[torch.Tensor, ...]:
        """Per job, the source positions of stage ``k``'s crop (``[N, length]`` rows and columns)."""
        st = self.stages[k]
        dev = self.x.device
        ii = torch.tensor([i for _, i, _ in jobs], device=dev)
        jj = torch.tensor([j for _, _, j in jobs], device=dev)
        c0y = torch.tensor([c.c0 for c in st.rows], device=dev)[ii]
        c0x = torch.tensor([c.c0 for c in st.cols], device=dev)[jj]
        ly = st.rows[jobs[0][1]].c1 - st.rows[jobs[0][1]].c0
        lx = st.cols[jobs[0][2]].c1 - st.cols[jobs[0][2]].c0
        return (c0y[:, None] + torch.arange(ly, device=dev), c0x[:, None] + torch.arange(lx, device=dev), ii, jj)

    def _gather(self, src: torch.Tensor, rows: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        """``src[rows[n], :, py[n], px[n]]`` for every job: ``[N, C, len(py), len(px)]`` (channels-last strides)."""
        return src[rows[:, None, None], :, py[:, :, None], px[:, None, :]].permute(0, 3, 1, 2)

    def _inputs(self, jobs: list[tuple[int, int, int]], occlude: bool) -> torch.Tensor:
        """The first stage's crops of the jobs' images (with the window filled in when ``occlude``)."""
        py, px, ii, jj = self._index(0, jobs)
        rows = self._rows
        out = self._gather(self.x, rows, py, px)
        if occlude:
            wy, wx = (torch.tensor(ws, device=self.x.device) for ws in self.plan.windows)
            inside = (((py >= wy[ii, :1]) & (py < wy[ii, 1:]))[:, :, None]
                      & ((px >= wx[jj, :1]) & (px < wx[jj, 1:]))[:, None, :])
            out = torch.where(inside[:, None], self._gather(self.base, rows, py, px), out)
        return self._format(out)

    def _hook(self, k: int, y: torch.Tensor) -> torch.Tensor:
        """At split layer ``k``: the next stage's crops of the pasted activation, or the whole of it at the last.

        While one stage is checked alone (:attr:`_stage` set), the layers before it pass a small input through,
        the previous split layer hands on clean crops, and the stage's own layer compares and stops the pass."""
        if self._stage is not None:
            if k == self._stage:
                self._compare(k, y)
                raise StopForward
            if k < self._stage - 1:
                return y
            py, px, _, _ = self._index(k + 1, self._jobs)
            return self._format(self._gather(self.clean[k], self._rows, py, px))
        if self._checking:
            self._compare(k, y)
        self._reached = k
        st, clean, dev = self.stages[k], self.clean[k], self.x.device
        if k + 1 < len(self.stages):
            py, px, ii, jj = self._index(k + 1, self._jobs)
        else:  # the whole activation
            n = len(self._jobs)
            py = torch.arange(clean.shape[-2], device=dev).expand(n, -1)
            px = torch.arange(clean.shape[-1], device=dev).expand(n, -1)
            ii = torch.tensor([i for _, i, _ in self._jobs], device=dev)
            jj = torch.tensor([j for _, _, j in self._jobs], device=dev)
        a0, a1, ao = (torch.tensor(v, device=dev)[ii] for v in zip(*[(c.r0, c.r1, c.origin) for c in st.rows]))
        b0, b1, bo = (torch.tensor(v, device=dev)[jj] for v in zip(*[(c.r0, c.r1, c.origin) for c in st.cols]))
        changed = (((py >= a0[:, None]) & (py < a1[:, None]))[:, :, None]
                   & ((px >= b0[:, None]) & (px < b1[:, None]))[:, None, :])
        ly = (py - ao[:, None]).clamp(0, y.shape[-2] - 1)
        lx = (px - bo[:, None]).clamp(0, y.shape[-1] - 1)
        jobs = torch.arange(len(self._jobs), device=dev)
        out = torch.where(changed[:, None], self._gather(y, jobs, ly, lx), self._gather(clean, self._rows, py, px))
        return self._format(out)

    def _compare(self, k: int, y: torch.Tensor) -> None:
        st, clean = self.stages[k], self.clean[k]
        for n, (r, i, j) in enumerate(self._jobs):
            a, b = st.rows[i], st.cols[j]
            got = y[n, :, a.r0 - a.origin:a.r1 - a.origin, b.r0 - b.origin:b.r1 - b.origin]
            want = clean[r, :, a.r0:a.r1, b.r0:b.r1]
            diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
            if diff > CHECK_RTOL * float(self.scale[k][r]):
                raise IncrementalUnavailable(f"a crop's activation at {st.layer!r} differs from the full forward "
                                             f"(max |diff| {diff:.3g}, scale {float(self.scale[k][r]):.3g})",
                                             st.pair)

    def _set(self, jobs: list[tuple[int, int, int]]) -> None:
        self._jobs = jobs
        self._rows = torch.tensor([r for r, _, _ in jobs], device=self.x.device)

    def _run(self, jobs: list[tuple[int, int, int]], occlude: bool) -> torch.Tensor:
        self._set(jobs)
        self._reached = -1
        try:
            out = self.module(self._inputs(jobs, occlude))
            return self.score(out, self._rows.cpu()).float()
        finally:
            self._jobs = []

    def _groups(self, jobs: list[tuple[int, int, int]], stages: list | None = None) -> list[list[int]]:
        """Indices of ``jobs`` grouped by their crop sizes at every stage (copies of one group batch together)."""
        groups: dict[tuple, list[int]] = {}
        for idx, (_, i, j) in enumerate(jobs):
            key = tuple((st.rows[i].c1 - st.rows[i].c0, st.cols[j].c1 - st.cols[j].c0)
                        for st in (self.stages if stages is None else stages))
            groups.setdefault(key, []).append(idx)
        return list(groups.values())

    # -- checks --------------------------------------------------------------------------------------
    @torch.no_grad()
    def check(self, clean_scores: torch.Tensor, geometries: str = "all") -> None:
        """Raise :class:`~.plan.IncrementalUnavailable` unless the un-occluded crops reproduce every split layer's
        clean activation and each image's clean score.

        ``geometries``: ``"all"`` checks every distinct crop geometry of every stage, stage by stage, once per model
        state (kept on the plan: locality is a property of the model, not of the image), then the whole chain on
        every image; ``"interior"`` only the latter (what planning uses to weed out layers).
        """
        state = module_state(self.module)
        if geometries == "all" and self.plan.verified.get(id(self.module)) != state:
            for k in range(len(self.stages)):
                self._check_stage(k)
            self.plan.verified[id(self.module)] = state
        self._check_chain(clean_scores)

    def _check_stage(self, k: int) -> None:
        """Stage ``k`` alone on every distinct geometry of its crops (image 0), from the previous split layer's clean
        activation; the layers before run on a small input."""
        st = self.stages[k]
        seen: dict[tuple, tuple[int, int, int]] = {}
        for i in range(len(st.rows)):
            for j in range(len(st.cols)):
                seen.setdefault((st.rows[i].local, st.cols[j].local), (0, i, j))
        jobs = list(seen.values())
        small = self.x[:1, :, :8, :8] if k else None
        for group in self._groups(jobs, stages=[st]):
            for part in chunks(len(group), self.batch):
                sub = [jobs[t] for t in group[part]]
                sub += sub[-1:] * (self.batch - len(sub))  # the passes' shape: the backend sets up each shape once
                self._stage = k
                self._set(sub)
                try:
                    if not any(self._stops(inp, st, last=inp is not small)
                               for inp in ([small, self.x[:1]] if k else [self._inputs(sub, occlude=False)])):
                        raise IncrementalUnavailable(f"the forward did not reach {st.layer!r}", st.pair)
                finally:
                    self._stage, self._jobs = None, []

    def _stops(self, inp: torch.Tensor, st: Stage, last: bool) -> bool:
        """Run ``inp`` until the checked stage's layer stops the pass: ``True`` if it did, ``False`` if the pass
        failed before (not the ``last`` try) or ended without reaching it."""
        try:
            self.module(self._format(inp))
        except StopForward:
            return True
        except IncrementalUnavailable:
            raise
        except Exception as err:  # too small an input for the layers before, or a crop the model cannot take
            if last:
                raise IncrementalUnavailable(f"the forward to {st.layer!r} failed: {type(err).__name__}: {err}",
                                             st.pair) from err
        return False

    def _check_chain(self, clean_scores: torch.Tensor) -> None:
        """Every image's un-occluded crops of the most common geometry through the whole chain: each split layer's
        activation and the image's score must be the clean ones."""
        first = self.stages[0]
        geo: dict[tuple, list[tuple[int, int]]] = {}
        for i in range(len(first.rows)):
            for j in range(len(first.cols)):
                geo.setdefault(tuple((st.rows[i].local, st.cols[j].local) for st in self.stages), []).append((i, j))
        common = max(geo.values(), key=len)[0]
        jobs = [(r, *common) for r in range(self.x.shape[0])]
        want = clean_scores.float().cpu()
        scale = max(float(want.abs().max()), 1e-6)
        for part in chunks(len(jobs), self.batch):
            sub = jobs[part]
            got = self._checked(sub).cpu()
            diff = float((got - want[[r for r, _, _ in sub]]).abs().max())
            if diff > CHECK_RTOL * scale:
                raise IncrementalUnavailable(f"the spliced forward's scores differ from the full forward (max "
                                             f"|diff| {diff:.3g}, scale {scale:.3g})", self.stages[-1].pair)

    def _checked(self, jobs: list[tuple[int, int, int]]) -> torch.Tensor:
        self._checking = True
        try:
            return self._run(jobs, occlude=False)
        except IncrementalUnavailable:
            raise
        except Exception as err:  # a model that cannot take a crop, or a shape that does not fit
            k = self._reached
            where = (f"the forward up to {self.stages[0].layer!r}" if k < 0 else
                     f"the forward from {self.stages[k].layer!r}")
            pair = self.stages[min(k + 1, len(self.stages) - 1)].pair
            raise IncrementalUnavailable(f"{where} failed: {type(err).__name__}: {err}", pair) from err
        finally:
            self._checking = False

    # -- scores --------------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, progress: bool = False, desc: str = "occlusion") -> torch.Tensor:
        """Scores of every (image, window) in row-major window order: ``[n_images * n_windows]``, on the CPU.

        Copies whose crops have the same sizes at every stage (all of them, but for a few at the borders of some
        models) run together, :attr:`batch` per pass (the last pass of a group padded to full size).
        """
        jobs = self.jobs
        parts = []
        for group in self._groups(jobs):
            size = min(len(group), self.batch)
            parts += [(group[part], size) for part in chunks(len(group), size)]
        out = torch.empty(len(jobs))
        for idxs, size in track(parts, progress, desc, unit="batch"):
            pad = [idxs[-1]] * (size - len(idxs))
            got = self._run([jobs[t] for t in idxs + pad], occlude=True).cpu()
            out[idxs] = got[:len(idxs)]
        return out


def even_batch(n: int, batch_size: int) -> int:
    """The batch size in ``[batch_size / 2, batch_size]`` that splits ``n`` copies with the fewest left over (the
    last batch is padded to full size: every pass has one shape, and a new shape costs a CPU backend set-up)."""
    sizes = range(batch_size, max(1, (batch_size + 1) // 2) - 1, -1)
    return min(sizes, key=lambda b: (-(-n // b) * b - n, -b))


@torch.no_grad()
def capture_clean(module: nn.Module, x: torch.Tensor, layers: list[str], channels_last: bool
                  ) -> dict[str, torch.Tensor]:
    """Every layer's clean activation, one image at a time (as the checks compare them). The caller has set the
    mode (eval or train) for the whole call; clones, as in-place layers after a split layer would change it."""
    cap = Capture(module, layers, stop_early=True, clone=True, eval_mode=False, layout="raw")
    per_image = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        with cap:
            cap.run(xi.contiguous(memory_format=torch.channels_last) if channels_last else xi)
        per_image.append([cap.activations[n] for n in layers])
    return {n: torch.cat(acts) for n, acts in zip(layers, zip(*per_image))}
