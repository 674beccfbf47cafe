"""Which projection the Zeiler & Fergus analyses run: the true deconvnet where it applies, guided backprop elsewhere.

``method="auto"`` (the default of :func:`~cnnscope.zf.top_projections`, :func:`~cnnscope.zf.evolution`,
:func:`~cnnscope.zf.occlusion_study` and of the ``deconv``/``top9``/``occlude`` commands) picks:

1. the true deconvnet (:class:`~cnnscope.zf.deconvnet.DeconvNet`) when the path from the input to the layer is
   a chain of modules it inverts *and* holds a max-pooling layer;
2. otherwise guided backprop of the unit (:class:`~cnnscope.zf.rule_projector.RuleProjector` with the
   ``"guided"`` rule: the gradient of the unit's activation at its position with respect to the input, every
   ReLU passing the signal only where both the signal and its forward input are positive; Springenberg et al.
   2015), which depends on the image through the forward ReLU masks;
3. the plain gradient of the unit when the model has no ReLU module for guided backprop's rule.

Why not the deconvnet rule as a gradient there: without max-pooling switches the deconvnet's reconstruction
depends on the image only through the projected activation's value and position (Mahendran & Vedaldi 2016), so on
an EfficientNet it draws the same texture for every image. Forcing ``"deconvnet"`` or ``"rule"`` where no
max-pooling runs before the layer still works, with one warning saying so.

:class:`Choice` records the method and why; :meth:`Choice.line` is the one line the commands print, and the
results (``TopProjections``, ``Projection``, ``Evolution``, ``OcclusionStudy``) carry ``method`` and ``reason``.

Example:
    >>> c = choose_projector(load_model(), "blocks.2.0")
    >>> c.method, c.line()   # "guided", "projection: guided backprop (the true deconvnet cannot invert ...)"
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import nn

from ..capture import canonical_layer, list_layers, relu_modules, resolve_layers
from ..models import ModelLike, as_model
from .deconvnet import DeconvNet, Projection, project, rule_projection
from .rule_projector import RULE_OF, RuleProjector, check_method
from .steps import DeconvError, MaxPoolStep

__all__ = ["NAMES", "Choice", "ImageIndependentWarning", "choose_projector", "describe", "project_unit"]

#: method -> how the one-line report names it
NAMES = {"deconvnet": "true deconvnet", "rule": "deconvnet rule (backward-rule gradient)",
         "guided": "guided backprop", "gradient": "plain gradient"}
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)


class ImageIndependentWarning(UserWarning):
    """A deconvnet-style projection was asked for where no max-pooling gives it switches."""


@dataclass
class Choice:
    """The projection an analysis runs.

    Attributes:
        method: ``"deconvnet"``, ``"rule"``, ``"guided"`` or ``"gradient"`` (never ``"auto"``).
        reason: why, in one clause (``"requested"`` when the caller named the method).
        projector: a :class:`~cnnscope.zf.deconvnet.DeconvNet` for ``"deconvnet"``, else a
            :class:`~cnnscope.zf.rule_projector.RuleProjector`.
    """

    method: str
    reason: str
    projector: DeconvNet | RuleProjector

    def line(self) -> str:
        """The one line the commands print: which projection and why."""
        return describe(self.method, self.reason)


def describe(method: str, reason: str) -> str:
    """``"projection: NAME (REASON; see docs/zf.md)"``."""
    return f"projection: {NAMES.get(method, method)} ({reason}; see docs/zf.md)"


def _pool_before(module: nn.Module, layer: str, input_size: tuple[int, int], in_channels: int) -> bool:
    """Whether a max-pooling module runs before ``layer`` (first-call order of a probe forward)."""
    infos = list_layers(module, input_size, in_channels=in_channels)
    order = [i.name for i in infos if i.calls > 0]
    table = dict(module.named_modules())
    layer = canonical_layer(module, layer)
    before = order[:order.index(layer)] if layer in order else order
    return any(isinstance(table.get(n), MAX_POOLS) for n in before)


def _relu_before(module: nn.Module, layer: str, input_size: tuple[int, int], in_channels: int) -> bool:
    """Whether a ReLU-family module (one a rule overrides) runs before ``layer`` or is ``layer`` (probe forward)."""
    infos = list_layers(module, input_size, in_channels=in_channels)
    order = [i.name for i in infos if i.calls > 0]
    layer = canonical_layer(module, layer)
    upto = set(order[:order.index(layer) + 1] if layer in order else order)
    return any(name in upto for name, _ in relu_modules(module))


def _no_pool(layer: str, what: str = "the deconvnet") -> str:
    return (f"no max-pooling on the path to {layer!r} gives {what} switches, so its reconstruction would hardly "
            "depend on the image (Mahendran & Vedaldi 2016)")


def choose_projector(model: ModelLike, layer: str, *, method: str = "auto",
                     input_size: int | tuple[int, int] | None = None, pre_activation: bool = False) -> Choice:
    """The projector ``method`` asks for, or, for ``"auto"``, the one this module's docstring describes.

    Args:
        model: any image model (not modified).
        layer: dotted name of a layer with a ``[C, h, w]`` output.
        method: ``"auto"``, ``"deconvnet"``, ``"rule"``, ``"guided"`` or ``"gradient"``.
        input_size: ``(H, W)`` of the inputs (default the model's).
        pre_activation: project from the input of ``layer`` (an activation module).

    Warns:
        ImageIndependentWarning: ``"deconvnet"`` or ``"rule"`` asked for where no max-pooling runs before ``layer``.

    Raises:
        MethodError: unknown method; DeconvError: ``"deconvnet"`` on a path it cannot invert; LayerError: unknown
        layer.
    """
    m = as_model(model)
    check_method(method)
    size = m.input_size if input_size is None else input_size
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    kw = dict(input_size=size, pre_activation=pre_activation)
    if method == "deconvnet":
        net = DeconvNet(m, layer, **kw)  # type: ignore[arg-type]
        if not any(isinstance(s, MaxPoolStep) for s in net.chain.steps):
            warnings.warn(_no_pool(layer), ImageIndependentWarning, stacklevel=2)
        return Choice("deconvnet", "requested", net)
    if method != "auto":
        if method == "rule":
            resolve_layers(m.module, layer)
            if not _pool_before(m.module, layer, size, len(m.mean)):
                warnings.warn(_no_pool(layer, "the deconvnet rule"), ImageIndependentWarning, stacklevel=2)
        return Choice(method, "requested", RuleProjector(m, layer, rule=RULE_OF[method], **kw))  # type: ignore[arg-type]
    try:
        net = DeconvNet(m, layer, **kw)  # type: ignore[arg-type]
    except DeconvError as e:
        why = f"the true deconvnet {e.reason}" if e.reason.startswith("cannot") else e.reason
    else:
        if any(isinstance(s, MaxPoolStep) for s in net.chain.steps):
            return Choice("deconvnet", f"the path to {layer!r} is a chain the deconvnet inverts, with max-pooling",
                          net)
        why = _no_pool(layer)
    if _relu_before(m.module, layer, size, len(m.mean)):
        return Choice("guided", why, RuleProjector(m, layer, rule="guided", **kw))  # type: ignore[arg-type]
    return Choice("gradient", why + f"; no ReLU runs on the way to {layer!r} for guided backprop",
                  RuleProjector(m, layer, rule=None, **kw))  # type: ignore[arg-type]


def project_unit(model: ModelLike, images: object, layer: str, *, channel: int,
                 position: tuple[int, int] | str | None = "max", pre_activation: bool = False, method: str = "auto",
                 batch_size: int | None = None) -> Projection:
    """:func:`~cnnscope.zf.deconvnet.project` (true deconvnet) or :func:`~cnnscope.zf.deconvnet.rule_projection`
    as :func:`choose_projector` decides for ``method``; ``Projection.reason`` says why.

    Arguments as in :func:`~cnnscope.zf.deconvnet.project`, plus ``method`` (``"auto"``, ``"deconvnet"``,
    ``"rule"``, ``"guided"``, ``"gradient"``).

    Shape:
        - Projection.values: ``[B, C, H, W]`` like the model-space batch of ``images``.
    """
    m = as_model(model)
    x = m.batch(images)
    choice = choose_projector(m, layer, method=method, input_size=tuple(x.shape[-2:]),  # type: ignore[arg-type]
                              pre_activation=pre_activation)
    opts = dict(channel=channel, position=position, pre_activation=pre_activation, batch_size=batch_size)
    if choice.method == "deconvnet":
        p = project(m, x, layer, **opts)  # type: ignore[arg-type]
    else:
        p = rule_projection(m, x, layer, rule=RULE_OF[choice.method], **opts)  # type: ignore[arg-type]
    p.reason = choice.reason
    return p
