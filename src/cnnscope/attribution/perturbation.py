"""Perturbation methods: occlusion (Zeiler & Fergus 2013) and RISE (Petsiuk et al. 2018).

Both score many perturbed copies of each image without gradients, ``batch_size`` copies per forward, on the model's
fast forward (:mod:`cnnscope.fastforward`: a batch-norm-folded copy where it is exact; incremental inference for
occlusion).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..batching import chunks, track
from ..errors import CnnscopeError, MethodError
from ..fastforward import FastForward, IncrementalUnavailable, fast_forward
from ..fastforward.approximate import check_tau
from .base import Method, register_method
from .baselines import check_baseline, make_baseline
from .targets import Scorer

#: RISE masks are drawn this many at a time, so they do not depend on the batch size.
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


def fast_scorer(method: Method, x: torch.Tensor, scorer: Scorer, rows: torch.Tensor | None = None) -> Scorer:
    """``scorer`` on the model's fast forward for no-gradient passes over perturbed copies of ``x``.

    The fast forward (:func:`cnnscope.fastforward.fast_forward`) is a copy with batch norms folded into their
    convolutions, used only when it reproduces the target's clean scores of ``x`` (``rows``: the image of each row
    of ``x``; the target must be bound on them). Unit targets read a layer inside the model and keep the model
    itself. ``spec["fold_bn"]`` says what was used and why.
    """
    if scorer.target.kind == "unit" or not method.opts.get("fold_bn", True):
        method.extra["fold_bn"] = {"used": False, "reason": "unit target" if scorer.target.kind == "unit"
                                   else "fold_bn=False"}
        return scorer
    rows = torch.arange(x.shape[0]) if rows is None else rows
    ff = fast_forward(method.model, x, score=lambda out: scorer.target.score(out, {}, rows),
                      expected=scorer.target.clean[rows.to(scorer.target.clean.device)])
    method.extra["fold_bn"] = ff.report
    return _on(ff, scorer)


def _on(ff: FastForward, scorer: Scorer) -> Scorer:
    """``scorer`` running ``ff.module`` (itself when that is the model)."""
    if not ff.folded:
        return scorer
    return Scorer(ff.module, scorer.target, eval_mode=scorer.eval_mode, channels_last=scorer.channels_last)


@register_method
class Occlusion(Method):
    """Occlusion sensitivity (Zeiler & Fergus 2013): how much the score drops when a window is covered.

    Every window position (all channels at once) is filled with the baseline and the drop
    ``f(x) - f(x_occluded)`` is spread over the window's pixels; a pixel's value is the mean drop of the
    windows that cover it. Values have the input's shape (equal across channels), as Captum's ``Occlusion``
    with a window spanning all channels.

    Options:
        window: ``int`` or ``(h, w)`` in pixels (default 32); stride: ``int`` or ``(h, w)`` (default 16).
        baseline: the fill: a number in the model's input space (default 0, the mean colour for normalised
            inputs), a tensor, or ``"blur"`` (a Gaussian-blurred copy, ``blur_sigma`` pixels).
        score: ``"logit"`` (default) or ``"prob"``.
        incremental: ``"auto"`` (default) scores the occluded copies by incremental inference where the model
            allows it, else by full forwards; ``True`` raises instead of falling back; ``False`` always runs full
            forwards. split_layer: the layer (or chain of layers) it splits the model at (default: chosen).
        approximate: ``None`` (default, exact) or Krypton's projective-field threshold in (0, 1]: each layer's
            changed patch is cut to that fraction of the layer, for speed (see docs/fastforward.md).
        fold_bn: run the forwards on a copy with batch norms folded into their convolutions where that is exact.

    ``spec["incremental"]`` and ``spec["fold_bn"]`` say how the copies were scored (docs/fastforward.md).
    """

    name = "occlusion"
    title = "Occlusion"
    reference = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"
    options: ClassVar[dict[str, Any]] = {"window": 32, "stride": 16, "baseline": 0.0, "blur_sigma": 10.0,
                                         "score": "logit", "incremental": "auto", "split_layer": None,
                                         "approximate": None, "fold_bn": True}
    display: ClassVar[dict[str, Any]] = {"sign": "positive", "reduce": "mean"}
    #: incremental passes run crops and the low-resolution rest of the model, which use a CPU's caches well at
    #: larger batches than full forwards do (benchmarks/RESULTS.md)
    default_batch_size: ClassVar[dict[str, int]] = {"cpu": 32, "gpu": 64}

    def check_options(self) -> None:
        wh, ww = _pair(self.opts["window"], "occlusion window")
        sh, sw = _pair(self.opts["stride"], "occlusion stride")
        if sh > wh or sw > ww:
            raise MethodError(f"occlusion: stride {sh}x{sw} larger than the window {wh}x{ww} leaves pixels "
                              "uncovered")
        check_baseline(self.name, self.opts["baseline"])
        if self.opts["incremental"] not in ("auto", True, False):
            raise MethodError(f"occlusion: incremental must be 'auto', True or False, got {self.opts['incremental']!r}")
        try:
            check_tau(self.opts["approximate"])
        except CnnscopeError as err:
            raise MethodError(f"occlusion: {err}") from None
        if self.opts["approximate"] is not None and self.opts["incremental"] is False:
            raise MethodError("occlusion: approximate needs incremental inference; drop incremental=False")

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        b, c, h, w = x.shape
        kind = _score_kind(self.opts["score"], scorer, self.name)
        clean = scorer.bind_clean(x, self.batch_size(x)).float()
        if kind == "prob":
            clean = scorer.map_scores(lambda j: x[j], torch.arange(b), self.batch_size(x), kind=kind)
        base = make_baseline(x, self.opts["baseline"], self.opts["blur_sigma"])
        (wh, ww), (sh, sw) = _pair(self.opts["window"], "window"), _pair(self.opts["stride"], "stride")
        windows = ([(y, min(y + wh, h)) for y in window_starts(h, wh, sh)],
                   [(v, min(v + ww, w)) for v in window_starts(w, ww, sw)])
        scores = self._occluded_scores(x, base, scorer, clean, kind, windows)
        drops = clean.cpu().repeat_interleave(len(windows[0]) * len(windows[1])) - scores.cpu()
        return _spread(drops.view(b, len(windows[0]), len(windows[1])), windows, (h, w)).to(
            device=x.device, dtype=x.dtype).expand(b, c, h, w).clone()

    def _occluded_scores(self, x: torch.Tensor, base: torch.Tensor, scorer: Scorer, clean: torch.Tensor, kind: str,
                         windows: tuple[list, list]) -> torch.Tensor:
        """The score of every (image, window) copy, row-major windows: incremental inference where it applies,
        else full forwards; ``spec["incremental"]`` says which and why."""
        mode, bs = self.opts["incremental"], self.batch_size(x)
        fast = None
        if mode is not False and scorer.target.kind != "unit":
            ff = fast_forward(self.model, x, fold=self.opts["fold_bn"], expected=clean,
                              score=lambda out: scorer.target.score(out, {}, None, kind))
            self.extra["fold_bn"] = ff.report
            try:
                scores, self.extra["incremental"] = ff.occlusion_scores(
                    x, base, windows, lambda out, rows: scorer.target.score(out, {}, rows, kind), clean,
                    batch_size=bs, channels_last=scorer.channels_last, split_layer=self.opts["split_layer"],
                    approximate=self.opts["approximate"], progress=self.opts["progress"])
                return scores
            except IncrementalUnavailable as err:
                if mode is True:
                    raise MethodError(f"occlusion: incremental inference is not possible: {err}") from err
                self.extra["incremental"] = {"used": False, "reason": str(err)}
            fast = _on(ff, scorer)
        else:
            self.extra["incremental"] = {"used": False, "reason": "incremental=False" if mode is False else
                                         "unit targets read a layer inside the model"}
        fast = fast_scorer(self, x, scorer) if fast is None else fast
        n_win = len(windows[0]) * len(windows[1])
        ys, xs = (torch.tensor([s for s, _ in ws], device=x.device) for ws in windows)
        yy, xx = torch.arange(x.shape[-2], device=x.device), torch.arange(x.shape[-1], device=x.device)
        wh, ww = windows[0][0][1] - windows[0][0][0], windows[1][0][1] - windows[1][0][0]

        def make(jobs: torch.Tensor) -> torch.Tensor:
            jobs = jobs.to(x.device)
            r, win = jobs // n_win, jobs % n_win
            y0, x0 = ys[win // len(xs)], xs[win % len(xs)]
            my = (yy[None] >= y0[:, None]) & (yy[None] < y0[:, None] + wh)
            mx = (xx[None] >= x0[:, None]) & (xx[None] < x0[:, None] + ww)
            return torch.where((my[:, :, None] & mx[:, None, :])[:, None], base[r], x[r])

        rows = torch.arange(x.shape[0]).repeat_interleave(n_win)
        return fast.map_scores(make, rows, bs, kind=kind, progress=self.opts["progress"], desc=self.name).cpu()


def _spread(drops: torch.Tensor, windows: tuple[list, list], size: tuple[int, int]) -> torch.Tensor:
    """Each pixel's mean drop over the windows that cover it: ``[B, 1, H, W]`` from ``drops`` ``[B, rows, cols]``.

    A window covers rows ``Y`` and columns ``X``, so the sums are ``Ry^T D Rx`` with the windows' row and column
    indicator matrices.
    """
    (h, w), dt = size, drops.dtype
    ry = torch.zeros(len(windows[0]), h, dtype=dt)
    rx = torch.zeros(len(windows[1]), w, dtype=dt)
    for k, (s, e) in enumerate(windows[0]):
        ry[k, s:e] = 1
    for k, (s, e) in enumerate(windows[1]):
        rx[k, s:e] = 1
    total = torch.einsum("iy,bij,jx->byx", ry, drops, rx)
    count = torch.einsum("iy,jx->yx", ry, rx)
    return (total / count.clamp(min=1))[:, None]


def rise_masks(n: int, size: tuple[int, int], *, grid: int | tuple[int, int] = 7, p: float = 0.5,
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


@register_method
class RISE(Method):
    """RISE (Petsiuk et al. 2018): ``S = 1 / (N p) * sum_i f(x * M_i) M_i`` over ``N`` random masks.

    ``f`` is the target class's probability (``score="auto"``; the raw value for callable and unit targets).
    The same masks are used for every image of the batch; masked-out pixels take the baseline (default 0, the
    mean colour for normalised inputs). Values are ``[B, 1, H, W]``: one map for all channels.

    Options:
        n_masks (default 2000; the paper uses several thousand), grid (7), p (0.5), baseline, blur_sigma,
        score (``"auto"``, ``"prob"``, ``"logit"``), seed or generator (the masks' ``torch.Generator``),
        fold_bn (run the masked copies on a batch-norm-folded copy of the model where that is exact).
    """

    name = "rise"
    title = "RISE"
    reference = "Petsiuk, Das, Saenko 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models"
    options: ClassVar[dict[str, Any]] = {"n_masks": 2000, "grid": 7, "p": 0.5, "baseline": 0.0,
                                         "blur_sigma": 10.0, "score": "auto", "seed": 0, "generator": None,
                                         "fold_bn": True}
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
        bs, n_masks, p = self.batch_size(x), self.opts["n_masks"], float(self.opts["p"])
        kind = _score_kind(self.opts["score"], scorer, self.name)
        scorer.bind_clean(x, bs)
        fast = fast_scorer(self, x, scorer)
        base = make_baseline(x, self.opts["baseline"], self.opts["blur_sigma"])
        gen = self.opts["generator"]
        if gen is None:
            gen = torch.Generator(device=x.device).manual_seed(int(self.opts["seed"]))
        sal = torch.zeros(b, 1, h, w, dtype=x.dtype, device=x.device)
        for part in track(list(chunks(n_masks, RISE_MASK_CHUNK)), self.opts["progress"], self.name):
            n = part.stop - part.start
            m = rise_masks(n, (h, w), grid=self.opts["grid"], p=p, generator=gen, device=x.device, dtype=x.dtype)

            def make(jobs: torch.Tensor, m: torch.Tensor = m) -> torch.Tensor:
                i, r = jobs // b, jobs % b
                mi = m[i.to(x.device)]
                return mi * x[r] + (1 - mi) * base[r]

            scores = fast.map_scores(make, torch.arange(b).repeat(n), bs, kind=kind).view(n, b).to(x.dtype)
            sal += torch.einsum("nb,nhw->bhw", scores, m[:, 0])[:, None]
        return sal / (n_masks * p)
