"""Circuits: how a unit is built from the layer below (Cammarata et al., *Curve Detectors*, Distill 2020).

- :func:`connection`: the direct convolution feeding a unit, with an eval-mode batch norm folded in: its weights
  from every previous-layer channel (small heatmaps), ranked by norm.
- :func:`attribution`: for one image, the article's attribution tensor ``W ⊙ h_prev`` of the unit at a position:
  since the unit's pre-activation is linear in the previous layer, it sums exactly to the pre-activation minus the
  bias; its per-channel sums rank the contributing channels.
- :func:`expanded_weights`: the weights between non-adjacent layers, from a backward pass through the network with
  its activations made linear (Olah et al., *Visualizing Weights*, Distill 2021).
- :func:`render_attribution`: feature visualization of an attribution vector (the previous layer's channels
  weighted by their contribution) through :func:`cnnscope.featurevis.render` and a ``direction`` objective.

A *unit* is a channel of a convolution, of a batch norm right after one, or of the activation right after those;
its value is the pre-activation (the convolution output after the folded batch norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..capture import Capture, evaluating, is_activation, module_device, module_dtype, patch_outputs, resolve_layers
from ..capture.inputs import InputCapture
from ..capture.linearize import linearized
from ..errors import CnnscopeError, LayerError


@dataclass
class Connection:
    """The direct convolution of a unit, batch norm folded in.

    Attributes:
        layer: the layer asked for; conv / norm: the convolution and the batch norm between it and the unit.
        channel: the unit's channel.
        inputs: indices of the previous-layer channels connected to it (all of them, or its group's).
        weights: ``float32 [len(inputs), kh, kw]`` effective weights (``scale * W``).
        bias: effective bias (``scale * conv_bias + shift``).
        stride, padding, dilation: of the convolution.
    """

    layer: str
    conv: str
    norm: str | None
    channel: int
    inputs: np.ndarray
    weights: np.ndarray
    bias: float
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of each input channel's kernel."""
        return np.sqrt((self.weights.astype(np.float64) ** 2).reshape(len(self.inputs), -1).sum(axis=1))

    def ranked(self, n: int | None = None) -> list[int]:
        """Positions in :attr:`inputs` ordered by kernel norm, strongest first."""
        order = np.argsort(-self.norms, kind="stable")
        return order[:n].tolist() if n is not None else order.tolist()

    def to_dict(self, n: int | None = 16) -> dict:
        """JSON-ready summary with the ``n`` strongest kernels."""
        return {"layer": self.layer, "conv": self.conv, "norm": self.norm, "channel": self.channel,
                "bias": self.bias, "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation),
                "strongest": [{"input_channel": int(self.inputs[i]), "norm": float(self.norms[i]),
                               "weights": self.weights[i].tolist()} for i in self.ranked(n)]}


def _parent_and_siblings(module: nn.Module, name: str) -> tuple[str, list[tuple[str, nn.Module]]]:
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    table = dict(module.named_modules())
    siblings = [(f"{parent}.{n}" if parent else n, m) for n, m in table[parent].named_children()]
    return parent, siblings


def _previous(module: nn.Module, name: str, kind: type | tuple[type, ...]) -> str | None:
    """The closest sibling registered before ``name`` that is a ``kind``."""
    _, siblings = _parent_and_siblings(module, name)
    names = [n for n, _ in siblings]
    if name not in names:
        return None
    hits = [n for n, m in siblings[:names.index(name)] if isinstance(m, kind)]
    return hits[-1] if hits else None


def _locate(module: nn.Module, layer: str) -> tuple[str, str | None, str, bool]:
    """``(conv, norm, value_layer, value_is_input)``: where the unit's pre-activation is read."""
    target = resolve_layers(module, layer)[layer]
    if isinstance(target, nn.Conv2d):
        return layer, None, layer, False
    norm = None
    if isinstance(target, nn.BatchNorm2d):
        norm = layer
    elif is_activation(target):
        parent = layer.rsplit(".", 1)[0] if "." in layer else ""
        parent_mod = dict(module.named_modules())[parent]
        if parent and isinstance(parent_mod, nn.BatchNorm2d):  # timm's BatchNormAct2d: bn then act inside
            norm = parent
        else:  # the closest conv or batch norm registered before the activation
            before = _previous(module, layer, (nn.Conv2d, nn.BatchNorm2d))
            norm = before if before is not None and isinstance(dict(module.named_modules())[before],
                                                                nn.BatchNorm2d) else None
    else:
        raise LayerError(f"{layer!r} is a {type(target).__name__}; circuits need a Conv2d, a BatchNorm2d after one, "
                         "or the activation after those")
    conv = _previous(module, norm, nn.Conv2d) if norm else _previous(module, layer, nn.Conv2d)
    if conv is None:
        raise LayerError(f"cannot find the convolution feeding {layer!r}; pass the Conv2d's name instead")
    if is_activation(target):
        return conv, norm, layer, True
    act = getattr(target, "act", None)  # BatchNormAct2d: its output is after the activation
    if isinstance(act, nn.Module) and is_activation(act):
        return conv, norm, f"{layer}.act", True
    return conv, norm, layer, False


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective ``(weight [O, I/g, kh, kw], bias [O])`` of conv followed by an eval-mode batch norm."""
    w = conv.weight.detach().float()
    b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
    if norm is None:
        return w, b
    if norm.running_mean is None or norm.running_var is None:
        raise LayerError("the batch norm has no running statistics, so it is not a fixed affine map")
    scale = torch.rsqrt(norm.running_var.float() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach().float()
    shift = -norm.running_mean.float() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach().float()
    return w * scale.view(-1, 1, 1, 1), b * scale + shift


def _probe(module: nn.Module, size: int = 64) -> torch.Tensor:
    from ..capture.layers import input_channels

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, input_channels(module), size, size, generator=gen)
    return x.to(device=module_device(module), dtype=module_dtype(module))


def connection(module: nn.Module, layer: str, channel: int, *, verify: bool = True) -> Connection:
    """The direct convolution weights of unit ``channel`` of ``layer`` (batch norm folded in).

    Args:
        module: the model (``nn.Module``); not modified.
        layer: a ``Conv2d``, a ``BatchNorm2d`` right after one, or the activation after those
            (``"blocks.4.0.bn1.act"``).
        channel: the unit.
        verify: check on a random probe that the folded convolution reproduces the unit's pre-activation.

    Raises:
        LayerError: the layer is not fed by a convolution this way, or the channel is out of range.
    """
    conv_name, norm_name, value_layer, is_input = _locate(module, layer)
    mods = dict(module.named_modules())
    conv = mods[conv_name]
    w, b = _fold(conv, mods[norm_name] if norm_name else None)
    if not 0 <= channel < w.shape[0]:
        raise LayerError(f"channel {channel} is out of range for {layer!r} ({w.shape[0]} channels)")
    if verify:
        x = _probe(module)
        with torch.no_grad(), evaluating(module), InputCapture(module, conv_name) as cin, \
                Capture(module, value_layer, pre_activation=is_input, stop_early=False) as cval:
            cval.reset()
            cin.run(x)
            h = cin[conv_name].float()
            want = cval[value_layer].float()
        got = torch.nn.functional.conv2d(h, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * (1 + want.abs().max())):
            raise LayerError(f"{layer!r} is not the folded output of {conv_name!r}"
                             + (f" and {norm_name!r}" if norm_name else "") + "; pass the Conv2d's name instead")
    per_group = w.shape[1]
    group = channel // (w.shape[0] // conv.groups)
    inputs = np.arange(group * per_group, (group + 1) * per_group)
    return Connection(layer=layer, conv=conv_name, norm=norm_name, channel=int(channel), inputs=inputs,
                      weights=w[channel].cpu().numpy(), bias=float(b[channel]), stride=tuple(conv.stride),
                      padding=tuple(conv.padding), dilation=tuple(conv.dilation))


@dataclass
class Attribution:
    """The attribution tensor ``W ⊙ h_prev`` of one unit at one position of one image.

    Attributes:
        connection: the unit's :class:`Connection`.
        position: ``(y, x)`` in the unit's layer.
        value: the unit's pre-activation there; ``value - connection.bias == tensor.sum()``.
        tensor: ``float32 [len(inputs), kh, kw]``: weight times previous-layer activation in the kernel window
            (zero where the window covers padding).
        contributions: ``[len(inputs)]`` per previous-layer channel sums of :attr:`tensor`.
        grid: ``(h, w)`` of the unit's layer.
    """

    connection: Connection
    position: tuple[int, int]
    value: float
    tensor: np.ndarray
    contributions: np.ndarray
    grid: tuple[int, int] = (0, 0)

    def top(self, n: int = 8, absolute: bool = True) -> list[tuple[int, float]]:
        """The ``n`` strongest ``(previous-layer channel, contribution)``, by absolute value (or signed, largest)."""
        key = -np.abs(self.contributions) if absolute else -self.contributions
        order = np.argsort(key, kind="stable")[:n]
        return [(int(self.connection.inputs[i]), float(self.contributions[i])) for i in order]

    def vector(self, channels: int, absolute: bool = False) -> np.ndarray:
        """The attribution vector over all ``channels`` of the previous layer (zeros outside the unit's group)."""
        v = np.zeros(channels, dtype=np.float32)
        v[self.connection.inputs] = np.abs(self.contributions) if absolute else self.contributions
        return v

    def to_dict(self, n: int = 16) -> dict:
        return {"layer": self.connection.layer, "channel": self.connection.channel, "position": list(self.position),
                "value": self.value, "bias": self.connection.bias, "sum": float(self.contributions.sum()),
                "top": [{"input_channel": c, "contribution": v} for c, v in self.top(n)]}


def attribution(model, layer: str, channel: int, image: object, position: tuple[int, int] | None = None
                ) -> Attribution:
    """The activation x weight attribution of a unit to the previous layer, for one image.

    Args:
        model: a ``LoadedModel`` (the image is fitted and normalised by it).
        layer, channel: the unit (see :func:`connection`).
        image: a path, array or PIL image.
        position: ``(y, x)`` in the unit's layer; default: where the unit's pre-activation is largest.
    """
    module = model.module
    conn = connection(module, layer, channel)
    _, _, value_layer, is_input = _locate(module, layer)
    x = model.preprocess(image)
    with torch.no_grad(), evaluating(module), InputCapture(module, conn.conv) as cin, \
            Capture(module, value_layer, pre_activation=is_input, stop_early=False) as cval:
        cval.reset()
        cin.run(x)
        h = cin[conn.conv][0].float()
        pre = cval[value_layer][0, channel].float()
    if position is None:
        flat = int(pre.argmax())
        position = (flat // pre.shape[1], flat % pre.shape[1])
    y, xx = position
    if not (0 <= y < pre.shape[0] and 0 <= xx < pre.shape[1]):
        raise LayerError(f"position {position} is outside the {tuple(pre.shape)} grid of {layer!r}")
    kh, kw = conn.weights.shape[1:]
    (sy, sx), (py, px), (dy, dx) = conn.stride, conn.padding, conn.dilation
    h = h[torch.as_tensor(conn.inputs, device=h.device)]
    window = torch.zeros(len(conn.inputs), kh, kw, device=h.device)
    for i in range(kh):
        for j in range(kw):
            r, c = y * sy - py + i * dy, xx * sx - px + j * dx
            if 0 <= r < h.shape[1] and 0 <= c < h.shape[2]:
                window[:, i, j] = h[:, r, c]
    tensor = (torch.as_tensor(conn.weights, device=h.device) * window).cpu().numpy()
    return Attribution(connection=conn, position=(int(y), int(xx)), value=float(pre[y, xx]), tensor=tensor,
                       contributions=tensor.reshape(len(conn.inputs), -1).sum(axis=1),
                       grid=(int(pre.shape[0]), int(pre.shape[1])))


@dataclass
class ExpandedWeights:
    """Weights between a unit and an earlier layer through the linearised network in between.

    Attributes:
        source, target: layer names; channel / position: the target unit.
        weights: ``float32 [C_source, h, w]`` over the whole source grid.
        box: ``(top, left, bottom, right)`` of the non-zero region in the source grid.
    """

    source: str
    target: str
    channel: int
    position: tuple[int, int]
    weights: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def window(self) -> np.ndarray:
        """The weights cut to :attr:`box`: ``[C_source, bottom - top, right - left]``."""
        t, left, b, r = self.box
        return self.weights[:, t:b, left:r]

    @property
    def norms(self) -> np.ndarray:
        return np.sqrt((self.window.astype(np.float64) ** 2).reshape(self.weights.shape[0], -1).sum(axis=1))

    def to_dict(self, n: int = 16) -> dict:
        order = np.argsort(-self.norms, kind="stable")[:n]
        return {"source": self.source, "target": self.target, "channel": self.channel,
                "position": list(self.position), "box": list(self.box),
                "strongest": [{"source_channel": int(i), "norm": float(self.norms[i])} for i in order]}


def expanded_weights(module: nn.Module, source: str, target: str, channel: int, input_size: int | tuple[int, int],
                     position: tuple[int, int] | None = None) -> ExpandedWeights:
    """Gradient of a target unit's pre-activation w.r.t. an earlier layer's output, every activation in between
    made the identity (:func:`~cnnscope.capture.linearize.linearized`).

    Between adjacent layers this is the direct (folded) convolution kernel placed around the unit; further apart
    it is the product of the weights along every path. Max-pooling is linearised at the probe image (a random
    one from a fixed seed).

    Args:
        module: the model; not modified (no parameter ``.grad`` is written).
        source: the earlier layer (its output is differentiated against).
        target: the unit's layer (activation modules: their input); channel: the unit.
        input_size: the input size the grids refer to.
        position: ``(y, x)`` in the target grid (default: the centre).
    """
    resolve_layers(module, [source, target])
    tmod = dict(module.named_modules())[target]
    is_input = is_activation(tmod)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    gen = torch.Generator().manual_seed(0)
    from ..capture.layers import input_channels

    x = torch.randn((1, input_channels(module)) + size, generator=gen).to(module_device(module), module_dtype(module))
    with torch.no_grad(), evaluating(module):
        src_value = _one_output(module, source, x)
    z = src_value.detach().clone().requires_grad_(True)
    with evaluating(module), torch.enable_grad(), linearized(module), patch_outputs(module, {source: lambda o: z}), \
            Capture(module, target, pre_activation=is_input) as cap:
        cap.run(x)
        value = cap[target]
        if value.ndim != 4:
            raise LayerError(f"{target!r} has no spatial grid")
        if not 0 <= channel < value.shape[1]:
            raise LayerError(f"channel {channel} is out of range for {target!r} ({value.shape[1]} channels)")
        y, xx = position if position is not None else (value.shape[2] // 2, value.shape[3] // 2)
        if not value.requires_grad:
            raise CnnscopeError(f"{target!r} does not depend on {source!r} (is the source after the target?)")
        (grad,) = torch.autograd.grad(value[0, channel, y, xx], z, allow_unused=True)
    if grad is None:
        raise CnnscopeError(f"{target!r} does not depend on {source!r}")
    g = grad[0].float().cpu().numpy()
    nz = np.argwhere(np.abs(g).sum(axis=0) > 0)
    box = (0, 0, 0, 0) if len(nz) == 0 else (int(nz[:, 0].min()), int(nz[:, 1].min()), int(nz[:, 0].max()) + 1,
                                              int(nz[:, 1].max()) + 1)
    return ExpandedWeights(source=source, target=target, channel=int(channel), position=(int(y), int(xx)),
                           weights=g, box=box)


def _one_output(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    with Capture(module, layer) as cap:
        cap.run(x)
    return cap[layer]


def feeding_layer(module: nn.Module, conv: str, input_size: int = 64) -> str:
    """The named layer whose output is ``conv``'s input (``h_prev``), found on a probe forward.

    Among several names for the same tensor (a ``Sequential`` and its last child) the first in ``named_modules``
    order is returned (``"blocks.3"`` rather than ``"blocks.3.2"``).

    Raises:
        LayerError: no named module produces that input (it is computed inside a ``forward``).
    """
    from ..capture import list_layers

    x = _probe(module, input_size)
    with torch.no_grad(), evaluating(module), InputCapture(module, conv) as cin:
        cin.run(x)
        h = cin[conv]
    shape = tuple(h.shape[1:])
    names = [i.name for i in list_layers(module, input_size) if i.calls >= 1 and i.output_shape == shape
             and i.name != conv]
    order = {n: k for k, (n, _) in enumerate(module.named_modules())}
    if names:
        with torch.no_grad(), evaluating(module), Capture(module, names, reuse="last", stop_early=False) as cap:
            cap.run(x)
            hits = [n for n in names if torch.equal(cap[n], h)]
        if hits:
            return min(hits, key=lambda n: order[n])
    raise LayerError(f"no named layer outputs the input of {conv!r} (it is computed inside a forward); "
                     "the attribution cannot be visualised through a layer objective")


def render_attribution(model, attr: Attribution, source: str | None = None, *, absolute: bool = True,
                       **render_options):
    """Feature visualization of an attribution vector: the image that most excites the previous layer's channels
    along the unit's attribution (``direction(source, vector)``), as the article's "visualizing attribution".

    Args:
        model: the ``LoadedModel``.
        attr: an :class:`Attribution`.
        source: the layer whose output is the attributed convolution's input (``h_prev``), e.g. ``"blocks.3"``
            for ``blocks.4.0.conv_pw``; default: found by :func:`feeding_layer`.
        absolute: use ``|W ⊙ h_prev|`` (features that excite *or* inhibit the unit, as the article does).
        render_options: passed to :func:`cnnscope.featurevis.render` (``steps``, ``size``, ``recipe``, ``seed``).

    Returns:
        The :class:`cnnscope.featurevis.RenderResult`.

    Raises:
        LayerError: ``source`` does not output the convolution's input.
    """
    from ..featurevis import direction, render

    conv = attr.connection.conv
    if source is None:
        source = feeding_layer(model.module, conv)
    else:
        x = _probe(model.module)
        with torch.no_grad(), evaluating(model.module), InputCapture(model.module, conv) as cin, \
                Capture(model.module, source, stop_early=False, reuse="last") as cs:
            cs.reset()
            cin.run(x)
            same = cs[source].shape == cin[conv].shape and torch.equal(cs[source], cin[conv])
        if not same:
            raise LayerError(f"{source!r} does not output the input of {conv!r}; the attribution's channels are "
                             f"{conv!r}'s input channels (try {feeding_layer(model.module, conv)!r})")
    vector = attr.vector(int(_probe_channels(model.module, conv)), absolute=absolute)
    if not np.any(vector):
        raise CnnscopeError("the attribution vector is zero (the unit receives nothing at this position)")
    return render(model, direction(source, vector), **render_options)


def _probe_channels(module: nn.Module, conv: str) -> int:
    return int(dict(module.named_modules())[conv].in_channels)
