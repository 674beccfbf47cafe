"""Projections of single activations computed as gradients with a backward rule: the deconvnet idea on any model.

:class:`RuleProjector` has the interface of :class:`~cnnscope.zf.deconvnet.DeconvNet` (``forward`` a batch,
``backward`` many single activations of it at once, ``receptive_field`` of a position), so the studies that
project activations (:func:`~cnnscope.zf.top_projections`) take either. Instead of replaying an invertible chain
it back-propagates the chosen activation through the model itself while every ReLU follows ``rule``
(:func:`cnnscope.capture.relu_rule`): ``"deconv"`` (``max(g, 0)``, Zeiler & Fergus' rectification of the
signal) or ``"guided"`` (Springenberg et al.: also masked by the forward ReLU); ``None`` is the plain gradient
(the only one of the three for a model without ReLUs: SiLU, GELU). Max-pooling routes the signal to
its argmax and convolutions transpose, as in the true deconvnet; every other module (a residual add, a
concatenation, SiLU/GELU) back-propagates its ordinary gradient, which is where the projection stops being the
paper's reconstruction. Receptive fields are measured (:func:`cnnscope.capture.receptive_field.receptive_fields`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..capture import Capture, evaluating, relu_rule
from ..capture.receptive_field import receptive_fields
from ..errors import CnnscopeError, LayerError, MethodError, unknown
from ..models import ModelLike, as_model

#: projection method name -> ReLU backward rule (``"deconvnet"``, the true deconvnet, is not a rule;
#: ``"gradient"`` is the plain gradient; ``"auto"`` chooses, see :mod:`cnnscope.zf.projection_choice`)
RULE_OF: dict[str, str | None] = {"rule": "deconv", "guided": "guided", "gradient": None}
PROJECTION_METHODS = ("auto", "deconvnet", *RULE_OF)


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`PROJECTION_METHODS`, else a :class:`MethodError` with close matches."""
    if method not in PROJECTION_METHODS:
        raise MethodError(unknown("projection method", str(method), PROJECTION_METHODS))
    return method


def spatial(acts: torch.Tensor, layer: str) -> torch.Tensor:
    """``acts`` when it is a ``[B, C, h, w]`` map, else a :class:`LayerError`."""
    if acts.ndim != 4:
        raise LayerError(f"layer {layer!r} has no spatial output (shape {tuple(acts.shape[1:])}); choose a "
                         "convolutional layer")
    return acts


class RuleTrace:
    """What :meth:`RuleProjector.forward` keeps: the layer's output and the input batch."""

    def __init__(self, activations: torch.Tensor, inputs: torch.Tensor) -> None:
        self.activations = activations
        self.inputs = inputs


class RuleProjector:
    """Project single activations of ``layer`` to pixels with a ReLU backward rule, in batches.

    Args:
        model: any image model (not modified; runs in temporary eval mode).
        layer: dotted name of a layer with a ``[C, h, w]`` output.
        rule: ``"deconv"``, ``"guided"`` or ``None`` (the plain gradient).
        input_size: ``(H, W)`` of the inputs (for the receptive fields; default the model's input size).
        pre_activation: project from the input of ``layer`` (an activation module).

    Raises:
        LayerError: unknown layer (checked here), or one without a spatial output (on the first forward).
    """

    def __init__(self, model: ModelLike, layer: str, *, rule: str | None = "deconv",
                 input_size: int | tuple[int, int] | None = None, pre_activation: bool = False) -> None:
        m = as_model(model)
        size = m.input_size if input_size is None else input_size
        self.module = m.module
        self.layer = layer
        self.rule = rule
        self.input_size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.pre_activation = bool(pre_activation)
        Capture(self.module, layer, pre_activation=pre_activation)  # validates the name without hooking
        self._fields = None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> RuleTrace:
        """The layer's output for ``x`` (eval mode).

        Shape:
            - x: ``[B, C, H, W]``; RuleTrace.activations: ``[B, C', h, w]``.
        """
        with evaluating(self.module), Capture(self.module, self.layer, pre_activation=self.pre_activation) as cap:
            cap.run(x)
            acts = spatial(cap[self.layer], self.layer)
        return RuleTrace(acts, x)

    def backward(self, trace: RuleTrace, rows: torch.Tensor, channels: torch.Tensor,
                 positions: torch.Tensor) -> torch.Tensor:
        """Project one activation per row: image ``rows[j]``'s ``channels[j]`` at ``positions[j]``.

        Every row is a copy of its image, so the batch holds ``len(rows)`` images; each row's gradient comes from
        its own activation alone.

        Shape:
            - rows, channels: ``[N]``; positions: ``[N, 2]`` ``(row, col)``.
            - Output: ``[N, C, H, W]`` in the model's input space.
        """
        xs = trace.inputs[rows.to(trace.inputs.device)].detach().clone().requires_grad_(True)
        idx = torch.arange(len(xs), device=xs.device)
        rules = relu_rule(self.module, self.rule) if self.rule else nullcontext()
        with evaluating(self.module), rules, \
                Capture(self.module, self.layer, pre_activation=self.pre_activation) as cap, torch.enable_grad():
            cap.run(xs)
            acts = cap[self.layer]
            ch, r, c = (t.to(acts.device) for t in (channels, positions[:, 0], positions[:, 1]))
            seed = torch.zeros_like(acts)
            seed[idx.to(acts.device), ch, r, c] = acts[idx.to(acts.device), ch, r, c].detach()
            (grad,) = torch.autograd.grad(acts, xs, grad_outputs=seed, allow_unused=True)
        if grad is None:
            raise CnnscopeError(f"layer {self.layer!r} does not depend on the input")
        return grad.detach()

    def receptive_field(self, position: tuple[int, int]) -> tuple[int, int, int, int]:
        """The input box ``(top, left, bottom, right)`` (half-open) of one position of the layer's map, measured."""
        if self._fields is None:
            self._fields = receptive_fields(self.module, self.layer, self.input_size)[self.layer]
        return self._fields.box(int(position[0]), int(position[1]))
