"""Perturbation methods: occlusion (Zeiler & Fergus 2013) and RISE (Petsiuk et al. 2018).

Both score many perturbed copies of each image with :meth:`Scorer.map_scores`, which forwards at most
``max_batch`` of them at a time (the memory bound); the perturbed copies are built chunk by chunk.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import MethodError
from .base import Method, register
from .baselines import check_baseline, make_baseline
from .fold_bn import fold_batchnorm
from .incremental import MAX_TRIES, IncrementalOcclusion, IncrementalUnavailable, Plan, discard_plans, make_plans
from .incremental_plan import join_reasons
from .targets import Scorer, _chunks

#: Largest batch of occluded copies per pass of incremental occlusion on a CPU (see ``Occlusion._incremental_batch``).
INCREMENTAL_CPU_BATCH = 16
#: RISE masks are drawn this many at a time, so they do not depend on the batch size or ``max_batch``.
RISE_MASK_CHUNK = 32


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise MethodError(f"{name} must be a positive int or (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top/left offsets of occlusion windows along one axis: ``0, s, 2s, ...`` up to ``ceil((size - w) / s)``.

    As in Captum's ``Occlusion``, the last window may stick out past the edge (it is clipped), so every pixel
    is covered when ``stride <= window``.
    """
    window = min(window, size)
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


def _score_kind(option: str, scorer: Scorer, name: str) -> str:
    if option == "auto":
        return "prob" if scorer.target.kind == "class" else "logit"
    if option not in ("logit", "prob"):
        raise MethodError(f"{name}: score must be 'logit', 'prob' or 'auto', got {option!r}")
    return option


def _clean_scores(scorer: Scorer, x: torch.Tensor, kind: str, max_batch: int) -> torch.Tensor:
    clean = scorer.bind_clean(x, max_batch)
    if kind == "logit":
        return clean.float()
    return scorer.map_scores(lambda j: x[j], torch.arange(x.shape[0]), max_batch, kind=kind)


