"""The true deconvnet of Zeiler & Fergus (2013): project one activation back to pixels.

The model's forward pass is replayed over the module chain that leads to the layer (see
:mod:`cnnscope.zf.chain`), recording the max-pooling switches. All activations of the layer but the chosen one
are set to zero, and the signal goes back layer by layer: unpool with the switches, rectify, filter with the
transposed kernels (:mod:`cnnscope.zf.steps`). The result is a picture in the model's input space of the pixels
that made that one unit fire.

For models whose path contains modules the deconvnet cannot reverse (residual adds, depthwise/squeeze-excite
blocks, unknown modules) :func:`project` raises :class:`~cnnscope.zf.chain.DeconvError`; :func:`rule_projection`
computes the same quantity as a gradient with the deconvnet backward rule for ReLUs, which works on any model
(on a plain stack the two agree to float precision).

Example:
    >>> m = load_model("alexnet")
    >>> p = project(m.module, m.preprocess("cat.jpg"), "features.10", channel=5)
    >>> p.position, p.activation, p.values.shape   # (row, col), its value, [1, 3, 224, 224]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..capture import Capture, evaluating, relu_rule
from ..errors import CnnscopeError, ImageError, LayerError
from .chain import Chain, DeconvError, build_chain

__all__ = ["DeconvError", "DeconvNet", "Projection", "Trace", "display", "project", "rule_projection"]


@dataclass
class Projection:
    """One activation projected to pixels.

    Attributes:
        values: the reconstruction in the model's input space (signed, not normalised), ``[1, C, H, W]``.
        layer, channel: which feature map.
        position: ``(row, col)`` of the activation in that map.
        activation: its value (the signal the projection starts from).
        box: the receptive field of the position in the input, ``(top, left, bottom, right)`` half-open
            (``None`` for the backward-rule projection, which does not know the geometry).
        method: ``"deconvnet"`` (true, switches + transposed filters) or ``"backward-rule"``.
    """

    values: torch.Tensor
    layer: str
    channel: int
    position: tuple[int, int]
    activation: float
    box: tuple[int, int, int, int] | None
    method: str = "deconvnet"

    def image(self) -> np.ndarray:
        """The projection as an ``uint8 [H, W, 3]`` picture (see :func:`display`)."""
        return display(self.values[0])


@dataclass
class Trace:
    """What a forward pass over the chain recorded: the layer's output and every step's record."""

    activations: torch.Tensor
    records: list[object]


class DeconvNet:
    """A deconvnet attached to one layer of a model; project many activations of many images in batches.

    Args:
        module: the model (not modified; only its parameters and buffers are read).
        layer: dotted name of a layer with a ``[C, h, w]`` output.
        input_size: ``(H, W)`` of the inputs it will see (the chain is checked at this size).
        in_channels: input channels.

    Raises:
        LayerError: unknown layer, or one without a spatial output.
        DeconvError: a module on the path cannot be inverted.
    """

    def __init__(self, module: nn.Module, layer: str, input_size: tuple[int, int] = (224, 224),
                 in_channels: int = 3) -> None:
        self.module = module
        self.layer = layer
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.chain: Chain = build_chain(module, layer, self.input_size, in_channels)

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
    def backward(self, trace: Trace, rows: torch.Tensor, channels: torch.Tensor, positions: torch.Tensor
                 ) -> torch.Tensor:
        """Project single activations to pixels, one per row.

        Args:
            trace: a :meth:`forward` result.
            rows: ``[N]`` image index in the forward batch for each projection.
            channels: ``[N]`` channel of each projection.
            positions: ``[N, 2]`` ``(row, col)`` in the layer's map.

        Shape:
            - Output: ``[N, C, H, W]`` in the model's input space.
        """
        acts = trace.activations
        n = int(rows.numel())
        signal = acts.new_zeros(n, *acts.shape[1:])
        idx = torch.arange(n, device=acts.device)
        r, c = positions[:, 0], positions[:, 1]
        signal[idx, channels, r, c] = acts[rows, channels, r, c]
        for step, rec in zip(reversed(self.chain.steps), reversed(trace.records)):
            signal = step.backward(signal, rec, rows)
        return signal

    def receptive_field(self, position: tuple[int, int]) -> tuple[int, int, int, int]:
        """Input box ``(top, left, bottom, right)`` (half-open) of one position of the layer's map."""
        return self.chain.receptive_field(int(position[0]), int(position[1]), self.input_size)


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ImageError(f"expected one preprocessed image as a float tensor [1, C, H, W], got {shape}")


