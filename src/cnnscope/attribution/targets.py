"""What to explain: a class (top-1, index, label), any callable of the outputs, or one unit inside the model.

A target is given to :func:`~cnnscope.attribution.attribute` as

* ``None`` or ``"top"``: the top-1 class of each image (decided on the clean input);
* an ``int``: a class index; a ``str``: a class label (``"tabby"``, case-insensitive, unique prefixes allowed);
* a sequence or 1-D tensor of those, one per image (``[281, "tiger cat", None]``);
* a callable ``outputs -> Tensor[B]`` (any scalar per image computed from the model's outputs);
* a :class:`cnnscope.Unit` (``cnnscope.unit(layer, channel, position=None)``): one channel of an inner layer,
  read with :func:`cnnscope.units.read_unit` (``position=None``: its mean over positions; ``(row, col)`` or
  ``"center"``: one neuron; ``"max"``: its strongest position per image).

Class indices are non-negative; ``-1`` is not "the top class" (use ``None``).

Internally each call builds a fresh :class:`Target`; a :class:`Scorer` runs the model and reads the target's
score, keeping the :class:`~cnnscope.capture.Capture` a unit target needs open for the whole call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..batching import chunks, track
from ..capture import Capture, first_tensor
from ..errors import CnnscopeError, unknown
from ..units import Unit, read_unit

if TYPE_CHECKING:
    from ..models import LoadedModel

SCORE_KINDS = ("logit", "prob")
#: a class target not bound yet: the top-1 class, decided on the clean input (never a user's value)
_TOP1 = -1


class TargetError(CnnscopeError, ValueError):
    """A target that does not fit the model: class out of range, unknown label, wrong count per image."""


def _index(value: int) -> int:
    if value < 0:
        raise TargetError(f"class target {value} is negative; class indices start at 0 (give None or 'top' for "
                          "the top-1 class)")
    return value


def _class_of(item: object, model: LoadedModel | None) -> int:
    """One class target (index, label, or ``None``/"top" -> the internal top-1 marker) as an index."""
    if item is None or (isinstance(item, str) and item.strip().lower() in ("top", "top1", "top-1")):
        return _TOP1
    if isinstance(item, (bool, np.bool_)):
        raise TargetError(f"a class target must be an index or a label, got {item!r}")
    if isinstance(item, (int, np.integer)) or (isinstance(item, torch.Tensor) and item.ndim == 0):
        return _index(int(item))
    if isinstance(item, str):
        if item.strip().lstrip("-").isdigit():
            return _index(int(item))
        if model is None:
            raise TargetError(f"class label {item!r} needs class names; give a class index")
        try:
            return model.class_index(item)
        except CnnscopeError as err:
            raise TargetError(f"{err} (wrap(module, labels=...) names the classes)") from None
    raise TargetError(f"cannot use {type(item).__name__} as a class target; give None, an index, a label, a "
                      "list of those (one per image), a callable outputs -> Tensor[B] or cnnscope.unit(layer, "
                      "channel)")


class Target:
    """The target of one attribution call, bound to one batch (internal; :func:`parse_target` builds it).

    Attributes:
        kind: ``"class"``, ``"callable"`` or ``"unit"``.
        classes: ``LongTensor[B]`` of class indices for class targets (``_TOP1`` until a top-1 class is bound).
        clean: the target's score on each clean input once bound (``Tensor[B]``).
        layers: layers whose activations the score needs (a unit target's layer).
    """

    def __init__(self, kind: str, batch: int, classes: list[int] | None = None,
                 fn: Callable[[Any], torch.Tensor] | None = None, unit_: Unit | None = None,
                 labels: Sequence[str] | None = None, given: object = None) -> None:
        self.kind = kind
        self.batch = batch
        self.fn = fn
        self.unit = unit_
        self.labels = labels
        self.given = given
        self.classes = torch.tensor(classes if classes is not None else [_TOP1] * batch, dtype=torch.long)
        self.clean: torch.Tensor | None = None
        self._bound = torch.zeros(batch, dtype=torch.bool)

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.unit.layer,) if self.unit is not None else ()

    @property
    def bound(self) -> bool:
        return bool(self._bound.all())

    # -- binding on the clean input -----------------------------------------------------------------
    def bind(self, outputs: object, acts: dict, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Resolve top-1 classes and check ranges from the outputs of the *clean* inputs ``rows``.

        Returns:
            The target's scores on those inputs (``Tensor[len(rows)]``, detached), also kept in :attr:`clean`.
        """
        rows_c = torch.arange(self.batch) if rows is None else rows.detach().cpu()
        if self.kind == "class":
            logits = self._logits(outputs)
            n_out = logits.shape[1]
            cls = self.classes[rows_c]
            top = logits.detach().argmax(dim=1).cpu()
            cls = torch.where(cls == _TOP1, top, cls)
            bad = [int(c) for c in cls if not 0 <= int(c) < n_out]
            if bad:
                raise TargetError(f"target class {bad[0]} is out of range: the model has {n_out} outputs "
                                  f"(classes 0..{n_out - 1})")
            self.classes[rows_c] = cls
        self._bound[rows_c] = True
        scores = self.score(outputs, acts, rows_c).detach()
        if self.clean is None:
            self.clean = torch.zeros(self.batch, dtype=scores.dtype, device=scores.device)
        self.clean[rows_c.to(scores.device)] = scores
        return scores

    # -- scoring ------------------------------------------------------------------------------------
    def _logits(self, outputs: object) -> torch.Tensor:
        logits = first_tensor(outputs)
        if logits is None or logits.ndim != 2:
            shape = None if logits is None else tuple(logits.shape)
            raise TargetError(f"a class target needs a model that returns [B, classes] outputs, got {shape}; "
                              "give a callable outputs -> Tensor[B] or unit(layer, channel) instead")
        return logits

    def score(self, outputs: object, acts: dict, rows: torch.Tensor | None = None, kind: str = "logit"
              ) -> torch.Tensor:
        """The target's value for each row of a batch whose row ``j`` derives from image ``rows[j]``.

        Args:
            outputs: the model's outputs for the batch (``None`` when the forward stopped early).
            acts: captured activations (for unit targets).
            rows: image index of each row (``None``: row ``j`` is image ``j``).
            kind: ``"logit"`` (the raw value) or ``"prob"`` (softmax probability; class targets only).

        Shape:
            - Output: ``[N]`` for an ``N``-row batch.
        """
        if kind not in SCORE_KINDS:
            raise TargetError(unknown("score kind", kind, SCORE_KINDS))
        if self.kind == "class":
            logits = self._logits(outputs)
            idx = torch.arange(logits.shape[0]) if rows is None else rows.detach().cpu()
            if not bool(self._bound[idx].all()):
                raise CnnscopeError("internal error: class target scored before it was bound")
            cls = self.classes[idx].to(logits.device)
            values = logits.float().softmax(dim=1) if kind == "prob" else logits
            return values.gather(1, cls[:, None])[:, 0]
        if kind == "prob":
            raise TargetError(f"score 'prob' needs a class target, not a {self.kind} target")
        if self.kind == "unit":
            return self._unit_score(acts[self.unit.layer])
        out = self.fn(outputs)
        n = first_tensor(outputs).shape[0] if first_tensor(outputs) is not None else None
        if not isinstance(out, torch.Tensor) or out.ndim != 1 or (n is not None and out.shape[0] != n):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TargetError(f"a callable target must return a 1-D Tensor with one value per row of the batch "
                              f"({n} rows), got {shape}; it is called on batches of perturbed copies too")
        return out

    def _unit_score(self, act: torch.Tensor) -> torch.Tensor:
        u = self.unit
        if act.ndim not in (2, 4):
            raise TargetError(f"unit target: layer {u.layer!r} outputs shape {tuple(act.shape)}; expected "
                              "[B, C] or [B, C, H, W]")
        return read_unit(act, u.channel, u.position, u.layer)

    # -- reporting ----------------------------------------------------------------------------------
    def class_list(self) -> list[int] | None:
        return [int(c) for c in self.classes] if self.kind == "class" else None

    def describe(self, i: int = 0) -> str:
        """Short text for image ``i`` (``"tabby (281)"``, ``"unit blocks.5.0 channel 3"``)."""
        if self.kind == "class":
            c = int(self.classes[i])
            name = self.labels[c] if self.labels is not None and 0 <= c < len(self.labels) else f"class {c}"
            return f"{name} ({c})"
        if self.kind == "unit":
            return f"unit {self.unit}"
        return f"callable {getattr(self.fn, '__name__', type(self.fn).__name__)}"

    def spec(self) -> dict:
        if self.kind == "class":
            given = self.given
            if isinstance(given, (list, tuple, torch.Tensor, np.ndarray)):
                given = [None if g is None else (g if isinstance(g, str) else int(g)) for g in list(given)]
            elif given is not None and not isinstance(given, str):
                given = int(given)
            return {"kind": "class", "given": given, "classes": self.class_list(),
                    "labels": [self.describe(i) for i in range(self.batch)] if self.bound else None}
        if self.kind == "unit":
            return self.unit.spec()
        return {"kind": "callable", "name": getattr(self.fn, "__name__", type(self.fn).__name__)}


def parse_target(target: object, batch: int, model: LoadedModel | None = None) -> Target:
    """Build the :class:`Target` of one call for a batch of ``batch`` images (see the module docstring).

    ``model`` turns labels into class indices (:meth:`~cnnscope.LoadedModel.class_index`) and names the classes.
    """
    labels = None if model is None else model.labels
    if isinstance(target, Unit):
        return Target("unit", batch, unit_=target, given=target)
    if isinstance(target, (list, tuple, np.ndarray)) or (isinstance(target, torch.Tensor) and target.ndim == 1):
        items = list(target)
        if len(items) != batch:
            raise TargetError(f"got {len(items)} targets for {batch} images; give one per image or a single one")
        return Target("class", batch, [_class_of(t, model) for t in items], labels=labels, given=target)
    if callable(target) and not isinstance(target, (str, torch.Tensor)):
        return Target("callable", batch, fn=target, given=target)
    c = _class_of(target, model)
    return Target("class", batch, [c] * batch, labels=labels, given=target)


class Scorer:
    """Runs the model on batches and scores a :class:`Target` (context manager).

    A unit target needs its layer captured: the scorer keeps one :class:`~cnnscope.capture.Capture` open for the
    whole call, so passes after the first stop as soon as that layer has run.
    """

    def __init__(self, module: nn.Module, target: Target, eval_mode: bool = True, channels_last: bool = False
                 ) -> None:
        self.module = module
        self.target = target
        self.eval_mode = eval_mode
        self.channels_last = channels_last
        self._cap: Capture | None = None

    def __enter__(self) -> Scorer:
        if self.target.layers:
            self._cap = Capture(self.module, self.target.layers, clone=True, stop_early=True,
                                eval_mode=self.eval_mode).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cap is not None:
            self._cap.close()
            self._cap = None

    def forward(self, x: torch.Tensor) -> tuple[object, dict]:
        """``(outputs, activations)`` for a batch (outputs are ``None`` when a unit pass stopped early).

        With ``channels_last`` a 4-D batch reaches the model in channels-last memory format (a differentiable copy,
        so input gradients still flow to ``x``).
        """
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._cap is None:
            return self.module(x), {}
        out = self._cap.run(x)
        return out, dict(self._cap.activations)

    def scores(self, x: torch.Tensor, rows: torch.Tensor | None = None, kind: str = "logit",
               bind: bool = False) -> torch.Tensor:
        """Forward ``x`` and return the target's score per row (binding the target when ``bind``)."""
        out, acts = self.forward(x)
        if bind:
            self.target.bind(out, acts, rows)
        return self.target.score(out, acts, rows, kind)

    @torch.no_grad()
    def bind_clean(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Bind the target on the clean batch ``x`` (``batch_size`` images per forward); returns the clean scores."""
        rows = torch.arange(x.shape[0])
        for part in chunks(x.shape[0], batch_size):
            self.scores(x[part], rows[part], bind=True)
        return self.target.clean

    @torch.no_grad()
    def map_scores(self, make: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, batch_size: int,
                   kind: str = "logit", progress: bool = False, desc: str = "") -> torch.Tensor:
        """Score ``len(rows)`` generated inputs in chunks: ``make(jobs)`` builds the inputs of job indices ``jobs``.

        Args:
            make: ``LongTensor[n] -> Tensor[n, C, H, W]`` (the perturbed inputs of those jobs).
            rows: image index of every job (``LongTensor[N]``).
            batch_size: at most this many inputs per forward (the memory bound).

        Shape:
            - Output: ``[N]`` scores, on the model output's device.
        """
        n = rows.shape[0]
        jobs_all = torch.arange(n)
        out: list[torch.Tensor] = []
        parts = list(chunks(n, batch_size))
        for part in track(parts, progress, desc or "batches", unit="batch"):
            out.append(self.scores(make(jobs_all[part]), rows[part], kind=kind).float())
        return torch.cat(out) if out else torch.zeros(0)