@register
class Occlusion(Method):
    """Occlusion sensitivity (Zeiler & Fergus 2013): how much the score drops when a window is covered.

    Every window position (all channels at once) is replaced by the baseline and the drop
    ``f(x) - f(x_occluded)`` is spread over the window's pixels; a pixel's value is the mean drop of the
    windows that cover it. Values have the input's shape (equal across channels), as Captum's ``Occlusion``
    with a window spanning all channels.

    Options:
        window: ``int`` or ``(h, w)`` in pixels (default 32); stride: ``int`` or ``(h, w)`` (default 16).
        baseline: the fill: a number in the model's input space (default 0, the mean colour for normalised
            inputs), a tensor, or ``"blur"`` (a Gaussian-blurred copy, ``blur_sigma`` pixels).
        score: ``"logit"`` (default) or ``"prob"``.
        incremental: ``"auto"`` (default) computes each occluded forward incrementally when the model allows it
            (:mod:`.incremental`, Krypton, Nakandala et al. 2019: the layers up to each split layer run only on the
            crop the window changes; exact, checked on the clean image first) and falls back to full forwards
            otherwise; ``True`` raises instead of falling back; ``False`` always runs full forwards.
        split_layer: the split layer, or a chain of them in forward order (default: a chain of up to 3 chosen by
            estimated cost). ``spec["incremental"]`` reports the choice or why full forwards were used.
        fold_bn: run the occluded forwards on a copy of the model with eval-mode batch norms folded into their
            convolutions (:mod:`.fold_bn`; used only when it reproduces the clean scores, see ``spec["fold_bn"]``).
    """

    name = "occlusion"
    title = "Occlusion"
    reference = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"
    options: ClassVar[dict[str, Any]] = {"window": 32, "stride": 16, "baseline": 0.0, "blur_sigma": 10.0,
                                         "score": "logit", "incremental": "auto", "split_layer": None,
                                         "fold_bn": True}
    display: ClassVar[dict[str, Any]] = {"sign": "positive", "reduce": "mean"}

    def check_options(self) -> None:
        wh, ww = _pair(self.opts["window"], "occlusion window")
        sh, sw = _pair(self.opts["stride"], "occlusion stride")
        if sh > wh or sw > ww:
            raise MethodError(f"occlusion: stride {sh}x{sw} larger than the window {wh}x{ww} leaves pixels "
                              "uncovered")
        check_baseline(self.name, self.opts["baseline"])
        if self.opts["incremental"] not in ("auto", True, False):
            raise MethodError(f"occlusion: incremental must be 'auto', True or False, got {self.opts['incremental']!r}")

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        b, c, h, w = x.shape
        mb = self.opts["max_batch"]
        kind = _score_kind(self.opts["score"], scorer, self.name)
        clean = _clean_scores(scorer, x, kind, mb)
        scorer = self._folded_scorer(x, scorer, clean, kind)
        base = make_baseline(x, self.opts["baseline"], self.opts["blur_sigma"])
        wh, ww = (min(v, s) for v, s in zip(_pair(self.opts["window"], "window"), (h, w)))
        sh, sw = _pair(self.opts["stride"], "stride")
        ys = torch.tensor(window_starts(h, wh, sh), device=x.device)
        xs = torch.tensor(window_starts(w, ww, sw), device=x.device)
        n_win = len(ys) * len(xs)
        yy = torch.arange(h, device=x.device)
        xx = torch.arange(w, device=x.device)

        def masks(win: torch.Tensor) -> torch.Tensor:
            win = win.to(x.device)
            y0, x0 = ys[win // len(xs)], xs[win % len(xs)]
            my = (yy[None] >= y0[:, None]) & (yy[None] < y0[:, None] + wh)
            mx = (xx[None] >= x0[:, None]) & (xx[None] < x0[:, None] + ww)
            return (my[:, :, None] & mx[:, None, :])[:, None]

        def make(jobs: torch.Tensor) -> torch.Tensor:
            r = jobs // n_win
            return torch.where(masks(jobs % n_win), base[r], x[r])

        rows = torch.arange(b).repeat_interleave(n_win)
        scores = self._incremental(x, base, scorer, clean, kind, (wh, ww), (ys.tolist(), xs.tolist()))
        if scores is None:
            scores = scorer.map_scores(make, rows, self.forward_batch(x), kind=kind, progress=self.opts["progress"],
                                       desc=self.name)
        drops = (clean[rows.to(clean.device)] - scores).view(b, n_win).to(x.dtype)
        total = torch.zeros(b, 1, h, w, dtype=x.dtype, device=x.device)
        count = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
        for k in range(n_win):
            y0, x0 = int(ys[k // len(xs)]), int(xs[k % len(xs)])
            total[:, :, y0:y0 + wh, x0:x0 + ww] += drops[:, k].view(b, 1, 1, 1)
            count[:, :, y0:y0 + wh, x0:x0 + ww] += 1
        return (total / count.clamp(min=1)).expand(b, c, h, w).clone()

    def _folded_scorer(self, x: torch.Tensor, scorer: Scorer, clean: torch.Tensor, kind: str) -> Scorer:
        """A scorer on a copy of the model with batch norms folded into their convolutions (:mod:`.fold_bn`), if
        ``fold_bn`` is on, the model runs in eval mode, and the copy reproduces the clean scores (relative 1e-4);
        else ``scorer``. ``spec["fold_bn"]`` says which."""
        if not self.opts["fold_bn"] or not self.opts["eval_mode"] or scorer.target.kind == "unit":
            self.extra["fold_bn"] = {"used": False, "reason": "off, train mode or a unit target"}
            return scorer
        folded, n = fold_batchnorm(self.module, x)
        if n == 0:
            self.extra["fold_bn"] = {"used": False, "reason": "no convolution feeds a batch norm directly"}
            return scorer
        fast = Scorer(folded, scorer.target, eval_mode=True, channels_last=scorer.channels_last)
        got = fast.map_scores(lambda j: x[j], torch.arange(x.shape[0]), self.opts["max_batch"], kind=kind)
        want = clean.float().to(got.device)
        diff = float((got - want).abs().max())
        if diff > 1e-4 * max(float(want.abs().max()), 1e-6):
            self.extra["fold_bn"] = {"used": False, "reason": f"the folded copy's scores differ by {diff:.3g}"}
            return scorer
        self.extra["fold_bn"] = {"used": True, "pairs": n, "max_score_difference": diff}
        return fast

    def _incremental_batch(self, x: torch.Tensor) -> int:
        """Occluded copies per pass of the incremental path: crops and the low-resolution rest of the model use a
        CPU's caches well at larger batches than full forwards do (EfficientNet-Lite0, one core: batches of 16 took
        3.8 s for two images, 4 took 4.1 s, 1 took 6.0 s; running the rest of the model at 32 or 64 while the
        stages run at 16 gained nothing), so ``cpu_batch`` does not apply; ``max_batch`` does."""
        mb = self.opts["max_batch"]
        return min(mb, INCREMENTAL_CPU_BATCH) if x.device.type == "cpu" else mb

    def _first_plan_that_passes(self, plans: list, x: torch.Tensor, base: torch.Tensor, scorer: Scorer,
                                clean: torch.Tensor, kind: str, window_args: tuple, starts: tuple) -> tuple:
        """``(plan, scores)`` of the cheapest plan that passes its clean-image check (at most ``MAX_TRIES`` tried;
        a failed stage rules out every plan that has it, in this call and later ones)."""
        batch = self._incremental_batch(x)
        reasons: list[str] = []
        failed: set[tuple] = set()
        for plan in list(plans):
            if any(st.pair in failed for st in plan.stages):
                continue
            if len(reasons) == MAX_TRIES:
                break
            with IncrementalOcclusion(scorer.module, scorer, x, base, plan, scorer.channels_last) as inc:
                try:
                    inc.check(clean, kind)
                except IncrementalUnavailable as err:
                    reasons.append(str(err))
                    if err.pair is not None:
                        failed.add(err.pair)
                        discard_plans(self.module, *window_args, err.pair, batch)
                    continue
                bar = None
                if self.opts["progress"]:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=x.shape[0] * len(starts[0]) * len(starts[1]), desc=self.name, leave=False)
                try:
                    return plan, inc.scores(x.shape[0], batch, kind, bar.update if bar else None)
                finally:
                    if bar is not None:
                        bar.close()
        raise IncrementalUnavailable(join_reasons(reasons) or "no split layer left to try")

    def _incremental(self, x: torch.Tensor, base: torch.Tensor, scorer: Scorer, clean: torch.Tensor, kind: str,
                     window: tuple[int, int], starts: tuple[list[int], list[int]]) -> torch.Tensor | None:
        """Scores of every occluded copy by incremental inference, or ``None`` (full forwards) with the reason in
        ``spec["incremental"]``."""
        mode = self.opts["incremental"]
        if mode is False:
            self.extra["incremental"] = {"used": False, "reason": "incremental=False"}
            return None
        # the split is planned (timed) in the memory format the model will see
        xp = x.contiguous(memory_format=torch.channels_last) if scorer.channels_last else x
        window_args = (xp, window, starts, self.opts["split_layer"])
        try:
            if scorer.target.kind == "unit":
                raise IncrementalUnavailable("unit targets read a layer inside the model")
            def verify(plan: Plan) -> None:
                with IncrementalOcclusion(scorer.module, scorer, x, base, plan, scorer.channels_last) as inc:
                    inc.check(clean, kind, crops="interior")

            plans = make_plans(self.module, *window_args, batch=self._incremental_batch(x), verify=verify)
            plan, scores = self._first_plan_that_passes(plans, x, base, scorer, clean, kind, window_args, starts)
        except IncrementalUnavailable as err:
            if mode is True:
                raise MethodError(f"occlusion: incremental inference is not possible: {err}") from err
            self.extra["incremental"] = {"used": False, "reason": str(err)}
            return None
        self.extra["incremental"] = plan.summary()
        return scores.to(clean.device)


def rise_masks(n: int, size: tuple[int, int], grid: int | tuple[int, int] = 7, p: float = 0.5,
               generator: torch.Generator | None = None, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RISE's random masks (Petsiuk et al. 2018, Sec. 3.2).

    A binary ``grid`` (``h x w`` cells, each 1 with probability ``p``) is upsampled bilinearly to
    ``(h + 1) C_H x (w + 1) C_W`` with cell size ``C = ceil(size / grid)``, then a ``size`` window is cropped at a
    uniformly random offset in ``[0, C_H) x [0, C_W)``.

    Shape:
        - Output: ``[n, 1, H, W]`` in [0, 1].
    """
    gh, gw = _pair(grid, "rise grid")
    h, w = size
    ch, cw = math.ceil(h / gh), math.ceil(w / gw)
    cells = (torch.rand((n, 1, gh, gw), generator=generator, device=device) < p).to(dtype)
    up = F.interpolate(cells, size=((gh + 1) * ch, (gw + 1) * cw), mode="bilinear", align_corners=False)
    dy = torch.randint(0, ch, (n,), generator=generator, device=device).tolist()
    dx = torch.randint(0, cw, (n,), generator=generator, device=device).tolist()
    return torch.stack([up[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)]).clamp_(0.0, 1.0)


@register
class RISE(Method):
    """RISE (Petsiuk et al. 2018): ``S = 1 / (N p) * sum_i f(x * M_i) M_i`` over ``N`` random masks.

    ``f`` is the target class's probability (``score="auto"``; the raw value for callable and unit targets).
    The same masks are used for every image of the batch; masked-out pixels take the baseline (default 0, the
    mean colour for normalised inputs). Values are ``[B, 1, H, W]``: one map for all channels.

    Options:
        n_masks (default 2000; the paper uses several thousand), grid (7), p (0.5), baseline, blur_sigma,
        score (``"auto"``, ``"prob"``, ``"logit"``), seed or generator (the masks' ``torch.Generator``).
    """

    name = "rise"
    title = "RISE"
    reference = "Petsiuk, Das, Saenko 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models"
    options: ClassVar[dict[str, Any]] = {"n_masks": 2000, "grid": 7, "p": 0.5, "baseline": 0.0,
                                         "blur_sigma": 10.0, "score": "auto", "seed": 0, "generator": None}
    display: ClassVar[dict[str, Any]] = {"sign": "positive", "reduce": "mean"}

    def check_options(self) -> None:
        n, p = self.opts["n_masks"], self.opts["p"]
        if not isinstance(n, int) or n < 1:
            raise MethodError(f"rise: n_masks must be a positive int, got {n!r}")
        if not 0 < float(p) <= 1:
            raise MethodError(f"rise: p must lie in (0, 1], got {p!r}")
        _pair(self.opts["grid"], "rise grid")
        check_baseline(self.name, self.opts["baseline"])

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        b, _, h, w = x.shape
        mb, n_masks, p = self.opts["max_batch"], self.opts["n_masks"], float(self.opts["p"])
        kind = _score_kind(self.opts["score"], scorer, self.name)
        scorer.bind_clean(x, mb)
        base = make_baseline(x, self.opts["baseline"], self.opts["blur_sigma"])
        gen = self.opts["generator"]
        if gen is None:
            gen = torch.Generator(device=x.device).manual_seed(int(self.opts["seed"]))
        sal = torch.zeros(b, 1, h, w, dtype=x.dtype, device=x.device)
        for chunk in _chunks(n_masks, RISE_MASK_CHUNK, self.opts["progress"], self.name):
            m = rise_masks(len(chunk), (h, w), self.opts["grid"], p, gen, x.device, x.dtype)

            def make(jobs: torch.Tensor, m: torch.Tensor = m) -> torch.Tensor:
                i, r = jobs // b, jobs % b
                mi = m[i.to(x.device)]
                return mi * x[r] + (1 - mi) * base[r]

            rows = torch.arange(b).repeat(len(chunk))
            scores = scorer.map_scores(make, rows, self.forward_batch(x), kind=kind)
            scores = scores.view(len(chunk), b).to(x.dtype)
            sal += torch.einsum("nb,nhw->bhw", scores, m[:, 0])[:, None]
        return sal / (n_masks * p)