def _pick(acts: torch.Tensor, layer: str, channel: int, position: tuple[int, int] | None) -> tuple[int, int]:
    """Validate ``channel``/``position`` against a ``[1, C, h, w]`` map; default position = the maximum."""
    if acts.ndim != 4:
        raise LayerError(f"layer {layer!r} has no spatial output (shape {tuple(acts.shape[1:])}); choose a "
                         "convolutional layer")
    c, h, w = acts.shape[1:]
    if not 0 <= int(channel) < c:
        raise LayerError(f"channel {channel} is out of range: layer {layer!r} has {c} channels (0..{c - 1})")
    if position is None:
        flat = int(acts[0, int(channel)].argmax())
        return divmod(flat, w)
    row, col = int(position[0]), int(position[1])
    if not (0 <= row < h and 0 <= col < w):
        raise LayerError(f"position ({row}, {col}) is outside layer {layer!r}'s {h}x{w} map")
    return row, col


def project(module: nn.Module, x: torch.Tensor, layer: str, channel: int,
            position: tuple[int, int] | None = None) -> Projection:
    """Project one activation of ``layer`` back to pixels with the true deconvnet.

    Args:
        module: a model made of a feature stack the deconvnet can invert (AlexNet/VGG ``features``, ZF-style
            nets, :class:`cnnscope.zf.train.SmallConvNet`); not modified.
        x: one preprocessed image ``[1, C, H, W]``.
        layer: dotted name of a layer on that stack.
        channel: feature map index.
        position: ``(row, col)`` in the layer's map; default the map's strongest activation.

    Returns:
        A :class:`Projection` (``values`` on ``x``'s device).

    Raises:
        DeconvError: the path to the layer holds a module the deconvnet cannot reverse (named in the message).

    Shape:
        - x: ``[1, C, H, W]``; Projection.values: ``[1, C, H, W]``.
    """
    _check_input(x)
    net = DeconvNet(module, layer, tuple(x.shape[-2:]), int(x.shape[1]))  # type: ignore[arg-type]
    trace = net.forward(x.detach())
    row, col = _pick(trace.activations, layer, channel, position)
    dev = x.device
    values = net.backward(trace, torch.zeros(1, dtype=torch.long, device=dev),
                          torch.tensor([int(channel)], device=dev), torch.tensor([[row, col]], device=dev))
    act = float(trace.activations[0, int(channel), row, col])
    return Projection(values, layer, int(channel), (row, col), act, net.receptive_field((row, col)))


def rule_projection(module: nn.Module, x: torch.Tensor, layer: str, channel: int,
                    position: tuple[int, int] | None = None) -> Projection:
    """The same projection computed as a gradient with the deconvnet rule for every ReLU (works on any model).

    The chosen activation's value is back-propagated to the input while each ``nn.ReLU``/``nn.ReLU6`` passes
    ``max(g, 0)`` (:func:`cnnscope.capture.relu_rule` ``"deconv"``); max-pooling routes to its argmax (the
    switch), convolutions transpose. Other modules back-propagate their ordinary gradient (a residual add
    splits the signal, a SiLU multiplies by its derivative), so on models outside the plain-stack family this
    is an approximation of the deconvnet idea rather than the paper's reconstruction. Runs in eval mode; the
    parameters' ``.grad`` is never written.

    Shape:
        - x: ``[1, C, H, W]``; Projection.values: ``[1, C, H, W]``.
    """
    _check_input(x)
    xi = x.detach().clone().requires_grad_(True)
    with evaluating(module), relu_rule(module, "deconv"), Capture(module, layer, stop_early=False) as cap:
        with torch.enable_grad():
            cap.run(xi)
            acts = cap[layer]
            row, col = _pick(acts, layer, channel, position)
            seed = torch.zeros_like(acts)
            seed[0, int(channel), row, col] = acts[0, int(channel), row, col].detach()
            (grad,) = torch.autograd.grad(acts, xi, grad_outputs=seed, allow_unused=True)
    if grad is None:
        raise CnnscopeError(f"layer {layer!r} does not depend on the input")
    act = float(acts[0, int(channel), row, col].detach())
    return Projection(grad.detach(), layer, int(channel), (row, col), act, None, method="backward-rule")


def display(values: torch.Tensor | np.ndarray, scale: float | None = None) -> np.ndarray:
    """A signed reconstruction ``[C, H, W]`` as an ``uint8 [H, W, 3]`` picture: 0 is mid-grey.

    Values are divided by ``scale`` (default their largest magnitude) and mapped to ``0.5 + 0.5 * v``, the
    contrast normalisation the deconvnet pictures use. One-channel inputs are shown in grey.
    """
    v = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if v.ndim != 3:
        raise ImageError(f"display() expects [C, H, W], got {v.shape}")
    s = float(np.abs(v).max()) if scale is None else float(scale)
    v = v / s if s > 0 else np.zeros_like(v)
    v = np.moveaxis(v, 0, -1)
    if v.shape[-1] == 1:
        v = np.repeat(v, 3, axis=-1)
    return np.clip(np.round((0.5 + 0.5 * v) * 255.0), 0, 255).astype(np.uint8)
