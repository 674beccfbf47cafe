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

import torch
from torch import nn

from ..capture import (
    Capture,
    canonical_layer,
    evaluating,
    input_channels,
    is_activation,
    module_device,
    module_dtype,
    patch_outputs,
    resolve_layers,
)
from ..capture.inputs import InputCapture
from ..capture.linearize import linearized
from ..errors import CnnscopeError, ImageError, LayerError
from ..models import ModelLike, as_model
from ..units import POSITION_NAMES, check_position, grid_position


@dataclass
class Connection:
    """The direct convolution of a unit, batch norm folded in (CPU tensors).

    Attributes:
        layer: the layer asked for; conv / norm: the convolution and the batch norm between it and the unit.
        channel: the unit's channel.
        inputs: ``int64 [I]`` indices of the previous-layer channels connected to it (all of them, or its group's).
        weights: ``float32 [I, kh, kw]`` effective weights (``scale * W``).
        bias: effective bias (``scale * conv_bias + shift``).
        stride, padding, dilation: of the convolution.
    """

    layer: str
    conv: str
    norm: str | None
    channel: int
    inputs: torch.Tensor
    weights: torch.Tensor
    bias: float
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def norms(self) -> torch.Tensor:
        """L2 norm of each input channel's kernel, ``float64 [I]``."""
        return torch.linalg.vector_norm(self.weights.double().reshape(len(self.inputs), -1), dim=1)

    def ranked(self, n: int | None = None) -> list[int]:
        """Positions in :attr:`inputs` ordered by kernel norm, strongest first."""
        return torch.argsort(-self.norms, stable=True)[:n].tolist()

    def to_dict(self, n: int | None = 16) -> dict:
        """JSON-ready summary with the ``n`` strongest kernels."""
        norms = self.norms
        return {"layer": self.layer, "conv": self.conv, "norm": self.norm, "channel": self.channel,
                "bias": self.bias, "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation),
                "strongest": [{"input_channel": int(self.inputs[i]), "norm": float(norms[i]),
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
    """``(conv, norm, value_layer, value_is_input)``: where the unit's pre-activation is read (dotted names, an
    alias resolved)."""
    target = resolve_layers(module, layer)[layer]
    layer = canonical_layer(module, layer)  # the names below are found by their dotted parents and siblings
    if isinstance(target, nn.Conv2d):
        return layer, None, layer, False
    norm = None
    if isinstance(target, nn.BatchNorm2d):
        norm = layer
    elif is_activation(target):
        parent = layer.rsplit(".", 1)[0] if "." in layer else ""
        # timm's BatchNormAct2d: bn then act inside
        if parent and isinstance(resolve_layers(module, parent)[parent], nn.BatchNorm2d):
            norm = parent
        else:  # the closest conv or batch norm registered before the activation
            before = _previous(module, layer, (nn.Conv2d, nn.BatchNorm2d))
            norm = before if before is not None and isinstance(resolve_layers(module, before)[before],
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
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, input_channels(module), size, size, generator=gen)
    return x.to(device=module_device(module), dtype=module_dtype(module))


def connection(model: ModelLike, layer: str, channel: int, *, verify: bool = True) -> Connection:
    """The direct convolution weights of unit ``channel`` of ``layer`` (batch norm folded in).

    Circuits are about the unit's pre-activation, the linear function of the layer below, whichever of the conv,
    its batch norm or the activation after them is named, so there is no ``pre_activation`` choice.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; not modified.
        layer: a ``Conv2d``, a ``BatchNorm2d`` right after one, or the activation after those
            (``"blocks.4.0.bn1.act"``).
        channel: the unit.
        verify: check on a random probe that the folded convolution reproduces the unit's pre-activation.

    Raises:
        LayerError: the layer is not fed by a convolution this way, or the channel is out of range.
    """
    module = as_model(model).module
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
    inputs = torch.arange(group * per_group, (group + 1) * per_group)
    return Connection(layer=layer, conv=conv_name, norm=norm_name, channel=int(channel), inputs=inputs,
                      weights=w[channel].cpu(), bias=float(b[channel]), stride=tuple(conv.stride),
                      padding=tuple(conv.padding), dilation=tuple(conv.dilation))


@dataclass
class Attribution:
    """The attribution tensor ``W ⊙ h_prev`` of one unit at one position of one image (on the model's device).

    Attributes:
        connection: the unit's :class:`Connection`.
        position: ``(row, col)`` in the unit's layer.
        value: the unit's pre-activation there; ``value - connection.bias == tensor.sum()``.
        tensor: ``float32 [I, kh, kw]``: weight times previous-layer activation in the kernel window (zero where
            the window covers padding).
        contributions: ``[I]`` per previous-layer channel sums of :attr:`tensor`.
        grid: ``(h, w)`` of the unit's layer.
    """

    connection: Connection
    position: tuple[int, int]
    value: float
    tensor: torch.Tensor
    contributions: torch.Tensor
    grid: tuple[int, int] = (0, 0)

    def top(self, n: int = 8, absolute: bool = True) -> list[tuple[int, float]]:
        """The ``n`` strongest ``(previous-layer channel, contribution)``, by absolute value (or signed, largest)."""
        c = self.contributions.cpu()
        order = torch.argsort(-(c.abs() if absolute else c), stable=True)[:n].tolist()
        return [(int(self.connection.inputs[i]), float(c[i])) for i in order]

    def vector(self, channels: int, absolute: bool = False) -> torch.Tensor:
        """The attribution vector over all ``channels`` of the previous layer (zeros outside the unit's group)."""
        c = self.contributions
        v = torch.zeros(channels, dtype=c.dtype, device=c.device)
        v[self.connection.inputs.to(c.device)] = c.abs() if absolute else c
        return v

    def to_dict(self, n: int = 16) -> dict:
        return {"layer": self.connection.layer, "channel": self.connection.channel, "position": list(self.position),
                "value": self.value, "bias": self.connection.bias, "sum": float(self.contributions.sum()),
                "top": [{"input_channel": c, "contribution": v} for c, v in self.top(n)]}


def attribution(model: ModelLike, images: object, layer: str, *, channel: int,
                position: tuple[int, int] | str = "max") -> Attribution:
    """The activation x weight attribution of a unit to the previous layer, for one image.

    Like :func:`connection`, it reads the unit's pre-activation by definition (no ``pre_activation`` choice).

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        images: exactly one image: anything :meth:`~cnnscope.models.LoadedModel.batch` takes (a path, a ``uint8``
            array, a PIL image or a model-space ``[C, H, W]`` / ``[1, C, H, W]`` tensor).
        layer, channel: the unit (see :func:`connection`).
        position: ``"max"`` (where the unit's pre-activation is largest), ``"center"`` or ``(row, col)`` in the
            unit's layer.

    Raises:
        ImageError: more than one image. LayerError: a position outside the layer's grid.
    """
    m = as_model(model)
    module = m.module
    pos = check_position(position, allow=POSITION_NAMES)
    if pos is None:
        raise LayerError("attribution() explains one neuron: give position='max', 'center' or (row, col)")
    conn = connection(m, layer, channel)
    _, _, value_layer, is_input = _locate(module, layer)
    x = m.batch(images)
    if x.shape[0] != 1:
        raise ImageError(f"attribution() explains one image, got a batch of {x.shape[0]}")
    with torch.no_grad(), evaluating(module), InputCapture(module, conn.conv) as cin, \
            Capture(module, value_layer, pre_activation=is_input, stop_early=False) as cval:
        cval.reset()
        cin.run(x)
        h = cin[conn.conv][0].float()
        pre = cval[value_layer][0, channel].float()
    if pos == "max":
        flat = int(pre.argmax())
        y, xx = flat // pre.shape[1], flat % pre.shape[1]
    else:
        y, xx = grid_position(pos, pre, layer)
    kh, kw = conn.weights.shape[1:]
    (sy, sx), (py, px), (dy, dx) = conn.stride, conn.padding, conn.dilation
    h = h[conn.inputs.to(h.device)]
    window = torch.zeros(len(conn.inputs), kh, kw, device=h.device)
    for i in range(kh):
        for j in range(kw):
            r, c = y * sy - py + i * dy, xx * sx - px + j * dx
            if 0 <= r < h.shape[1] and 0 <= c < h.shape[2]:
                window[:, i, j] = h[:, r, c]
    tensor = conn.weights.to(h.device) * window
    return Attribution(connection=conn, position=(int(y), int(xx)), value=float(pre[y, xx]), tensor=tensor,
                       contributions=tensor.reshape(len(conn.inputs), -1).sum(dim=1),
                       grid=(int(pre.shape[0]), int(pre.shape[1])))


@dataclass
class ExpandedWeights:
    """Weights between a unit and an earlier layer through the linearised network in between (CPU tensors).

    Attributes:
        from_layer: the earlier layer; layer, channel, position: the unit.
        weights: ``float32 [C_from, h, w]`` over the whole grid of ``from_layer``.
        box: ``(top, left, bottom, right)`` of the non-zero region in that grid.
    """

    from_layer: str
    layer: str
    channel: int
    position: tuple[int, int]
    weights: torch.Tensor
    box: tuple[int, int, int, int]

    @property
    def window(self) -> torch.Tensor:
        """The weights cut to :attr:`box`: ``[C_from, bottom - top, right - left]``."""
        t, left, b, r = self.box
        return self.weights[:, t:b, left:r]

    @property
    def norms(self) -> torch.Tensor:
        """L2 norm of each earlier channel's window, ``float64 [C_from]``."""
        return torch.linalg.vector_norm(self.window.double().reshape(self.weights.shape[0], -1), dim=1)

    def to_dict(self, n: int = 16) -> dict:
        norms = self.norms
        order = torch.argsort(-norms, stable=True)[:n].tolist()
        return {"from_layer": self.from_layer, "layer": self.layer, "channel": self.channel,
                "position": list(self.position), "box": list(self.box),
                "strongest": [{"from_channel": i, "norm": float(norms[i])} for i in order]}


def expanded_weights(model: ModelLike, layer: str, *, channel: int, from_layer: str,
                     position: tuple[int, int] | str = "center", input_size: int | tuple[int, int] | None = None
                     ) -> ExpandedWeights:
    """Gradient of a unit's pre-activation w.r.t. an earlier layer's output, every activation in between made the
    identity (:func:`~cnnscope.capture.linearize.linearized`).

    Between adjacent layers this is the direct (folded) convolution kernel placed around the unit; further apart
    it is the product of the weights along every path. Max-pooling is linearised at the probe image (a random
    one from a fixed seed). The unit is read before its activation (circuits are linear; no ``pre_activation``
    choice).

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; not modified (no parameter ``.grad`` is written).
        layer: the unit's layer (activation modules: their input); channel: the unit.
        from_layer: the earlier layer (its output is differentiated against).
        position: ``"center"`` or ``(row, col)`` in the unit's grid.
        input_size: the input size the grids refer to (default: the model's).
    """
    m = as_model(model)
    module = m.module
    pos = check_position(position, allow=("center",))
    if pos is None:
        raise LayerError("expanded_weights() needs one neuron: position='center' or (row, col)")
    is_input = is_activation(resolve_layers(module, [from_layer, layer])[layer])
    size = m.input_size if input_size is None else (input_size, input_size) if isinstance(input_size, int) \
        else tuple(input_size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, input_channels(module)) + tuple(size), generator=gen).to(module_device(module),
                                                                                 module_dtype(module))
    with torch.no_grad(), evaluating(module):
        src_value = _one_output(module, from_layer, x)
    z = src_value.detach().clone().requires_grad_(True)
    with evaluating(module), torch.enable_grad(), linearized(module), \
            patch_outputs(module, {from_layer: lambda o: z}), Capture(module, layer, pre_activation=is_input) as cap:
        cap.run(x)
        value = cap[layer]
        if value.ndim != 4:
            raise LayerError(f"{layer!r} has no spatial grid")
        if not 0 <= channel < value.shape[1]:
            raise LayerError(f"channel {channel} is out of range for {layer!r} ({value.shape[1]} channels)")
        y, xx = grid_position(pos, value, layer)
        if not value.requires_grad:
            raise CnnscopeError(f"{layer!r} does not depend on {from_layer!r} (is {from_layer!r} after it?)")
        (grad,) = torch.autograd.grad(value[0, channel, y, xx], z, allow_unused=True)
    if grad is None:
        raise CnnscopeError(f"{layer!r} does not depend on {from_layer!r}")
    g = grad[0].float().cpu()
    nz = torch.nonzero(g.abs().sum(dim=0) > 0)
    box = (0, 0, 0, 0) if len(nz) == 0 else (int(nz[:, 0].min()), int(nz[:, 1].min()), int(nz[:, 0].max()) + 1,
                                              int(nz[:, 1].max()) + 1)
    return ExpandedWeights(from_layer=from_layer, layer=layer, channel=int(channel), position=(int(y), int(xx)),
                           weights=g, box=box)


def _one_output(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    with Capture(module, layer) as cap:
        cap.run(x)
    return cap[layer]


def feeding_layer(model: ModelLike, conv: str, *, input_size: int = 64) -> str:
    """The named layer whose output is ``conv``'s input (``h_prev``), found on a probe forward.

    Among several names for the same tensor (a ``Sequential`` and its last child) the first in ``named_modules``
    order is returned (``"blocks.3"`` rather than ``"blocks.3.2"``); :func:`feeding_layers` gives them all.

    Raises:
        LayerError: no named module produces that input (it is computed inside a ``forward``).
    """
    return feeding_layers(model, conv, input_size=input_size)[0]


def feeding_layers(model: ModelLike, conv: str, *, input_size: int = 64) -> list[str]:
    """Every named layer whose output equals ``conv``'s input on a probe forward, in ``named_modules`` order (a
    block and its last child, an activation and the module that wraps it, ...).

    Raises:
        LayerError: no named module produces that input (it is computed inside a ``forward``).
    """
    from ..capture import list_layers

    module = as_model(model).module
    conv = canonical_layer(module, conv)
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
            return sorted(hits, key=lambda n: order[n])
    raise LayerError(f"no named layer outputs the input of {conv!r} (it is computed inside a forward); "
                     "the attribution cannot be visualised through a layer objective")


def render_attribution(model: ModelLike, attr: Attribution, *, from_layer: str | None = None, absolute: bool = True,
                       **render_options: object):
    """Feature visualization of an attribution vector: the image that most excites the previous layer's channels
    along the unit's attribution (``direction(from_layer, vector)``), as the article's "visualizing attribution".

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        attr: an :class:`Attribution`.
        from_layer: the layer whose output is the attributed convolution's input (``h_prev``), e.g.
            ``"blocks.3"`` for ``blocks.4.0.conv_pw``; default: found by :func:`feeding_layer`.
        absolute: use ``|W ⊙ h_prev|`` (features that excite *or* inhibit the unit, as the article does).
        render_options: passed to :func:`cnnscope.featurevis.render` (``steps``, ``size``, ``recipe``, ``seed``).

    Returns:
        The :class:`cnnscope.featurevis.RenderResult`.

    Raises:
        LayerError: ``from_layer`` does not output the convolution's input.
    """
    from ..featurevis import direction, render

    m = as_model(model)
    module = m.module
    conv = attr.connection.conv
    if from_layer is None:
        from_layer = feeding_layer(m, conv)
    else:
        x = _probe(module)
        with torch.no_grad(), evaluating(module), InputCapture(module, conv) as cin, \
                Capture(module, from_layer, stop_early=False, reuse="last") as cs:
            cs.reset()
            cin.run(x)
            same = cs[from_layer].shape == cin[conv].shape and torch.equal(cs[from_layer], cin[conv])
        if not same:
            raise LayerError(f"{from_layer!r} does not output the input of {conv!r}; the attribution's channels are "
                             f"{conv!r}'s input channels (try {feeding_layer(m, conv)!r})")
    vector = attr.vector(int(resolve_layers(module, conv)[conv].in_channels), absolute=absolute)
    if not bool(vector.any()):
        raise CnnscopeError("the attribution vector is zero (the unit receives nothing at this position)")
    return render(m, direction(from_layer, vector.cpu()), **render_options)
