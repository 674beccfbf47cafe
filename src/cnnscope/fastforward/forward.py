"""``FastForward``: the no-gradient forwards of a perturbation method, as fast as exactness allows.

:func:`fast_forward` gives the stand-in for one model in one call: a copy with batch norms folded into the
convolutions that feed them (:mod:`.fold_bn`) when that copy reproduces the model's scores on the call's images, else
the model itself. :meth:`FastForward.occlusion_scores` scores occluded copies by incremental inference
(:mod:`.incremental`) with a plan that is computed once per model and remembered across processes
(:mod:`.plan_cache`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..capture import canonical_layer, first_tensor, patch_outputs
from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from .approximate import check_tau
from .fold_bn import fold_batchnorm
from .incremental import IncrementalForward, Score, capture_clean
from .plan import CHECK_RTOL, MAX_TRIES, IncrementalUnavailable, Plan, Windows, join_reasons, make_plan
from .plan_cache import forget, lookup, plan_key, remember

#: Relative tolerance of the folded copy's check.
FOLD_RTOL = 1e-4


class FastForward:
    """The module a perturbation method runs its no-gradient forwards on, and what was decided about it.

    Attributes:
        model: the user's model.
        module: what runs: the folded copy or ``model`` itself.
        report: JSON-ready: ``{"used": True, "pairs": n, "max_score_difference": d}`` for the folded copy, else
            ``{"used": False, "reason": ...}``.
    """

    def __init__(self, model: nn.Module, module: nn.Module, report: dict) -> None:
        self.model, self.module, self.report = model, module, report

    @property
    def folded(self) -> bool:
        return self.module is not self.model

    def occlusion_scores(self, x: torch.Tensor, base: torch.Tensor, windows: Windows, score: Score,
                         clean: torch.Tensor, *, batch_size: int, channels_last: bool,
                         split_layer: str | Sequence[str] | None = None, approximate: float | None = None,
                         progress: bool = False) -> tuple[torch.Tensor, dict]:
        """Scores of every occluded copy by incremental inference, and a JSON-ready summary of the plan.

        Args:
            x, base: clean images and the baseline fill, ``[B, C, H, W]`` (model space).
            windows: the windows' ``[start, stop)`` pixels along the rows and along the columns.
            score: ``(outputs, rows) -> Tensor[N]``: the target's score of each copy (``rows``: its image).
            clean: each image's clean score (``Tensor[B]``), what the checks compare with.
            batch_size: occluded copies per forward.
            channels_last: hand 4-D tensors to the model in channels-last memory format.
            split_layer: the split layer, or a chain of them in forward order (default: chosen by estimated cost).
            approximate: Krypton's projective-field threshold in (0, 1] (:mod:`.approximate`); ``None``: exact.

        Returns:
            ``(scores, summary)``: ``scores[r * n_windows + k]`` is image ``r`` with window ``k`` (row-major) filled
            in, on the CPU.

        Raises:
            IncrementalUnavailable: the model or the options do not allow it (fall back to full forwards).
        """
        tau = check_tau(approximate)
        layers = _layers(split_layer)
        if layers is not None:  # plans (and the disk cache) use dotted names: an alias is its layer
            layers = tuple(canonical_layer(self.model, n) for n in layers)
        # the split is planned (timed) in the memory format the model will see
        xp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        key = plan_key(x, windows, batch=batch_size, layers=layers, tau=tau, folded=self.folded,
                       channels_last=channels_last)
        checker = _Checker(self.module, x, base, score, clean, channels_last, batch_size)
        reasons: list[str] = []
        exclude: list[str] = []
        for _ in range(MAX_TRIES):
            plan = lookup(self.model, key)
            if plan is None:
                try:
                    plan = make_plan(self.module, xp, windows, batch=batch_size, layers=layers, tau=tau,
                                     splices=checker.splices, verify=checker.verify, exclude=exclude,
                                     progress=progress)
                except IncrementalUnavailable as err:
                    plan = err
                except CnnscopeError:  # the user's mistake (an unknown split layer): said as it is
                    raise
                except torch.OutOfMemoryError:
                    raise
                except Exception as err:  # noqa: BLE001 - e.g. a model that asserts its input size: full forwards,
                    # for this call only (not remembered: the next call plans again, so nothing transient sticks)
                    reasons.append(f"the model cannot run the planning probes ({_brief(err)})")
                    break
                remember(self.model, key, plan)
            if isinstance(plan, IncrementalUnavailable):
                reasons.append(str(plan))
                break
            with IncrementalForward(self.module, plan, x, base, score, channels_last, batch_size,
                                    checker.clean(plan)) as inc:
                try:
                    try:
                        inc.check(clean)
                    except CnnscopeError:
                        raise
                    except Exception as err:  # noqa: BLE001 - the model refuses the crops: full forwards
                        raise IncrementalUnavailable(f"the model cannot run the crops ({_brief(err)})") from err
                except IncrementalUnavailable as err:
                    reasons.append(str(err))
                    forget(self.model, key)
                    if layers is not None and plan.origin != "disk":
                        break
                    if plan.origin != "disk" and err.pair is not None:  # a plan read from disk: plan anew
                        exclude.append(err.pair[1])
                    continue
                return inc.scores(progress), plan.summary()
        raise IncrementalUnavailable(join_reasons(reasons) or "no split layer left to try")


class _Checker:
    """Checks for planning, on the call's images: the clean activations of every layer a plan may split at are
    captured once per call."""

    def __init__(self, module: nn.Module, x: torch.Tensor, base: torch.Tensor, score: Score, clean: torch.Tensor,
                 channels_last: bool, batch_size: int) -> None:
        self.module, self.x, self.base, self.score, self.scores = module, x, base, score, clean
        self.cl, self.batch_size = channels_last, batch_size
        self.acts: dict[str, torch.Tensor] = {}

    def clean(self, plan: Plan | list[str]) -> dict[str, torch.Tensor]:
        missing = [n for n in (plan.layers if isinstance(plan, Plan) else plan) if n not in self.acts]
        if missing:
            self.acts.update(capture_clean(self.module, self.x, missing, self.cl))
        return self.acts

    @torch.no_grad()
    def splices(self, layer: str) -> bool:
        """Whether the model's scores depend on the input only through ``layer``: the images turned upside down go
        in, the layer's clean activation is swapped in for its output, and the clean scores must come out (a skip
        connection around the layer, or the input used again later, carries the turned images through)."""
        act = self.clean([layer])[layer]
        other = self.x.flip(-1, -2)
        other = other.contiguous(memory_format=torch.channels_last) if self.cl else other
        try:
            with patch_outputs(self.module, {layer: lambda y: act.clone()}):
                got = self.score(self.module(other), torch.arange(self.x.shape[0])).float().cpu()
        except Exception:  # a layer whose swapped output the model cannot take
            return False
        want = self.scores.float().cpu()
        return bool((got - want).abs().max() <= CHECK_RTOL * max(float(want.abs().max()), 1e-6))

    def verify(self, plan: Plan) -> None:
        with IncrementalForward(self.module, plan, self.x, self.base, self.score, self.cl, self.batch_size,
                                self.clean(plan)) as inc:
            inc.check(self.scores, geometries="interior")


def _brief(err: BaseException) -> str:
    """An exception as one short line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


