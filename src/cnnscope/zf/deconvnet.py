"""The true deconvnet of Zeiler & Fergus (2013): project one activation back to pixels.

The model's forward pass is replayed over the module chain that leads to the layer (see
:mod:`cnnscope.zf.chain`), recording the max-pooling switches. All activations of the layer but the chosen one
(or but the chosen channel's map, with ``position=None``) are set to zero, and the signal goes back layer by
layer: unpool with the switches, rectify, filter with the transposed kernels (:mod:`cnnscope.zf.steps`). The
result is a picture in the model's input space of the pixels that made that unit fire.

The chain may hold convolutions (depthwise and grouped included), batch-norm (plain ``BatchNorm2d`` and timm's
fused ``BatchNormAct2d``), ReLU/ReLU6, max-pooling, dropout and identities, inside any containers that only run
their children in order (torchvision's ``Conv2dNormActivation``, timm's ``ConvNormAct``, ``nn.Sequential``).
For models whose path contains modules the deconvnet cannot reverse (residual adds, squeeze-excite gates, SiLU
and other non-ReLU activations, unknown modules) :func:`project` raises :class:`~cnnscope.zf.chain.DeconvError`;
:func:`rule_projection` computes the same quantity as a gradient with the deconvnet backward rule for ReLUs, which
works on any model that runs ReLUs (on a plain stack the two agree to float precision), with guided backprop's
rule, or as the plain gradient (``rule=None``, any model). :func:`cnnscope.zf.projection_choice.project_unit`
picks between them (``method="auto"``: the true deconvnet where it applies and max-pooling gives it switches,
else guided backprop) and says why.

Example:
    >>> m = load_model("alexnet")
    >>> p = project(m, ["cat.jpg", "dog.jpg"], "features.10", channel=5)   # each image's strongest activation
    >>> p.positions, p.activations, p.values.shape   # [(row, col)] * 2, tensor [2], [2, 3, 224, 224]
    >>> p.pictures()                                 # uint8 [2, 224, 224, 3], mid-grey = 0
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size
from ..capture import Capture, evaluating, relu_rule, resolve_layers
from ..errors import CnnscopeError, ImageError, LayerError
from ..models import ModelLike, as_model
from ..units import POSITION_NAMES, check_position, grid_position, read_unit
from .chain import Chain, DeconvError, build_chain
from .steps import ReLUStep

__all__ = ["DeconvError", "DeconvNet", "Projection", "Trace", "display", "project", "rule_projection"]

Box = tuple[int, int, int, int]


@dataclass
class Projection:
    """One channel's activation projected to pixels, once per image.

    Attributes:
        values: ``[B, C, H, W]`` reconstructions in the model's input space (signed, not normalised), on the
            model's device.
        layer, channel: which feature map.
        position: what was projected (see :func:`project`): ``"max"``, ``"center"``, ``(row, col)`` or ``None``
            (the whole map).
        positions: ``(row, col)`` of the projected activation in each image's map; ``None`` for the whole map.
        activations: ``[B]`` the unit's value per image (:func:`cnnscope.units.read_unit`: the activation at the
            position, or the map's mean for ``None``).
        boxes: each image's receptive field of what was projected, ``(top, left, bottom, right)`` half-open
            (``None`` for the backward-rule projection, which does not know the geometry).
        pre_activation: whether the activation module's input was projected.
        method: ``"deconvnet"`` (true, switches + transposed filters), ``"backward-rule"`` (the deconvnet rule
            as a gradient), ``"guided"`` (guided backprop's rule) or ``"gradient"`` (no rule).
        reason: why that method (set by :func:`cnnscope.zf.projection_choice.project_unit`; empty when the
            caller chose the function).
    """

    values: torch.Tensor
    layer: str
    channel: int
    position: tuple[int, int] | str | None
    positions: list[tuple[int, int]] | None
    activations: torch.Tensor
    boxes: list[Box] | None
    pre_activation: bool = False
    method: str = "deconvnet"
    reason: str = ""

    def pictures(self, scale: float | None = None) -> np.ndarray:
        """The projections as ``uint8 [B, H, W, 3]`` pictures (see :func:`display`)."""
        return display(self.values, scale=scale)


@dataclass
class Trace:
    """What a forward pass over the chain recorded: the layer's output and every step's record."""

    activations: torch.Tensor
    records: list[object]


class DeconvNet:
    """A deconvnet attached to one layer of a model; project many activations of many images in batches.

    Args:
        model: the model (not modified; only its parameters and buffers are read).
        layer: dotted name of a layer with a ``[C, h, w]`` output.
        input_size: ``(H, W)`` of the inputs it will see (default the model's; the chain is checked at this size).
        pre_activation: project from the input of ``layer``, which must then be a ReLU/ReLU6 module.

    Raises:
        LayerError: unknown layer, one without a spatial output, or ``pre_activation`` on another module kind.
        DeconvError: a module on the path cannot be inverted.
    """

    def __init__(self, model: ModelLike, layer: str, *, input_size: int | tuple[int, int] | None = None,
                 pre_activation: bool = False) -> None:
        m = as_model(model)
        size = m.input_size if input_size is None else input_size
        self.module = m.module
        self.layer = layer
        self.input_size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.pre_activation = bool(pre_activation)
        chain = build_chain(m.module, layer, self.input_size, len(m.mean))
        if self.pre_activation:
            last = chain.steps[-1]
            if not (isinstance(last, ReLUStep) and last.name == chain.layer):
                raise LayerError(f"pre_activation=True projects the input of an activation module; {layer!r} is "
                                 f"{type(resolve_layers(m.module, layer)[layer]).__name__}, not a ReLU/ReLU6")
            chain = Chain(layer, chain.steps[:-1], chain.containers)
        self.chain: Chain = chain

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Trace:
        """Replay the chain on ``x`` (eval-mode semantics), recording the switches.

        Shape:
            - x: ``[B, C, H, W]`` with ``(H, W) = input_size``.
            - Trace.activations: ``[B, C', h, w]``.
        """
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.input_size:
            raise ImageError(f"the deconvnet for {self.layer!r} was built for [B, C, {self.input_size[0]}, "
                             f"{self.input_size[1]}] inputs, got {tuple(x.shape)}")
        out, records, _ = self.chain.forward(x)
        if out.ndim != 4:
            raise LayerError(f"layer {self.layer!r} has no spatial output (shape {tuple(out.shape[1:])})")
        return Trace(out, records)

    @torch.no_grad()
    def backward(self, trace: Trace, rows: torch.Tensor, channels: torch.Tensor,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        """Project activations to pixels, one projection per row.

        Args:
            trace: a :meth:`forward` result.
            rows: ``[N]`` image index in the forward batch for each projection.
            channels: ``[N]`` channel of each projection.
            positions: ``[N, 2]`` ``(row, col)`` of the single activation each row projects, or ``None`` to
                project every activation of the channel's map at once.

        Shape:
            - Output: ``[N, C, H, W]`` in the model's input space.
        """
        acts = trace.activations
        n = int(rows.numel())
        signal = acts.new_zeros(n, *acts.shape[1:])
        idx = torch.arange(n, device=acts.device)
        if positions is None:
            signal[idx, channels] = acts[rows, channels]
        else:
            r, c = positions[:, 0], positions[:, 1]
            signal[idx, channels, r, c] = acts[rows, channels, r, c]
        for step, rec in zip(reversed(self.chain.steps), reversed(trace.records)):
            signal = step.backward(signal, rec, rows)
        return signal

    def receptive_field(self, position: tuple[int, int] | None, grid: tuple[int, int] | None = None) -> Box:
        """Input box ``(top, left, bottom, right)`` (half-open) of one position of the layer's map.

        ``position=None`` is the whole map, whose ``(h, w)`` is then given as ``grid``.
        """
        if position is None:
            if grid is None:
                raise LayerError("the receptive field of a whole map needs the map's size (grid=(h, w))")
            return self.chain.receptive_field((0, grid[0] - 1), (0, grid[1] - 1), self.input_size)
        return self.chain.receptive_field(int(position[0]), int(position[1]), self.input_size)


def _spatial(acts: torch.Tensor, layer: str) -> None:
    if acts.ndim != 4:
        raise LayerError(f"layer {layer!r} has no spatial output (shape {tuple(acts.shape[1:])}); choose a "
                         "convolutional layer")


def _where(acts: torch.Tensor, channel: int, position: tuple[int, int] | str | None, layer: str
           ) -> torch.Tensor | None:
    """``[B, 2]`` ``(row, col)`` per image of the activation to project (``None``: the whole map).

    ``"max"`` is each image's strongest activation of ``channel``; ``"center"`` and ``(row, col)`` the same
    neuron in every image.
    """
    if position is None:
        return None
    b, w = acts.shape[0], acts.shape[-1]
    if position == "max":
        flat = acts[:, channel].flatten(1).argmax(1)
        return torch.stack([flat // w, flat % w], dim=1)
    r, c = grid_position(position, acts, layer)  # type: ignore[arg-type]
    return torch.tensor([[r, c]], device=acts.device).expand(b, 2)


def _pairs(where: torch.Tensor | None) -> list[tuple[int, int]] | None:
    return None if where is None else [(int(r), int(c)) for r, c in where.tolist()]


def project(model: ModelLike, images: object, layer: str, *, channel: int, position: tuple[int, int] | str | None
            = "max", pre_activation: bool = False, batch_size: int | None = None) -> Projection:
    """Project one channel's activation of ``layer`` back to pixels with the true deconvnet, for every image.

    Args:
        model: a model whose path to ``layer`` is a chain the deconvnet can invert (AlexNet/VGG ``features``,
            ZF-style nets, :class:`cnnscope.zf.train.SmallConvNet`, conv-BN-ReLU(6) blocks of torchvision and timm,
            depthwise convolutions; see the module docstring); not modified. For any other model
            :func:`cnnscope.zf.projection_choice.project_unit` falls back to guided backprop.
        images: anything :meth:`~cnnscope.models.LoadedModel.batch` takes (a model-space tensor keeps its size).
        layer: dotted name of a layer on that stack.
        channel: feature map index.
        position: ``"max"`` (each image's strongest activation of the channel, the paper's choice), ``"center"``,
            ``(row, col)`` in the layer's map, or ``None`` (every activation of the map at once).
        pre_activation: project from the input of ``layer`` (a ReLU/ReLU6 module): the pre-rectification map.
        batch_size: images per forward (default by device).

    Returns:
        A :class:`Projection` (``values`` on the model's device).

    Raises:
        DeconvError: the path to the layer holds a module the deconvnet cannot reverse (named in the message).
        LayerError: unknown layer, a channel or position outside the layer's map.

    Shape:
        - Projection.values: ``[B, C, H, W]`` like the model-space batch of ``images``.
    """
    m = as_model(model)
    x = m.batch(images)
    pos = check_position(position, allow=POSITION_NAMES)
    net = DeconvNet(m, layer, input_size=tuple(x.shape[-2:]), pre_activation=pre_activation)  # type: ignore[arg-type]
    values, where_all, acts_all = [], [], []
    for sl in chunks(len(x), resolve_batch_size(batch_size, m.device)):
        trace = net.forward(x[sl])
        acts = trace.activations
        value = read_unit(acts, int(channel), pos, layer)  # checks the channel and a fixed position
        where = _where(acts, int(channel), pos, layer)
        n = sl.stop - sl.start
        rows = torch.arange(n, device=acts.device)
        values.append(net.backward(trace, rows, torch.full((n,), int(channel), device=acts.device), where))
        acts_all.append(value)
        where_all.append(where)
    grid = tuple(acts.shape[-2:])
    positions = None if pos is None else [p for w in where_all for p in _pairs(w)]  # type: ignore[union-attr]
    boxes = ([net.receptive_field(None, grid)] * len(x) if positions is None  # type: ignore[arg-type]
             else [net.receptive_field(p) for p in positions])
    return Projection(torch.cat(values), layer, int(channel), pos, positions, torch.cat(acts_all), boxes,
                      bool(pre_activation))


def rule_projection(model: ModelLike, images: object, layer: str, *, channel: int,
                    position: tuple[int, int] | str | None = "max", pre_activation: bool = False,
                    batch_size: int | None = None, rule: str | None = "deconv") -> Projection:
    """The same projection computed as a gradient with the deconvnet rule for every ReLU (any model with ReLUs).

    The chosen activation's value (or, for ``position=None``, the channel's whole map) is back-propagated to the
    input while each ``nn.ReLU``/``nn.ReLU6`` passes ``max(g, 0)`` (:func:`cnnscope.capture.relu_rule`
    ``"deconv"``); max-pooling routes to its argmax (the switch), convolutions transpose. Other modules
    back-propagate their ordinary gradient (a residual add splits the signal, a SiLU multiplies by its
    derivative), so on models outside the plain-stack family this is an approximation of the deconvnet idea
    rather than the paper's reconstruction. Runs in eval mode; the parameters' ``.grad`` is never written.
    Arguments as in :func:`project`; ``rule="guided"`` projects with guided backprop's rule instead (the signal
    is also masked where the forward ReLU was off; ``Projection.method`` is then ``"guided"``), ``rule=None`` is
    the plain gradient of the activation (``"gradient"``).

    Raises:
        CnnscopeError: a rule on a model that runs no ReLU (:func:`cnnscope.capture.relu_rule`).

    Shape:
        - Projection.values: ``[B, C, H, W]`` like the model-space batch of ``images``.
    """
    m = as_model(model)
    x = m.batch(images)
    pos = check_position(position, allow=POSITION_NAMES)
    module, ch = m.module, int(channel)
    values, where_all, acts_all = [], [], []
    with evaluating(module), (relu_rule(module, rule) if rule else nullcontext()), \
            Capture(module, layer, pre_activation=pre_activation) as cap:
        for sl in chunks(len(x), resolve_batch_size(batch_size, m.device)):
            xi = x[sl].clone().requires_grad_(True)
            with torch.enable_grad():
                cap.run(xi)
                acts = cap[layer]
                _spatial(acts, layer)
                value = read_unit(acts.detach(), ch, pos, layer)
                where = _where(acts.detach(), ch, pos, layer)
                seed = torch.zeros_like(acts)
                if where is None:
                    seed[:, ch] = acts[:, ch].detach()
                else:
                    idx = torch.arange(len(acts), device=acts.device)
                    seed[idx, ch, where[:, 0], where[:, 1]] = acts[idx, ch, where[:, 0], where[:, 1]].detach()
                (grad,) = torch.autograd.grad(acts, xi, grad_outputs=seed, allow_unused=True)
            if grad is None:
                raise CnnscopeError(f"layer {layer!r} does not depend on the input")
            values.append(grad.detach())
            acts_all.append(value)
            where_all.append(where)
    positions = None if pos is None else [p for w in where_all for p in _pairs(w)]  # type: ignore[union-attr]
    return Projection(torch.cat(values), layer, ch, pos, positions, torch.cat(acts_all), None, bool(pre_activation),
                      method={"guided": "guided", None: "gradient"}.get(rule, "backward-rule"))


def display(values: torch.Tensor | np.ndarray, *, scale: float | None = None) -> np.ndarray:
    """Signed reconstructions as pictures with 0 at mid-grey: ``[C, H, W]`` -> ``uint8 [H, W, 3]``, ``[B, C, H,
    W]`` -> ``uint8 [B, H, W, 3]``.

    Values are divided by ``scale`` (default each picture's own largest magnitude) and mapped to
    ``0.5 + 0.5 * v``, the contrast normalisation the deconvnet pictures use. One-channel inputs are shown in
    grey.
    """
    v = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if v.ndim not in (3, 4):
        raise ImageError(f"display() expects [C, H, W] or [B, C, H, W], got {v.shape}")
    one = v.ndim == 3
    v = v[None] if one else v
    if scale is None:
        s = np.abs(v).reshape(len(v), -1).max(1).reshape(-1, 1, 1, 1)
    else:
        s = np.full((len(v), 1, 1, 1), float(scale))
    v = np.where(s > 0, v / np.where(s > 0, s, 1.0), 0.0)
    v = np.moveaxis(v, 1, -1)
    if v.shape[-1] == 1:
        v = np.repeat(v, 3, axis=-1)
    out = np.clip(np.round((0.5 + 0.5 * v) * 255.0), 0, 255).astype(np.uint8)
    return out[0] if one else out
