"""Gradient methods: saliency, input x gradient, guided backprop, deconvnet, integrated gradients, SmoothGrad.

All of them share ``input_gradients`` (one forward, ``torch.autograd.grad`` w.r.t. the input, so parameter
``.grad`` fields are never written); guided backprop and deconvnet only add a backward rule for the ReLUs
(:func:`cnnscope.capture.relu_rule`), integrated gradients and SmoothGrad only choose the points where the
gradient is taken.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..batching import chunks, track
from ..capture import relu_rule
from ..errors import MethodError, unknown
from .base import METHODS, Method, get_method, register_method
from .baselines import check_baseline, make_baseline
from .targets import Scorer

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
SMOOTHGRAD_VARIANTS = ("smoothgrad", "squared", "vargrad")
#: images per forward/backward of the gradient methods when ``batch_size=None``, on every device
GRADIENT_BATCH_SIZE: dict[str, int] = {"cpu": 32, "gpu": 32}


def input_gradients(module: nn.Module, scorer: Scorer, x: torch.Tensor, rows: torch.Tensor,
                    rule: str | None = None, bind: bool = False, report: dict | None = None) -> torch.Tensor:
    """Gradient of the target's score w.r.t. the input batch ``x`` (row ``j`` explains image ``rows[j]``).

    Args:
        rule: ``None`` (plain gradient), ``"guided"`` or ``"deconv"`` (backward rule for every ReLU, see
            :func:`cnnscope.capture.relu_rule`).
        bind: ``x`` is the clean batch: resolve top-1 classes from this forward.
        report: filled by :func:`~cnnscope.capture.relu_rule` (what the rule overrode) when ``rule`` is set.

    Shape:
        - x: ``[N, C, H, W]``; Output: ``[N, C, H, W]``.
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), (relu_rule(module, rule, report=report) if rule else nullcontext()):
        out, acts = scorer.forward(xg)
        if bind:
            scorer.target.bind(out, acts, rows)
        score = scorer.target.score(out, acts, rows)
        (grad,) = torch.autograd.grad(score.sum(), xg, allow_unused=True)
    return torch.zeros_like(xg) if grad is None else grad