def _layers(layer: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if layer is None:
        return None
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    if not layers or not all(isinstance(n, str) and n for n in layers):
        raise IncrementalUnavailable(f"split_layer must be a layer name or a list of them, got {layer!r}")
    return layers


@torch.no_grad()
def fast_forward(model: ModelLike, images: torch.Tensor, *, fold: bool = True,
                 score: Callable[[object], torch.Tensor] | None = None, expected: torch.Tensor | None = None
                 ) -> FastForward:
    """The stand-in for the model in no-gradient forwards on images like ``images`` (a model-space batch).

    A copy with eval-mode batch norms folded into their convolutions (cached per model state) is used when it
    reproduces the model on ``images``: ``score(copy(images))`` must equal ``expected`` (the model's scores of
    them) to a relative :data:`FOLD_RTOL`, or without those the copy's outputs must equal the model's. Not folded:
    ``fold=False``, batch norms in training mode, no convolution that feeds a batch norm, or a copy that differs (a
    skip connection that reads a convolution's output before its norm).
    """
    model = as_model(model).module
    x = images
    if not fold:
        return FastForward(model, model, {"used": False, "reason": "fold_bn=False"})
    if any(m.training for m in model.modules() if isinstance(m, _BatchNorm)):
        return FastForward(model, model, {"used": False, "reason": "batch norms in training mode"})
    folded, n = fold_batchnorm(model, x)
    if n == 0:
        return FastForward(model, model, {"used": False, "reason": "no convolution feeds a batch norm directly"})
    out = folded(x)
    if score is not None and expected is not None:
        got, want = score(out).float(), expected.float().to(x.device)
    else:
        got, want = first_tensor(out).float(), first_tensor(model(x)).float()
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if diff > FOLD_RTOL * max(float(want.abs().max()), 1e-6):
        return FastForward(model, model, {"used": False, "reason": f"the folded copy's scores differ by {diff:.3g}"})
    return FastForward(model, folded, {"used": True, "pairs": n, "max_score_difference": diff})