class GradientMethod(Method):
    """A method computed from input gradients at the given points (subclasses set ``rule``/``combine``).

    ``batch_size`` bounds the images per forward/backward (default: 32 on every device).
    """

    rule: ClassVar[str | None] = None
    default_batch_size = GRADIENT_BATCH_SIZE

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        return self.compute_rows(x, scorer, None)

    def compute_rows(self, x: torch.Tensor, scorer: Scorer, rows: torch.Tensor | None) -> torch.Tensor:
        """Attributions of a batch whose row ``j`` belongs to image ``rows[j]`` (``None``: the clean batch).

        Shape:
            - x: ``[N, C, H, W]``; Output: ``[N, C, H, W]``.
        """
        bind = rows is None
        idx = torch.arange(x.shape[0]) if rows is None else rows
        report: dict = {}
        parts = [self.combine(x[j], input_gradients(self.module, scorer, x[j], idx[j], self.rule, bind, report))
                 for j in track(list(chunks(x.shape[0], self.batch_size(x))), self.opts["progress"], self.name)]
        if self.rule:
            self.extra["relu_rule"] = {"rule": self.rule, **report}
        return torch.cat(parts)

    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Attributions from inputs and their gradients (the gradient itself by default)."""
        return grad


@register_method
class Saliency(GradientMethod):
    """Vanilla gradient ``d score / d x`` (Simonyan et al. 2013); displayed as ``max_c |grad|``."""

    name = "saliency"
    title = "Saliency"
    reference = "Simonyan, Vedaldi, Zisserman 2013, Deep Inside Convolutional Networks"


@register_method
class InputXGradient(GradientMethod):
    """``x * d score / d x`` (Shrikumar et al. 2016)."""

    name = "input_x_gradient"
    title = "Input x gradient"
    reference = "Shrikumar et al. 2016, Not Just a Black Box"
    display: ClassVar[dict[str, Any]] = {"sign": "absolute", "reduce": "sum"}

    def combine(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x * grad


@register_method
class GuidedBackprop(GradientMethod):
    """Gradient with the guided ReLU rule ``g * 1[x > 0] * 1[g > 0]`` (Springenberg et al. 2014); ReLU6 too."""

    name = "guided_backprop"
    title = "Guided backprop"
    reference = "Springenberg et al. 2014, Striving for Simplicity: The All Convolutional Net"
    rule = "guided"


@register_method
class Deconvnet(GradientMethod):
    """Gradient with the deconvnet ReLU rule ``max(g, 0)`` (Zeiler & Fergus 2013, as a backward rule).

    The forward masks of ReLUs are ignored and max-pooling routes through its switches (autograd's max-pool
    backward), which is Zeiler & Fergus' reconstruction for networks whose only nonlinearities are ReLUs and
    max pooling; ``cnnscope.zf`` has the explicit unpooling/transposed-filter deconvnet.
    """

    name = "deconvnet"
    title = "Deconvnet"
    reference = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"
    rule = "deconv"


#: relative completeness gap ``|sum(attributions) - (f(x) - f(x'))| / |f(x) - f(x')|`` above which integrated
#: gradients warns
COMPLETENESS_THRESHOLD = 0.1


class CompletenessWarning(UserWarning):
    """Integrated gradients whose attributions do not add up to ``f(x) - f(x')`` (too few ``n_steps``)."""


def completeness(total: torch.Tensor, diff: torch.Tensor, f_x: torch.Tensor, f_base: torch.Tensor, n_steps: int
                 ) -> dict:
    """The completeness record of integrated gradients (see :class:`IntegratedGradients`); warns once per call
    when the largest relative gap exceeds :data:`COMPLETENESS_THRESHOLD`.

    Shape:
        - total, diff, f_x, f_base: ``[B]`` (sums of the attributions, ``f(x) - f(x')``, ``f(x)``, ``f(x')``).
    """
    delta = total - diff
    tiny = 1e-6 * (f_x.abs() + f_base.abs()) + 1e-12  # f(x) = f(x') to float precision: no relative gap
    rel = [None if float(d.abs()) <= float(t) else float(e.abs() / d.abs()) for d, e, t in zip(diff, delta, tiny)]
    worst = max((r for r in rel if r is not None), default=None)
    if worst is not None and worst > COMPLETENESS_THRESHOLD:
        i = rel.index(worst)
        need = int(np.ceil(n_steps * worst / COMPLETENESS_THRESHOLD))
        warnings.warn(f"integrated gradients: the attributions of image {i} sum to {float(total[i]):.4g}, not "
                      f"f(x) - f(x') = {float(diff[i]):.4g} (gap {worst:.0%} > {COMPLETENESS_THRESHOLD:.0%}); raise "
                      f"n_steps (now {n_steps}; try {need}: the gap falls roughly as 1/n_steps) or, if it does not "
                      "fall, use baseline='blur' (normalisation layers make the score jump next to a zero baseline)",
                      CompletenessWarning, stacklevel=2)
    return {"sum_attributions": total.tolist(), "score_difference": diff.tolist(), "delta": delta.tolist(),
            "relative_gap": rel, "threshold": COMPLETENESS_THRESHOLD}


def quadrature(n_steps: int, kind: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of a rule for ``integral_0^1 f(alpha) d alpha``.

    ``gausslegendre`` (exact for polynomials of degree ``2 n - 1``), or the Riemann sums ``riemann_left``,
    ``riemann_right``, ``riemann_middle`` (steps ``1/n``) and ``riemann_trapezoid`` (``n`` points incl. both ends).
    """
    n = int(n_steps)
    if kind == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if kind == "riemann_trapezoid":
        if n < 2:
            raise MethodError("riemann_trapezoid needs n_steps >= 2")
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(kind)
    if offset is None:
        raise MethodError(unknown("quadrature", kind, QUADRATURES))
    return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


@register_method
class IntegratedGradients(GradientMethod):
    """``(x - x') * integral_0^1 grad f(x' + a (x - x')) da`` (Sundararajan et al. 2017).

    Options:
        baseline: ``x'``: a number (in the model's input space), a tensor or ``"blur"``; default ``0``.
        n_steps: quadrature points (default 50).
        quadrature: ``"gausslegendre"`` (default) or ``"riemann_left|right|middle|trapezoid"``.
        batch_size: interpolated images per forward/backward (Captum's ``internal_batch_size``).
        blur_sigma: sigma in pixels of the ``"blur"`` baseline.

    The completeness axiom says ``sum(attributions) = f(x) - f(x')``; the integral is approximated with
    ``n_steps`` points, so every call measures how far it is. The result's ``spec["completeness"]`` holds, per
    image, ``sum(attributions)``, ``f(x) - f(x')``, their difference ``delta`` and the relative gap
    ``|delta| / |f(x) - f(x')|`` (``None`` where ``f(x) = f(x')``). A gap above :data:`COMPLETENESS_THRESHOLD`
    warns (:class:`CompletenessWarning`) with an ``n_steps`` to try: the gap of a quadrature shrinks about as
    ``1 / n_steps`` on piecewise-linear (ReLU) paths, and more slowly where the score changes abruptly near the
    baseline (normalisation layers make ``f`` nearly constant along ``x' + a (x - x')`` except close to ``a = 0``
    when ``x' = 0``): there a baseline other than 0 (``"blur"``) helps more than steps.
    """

    name = "integrated_gradients"
    title = "Integrated gradients"
    reference = "Sundararajan, Taly, Yan 2017, Axiomatic Attribution for Deep Networks"
    options: ClassVar[dict[str, Any]] = {"baseline": 0.0, "n_steps": 50, "quadrature": "gausslegendre",
                                         "blur_sigma": 10.0}
    display: ClassVar[dict[str, Any]] = {"sign": "absolute", "reduce": "sum"}

    def check_options(self) -> None:
        n, q = self.opts["n_steps"], self.opts["quadrature"]
        if not isinstance(n, int) or n < 1:
            raise MethodError(f"integrated_gradients: n_steps must be a positive int, got {n!r}")
        if q not in QUADRATURES:
            raise MethodError(unknown("quadrature", q, QUADRATURES))
        check_baseline(self.name, self.opts["baseline"])

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        bs = self.batch_size(x)
        clean = scorer.bind_clean(x, bs)
        values = self.compute_rows(x, scorer, torch.arange(x.shape[0]))
        base = make_baseline(x, self.opts["baseline"], self.opts["blur_sigma"])
        f_base = scorer.map_scores(lambda j: base[j], torch.arange(x.shape[0]), bs)
        total = values.flatten(1).sum(dim=1).float()
        diff = clean.float() - f_base
        self.extra["completeness"] = completeness(total, diff, clean.float(), f_base, self.opts["n_steps"])
        return values

    def compute_rows(self, x: torch.Tensor, scorer: Scorer, rows: torch.Tensor | None) -> torch.Tensor:
        rows = torch.arange(x.shape[0]) if rows is None else rows
        base = make_baseline(x, self.opts["baseline"], self.opts["blur_sigma"])
        n = self.opts["n_steps"]
        a_np, w_np = quadrature(n, self.opts["quadrature"])
        alphas = torch.as_tensor(a_np, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(w_np, dtype=x.dtype, device=x.device)
        total = torch.zeros_like(x)
        jobs_all = torch.arange(x.shape[0] * n)
        for part in track(list(chunks(len(jobs_all), self.batch_size(x))), self.opts["progress"], self.name):
            jobs = jobs_all[part]
            r, k = jobs // n, jobs % n
            a = alphas[k.to(x.device)].view(-1, 1, 1, 1)
            points = base[r] + a * (x[r] - base[r])
            grad = input_gradients(self.module, scorer, points, rows[r])
            total.index_add_(0, r.to(x.device), grad * weights[k.to(x.device)].view(-1, 1, 1, 1))
        return (x - base) * total


@register_method
class SmoothGrad(Method):
    """Average of a gradient method over noisy copies ``x + N(0, sigma^2)`` (Smilkov et al. 2017).

    ``sigma = noise_level * (max(x) - min(x))`` per image. Variants: ``"smoothgrad"`` (mean of the
    attributions), ``"squared"`` (mean of their squares, SmoothGrad-Squared, Hooker et al. 2019) and
    ``"vargrad"`` (their variance, Adebayo et al. 2018).

    Options:
        base: the wrapped method (``saliency``, ``input_x_gradient``, ``guided_backprop``, ``deconvnet``,
            ``integrated_gradients``); base_options: its options (dict).
        noise_level, n_samples, variant; seed or generator: the noise's ``torch.Generator`` (reproducible).
    """

    name = "smoothgrad"
    title = "SmoothGrad"
    reference = "Smilkov et al. 2017, SmoothGrad: removing noise by adding noise"
    options: ClassVar[dict[str, Any]] = {"base": "saliency", "noise_level": 0.15, "n_samples": 25,
                                         "variant": "smoothgrad", "seed": 0, "generator": None,
                                         "base_options": None}
    batch_independent = False
    default_batch_size = GRADIENT_BATCH_SIZE

    def check_options(self) -> None:
        bases = [n for n, c in METHODS.items() if issubclass(c, GradientMethod)]
        if self.opts["base"] not in bases:
            raise MethodError(unknown("base method for smoothgrad", str(self.opts["base"]), bases))
        if self.opts["variant"] not in SMOOTHGRAD_VARIANTS:
            raise MethodError(unknown("smoothgrad variant", str(self.opts["variant"]), SMOOTHGRAD_VARIANTS))
        n = self.opts["n_samples"]
        if not isinstance(n, int) or n < 1:
            raise MethodError(f"smoothgrad: n_samples must be a positive int, got {n!r}")
        if float(self.opts["noise_level"]) < 0:
            raise MethodError("smoothgrad: noise_level must be >= 0")
        if self.opts["variant"] != "smoothgrad":
            self.display = {"sign": "positive", "reduce": "sum"}

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        bs = self.batch_size(x)
        scorer.bind_clean(x, bs)
        base = get_method(self.opts["base"])(self.model, batch_size=self.opts["batch_size"],
                                             eval_mode=self.opts["eval_mode"], **(self.opts["base_options"] or {}))
        gen = self.opts["generator"]
        if gen is None:
            gen = torch.Generator(device=x.device).manual_seed(int(self.opts["seed"]))
        n = self.opts["n_samples"]
        sigma = float(self.opts["noise_level"]) * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
        s1, s2 = torch.zeros_like(x), torch.zeros_like(x)
        jobs_all = torch.arange(x.shape[0] * n)
        for part in track(list(chunks(len(jobs_all), bs)), self.opts["progress"], self.name):
            r = jobs_all[part] // n
            rd = r.to(x.device)
            noise = torch.randn((len(r), *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
            a = base.compute_rows(x[r] + sigma[rd].view(-1, 1, 1, 1) * noise, scorer, r)
            s1.index_add_(0, rd, a)
            if self.opts["variant"] != "smoothgrad":
                s2.index_add_(0, rd, a * a)
        mean = s1 / n
        if self.opts["variant"] == "smoothgrad":
            return mean
        if self.opts["variant"] == "squared":
            return s2 / n
        return s2 / n - mean * mean
