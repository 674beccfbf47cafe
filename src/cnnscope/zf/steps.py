"""The layers a deconvnet can invert, each as a pair of explicit passes (Zeiler & Fergus 2013, Sec. 2.1).

Every :class:`Step` wraps one module of a feature stack and does two things without calling the module (so no
hook of the user's model runs and nothing about it changes):

* ``forward(x)`` recomputes the module's eval-mode output and returns what the way back needs (the pooling
  *switches*, the input size);
* ``backward(signal, record, rows)`` maps a reconstruction signal one layer down: max-pool -> *unpool* (values
  go to the recorded switch positions), ReLU/ReLU6 -> *rectify* (``max(signal, 0)``), convolution -> *filter*
  with the transposed kernels (``conv_transpose2d`` with the same ``groups``, so depthwise and grouped
  convolutions too; bias ignored), batch-norm -> multiply by its per-channel scale ``gamma / sqrt(var + eps)``
  (the transpose of the eval-mode affine map, bias ignored), dropout/identity -> pass.

ReLU6 rectifies the signal like ReLU on the way back (``max(signal, 0)``, no upper clip): the deconvnet's rule
only keeps the positive part of the reconstruction, and the forward clip at 6 is not part of it. Other
activations (SiLU, Hardswish, GELU, ...) have no deconvnet rule and are refused by name.

*Fused* modules run an operation of their own and then their submodules in order; timm's ``BatchNormAct2d``
(batch-norm, then its ``drop`` and ``act`` submodules) is one: it becomes a batch-norm step followed by the steps
of its submodules (:data:`FUSED_TYPES`, matched by class path so that timm is not imported here).

``rows`` maps each signal row to the image of the forward batch whose switches it uses, so many projections of
one forward batch run as one batch.

A new invertible module kind is one :class:`Step` subclass decorated with ``@inverts(ModuleType)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnscopeError
from ..registry import RegistryError


def hint() -> str:
    """What the true deconvnet inverts, and the way out for other models (ends every :class:`DeconvError`)."""
    return ("the true deconvnet only inverts plain stacks of " + supported() + "; use a backward-rule projection "
            "instead: `--method auto` (guided backprop where the deconvnet cannot apply), `--method rule` (the "
            "deconvnet rule) or `--method guided` of `cnnscope deconv` and `cnnscope top9` for models with ReLUs, "
            "`--method gradient` for any model (cnnscope.zf.rule_projection, top_projections(method=...))")


class DeconvError(CnnscopeError):
    """The true deconvnet cannot invert the path to a layer; the message names the first module in the way.

    Attributes:
        reason: the message without the way out (:func:`hint`), as the commands print it when they fall back to
            another projection (:mod:`cnnscope.zf.projection_choice`).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; {hint()}")
        self.reason = reason


#: module type -> Step class, filled by :func:`inverts`; a type matches exactly, or as a subclass that keeps the
#: parent's forward.
STEP_TYPES: dict[type[nn.Module], type[Step]] = {}


def inverts(*types: type[nn.Module]):
    """Class decorator: the decorated :class:`Step` inverts modules of ``types`` (one entry per type).

    Raises:
        RegistryError: a type already has a step.
    """

    def deco(cls: type[Step]) -> type[Step]:
        for t in types:
            if t in STEP_TYPES:
                raise RegistryError(f"{t.__name__} is already inverted by {STEP_TYPES[t].__name__}")
            STEP_TYPES[t] = cls
        return cls

    return deco


@dataclass(frozen=True)
class Geometry:
    """How one step maps output positions to input positions (per axis, rows then columns)."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@inverts(nn.Dropout, nn.Dropout2d, nn.Identity)
class Step:
    """One invertible module of a feature stack (subclasses say how to go forward and back)."""

    kind = "pass"

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module

    @property
    def geometry(self) -> Geometry:
        return Geometry()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        return x, None

    def backward(self, signal: torch.Tensor, record: object, rows: torch.Tensor) -> torch.Tensor:
        return signal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@inverts(nn.Conv2d)
class ConvStep(Step):
    """Convolution: forward ``conv2d``; back: ``conv_transpose2d`` with the same (flipped, transposed) filters."""

    kind = "conv"

    def __init__(self, name: str, module: nn.Conv2d) -> None:
        super().__init__(name, module)
        if module.padding_mode != "zeros":
            raise DeconvError(f"cannot invert {name!r}: the deconvnet only inverts zero-padded convolutions, this "
                              f"one uses padding_mode={module.padding_mode!r}")
        pad = module.padding
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        if pad == "valid":
            pad = (0, 0)
        elif pad == "same":
            totals = [dd * (kk - 1) for kk, dd in zip(k, d)]
            if any(t % 2 for t in totals):
                raise DeconvError(f"cannot invert {name!r}: padding='same' with an even kernel pads asymmetrically, "
                                  "which the deconvnet does not invert")
            pad = (totals[0] // 2, totals[1] // 2)
        self.padding = _pair(pad)  # type: ignore[arg-type]

    @property
    def geometry(self) -> Geometry:
        m = self.module
        return Geometry(_pair(m.kernel_size), _pair(m.stride), self.padding, _pair(m.dilation))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        m = self.module
        y = F.conv2d(x, m.weight, m.bias, m.stride, self.padding, m.dilation, m.groups)
        return y, tuple(x.shape[-2:])

    def backward(self, signal: torch.Tensor, record: object, rows: torch.Tensor) -> torch.Tensor:
        m = self.module
        g = self.geometry
        size = record  # input (H, W): the transposed conv must land exactly on it
        extra = []
        for i in range(2):
            span = g.dilation[i] * (g.kernel[i] - 1) + 1
            natural = (signal.shape[-2 + i] - 1) * g.stride[i] - 2 * g.padding[i] + span
            extra.append(size[i] - natural)  # type: ignore[index]
        return F.conv_transpose2d(signal, m.weight.to(signal.dtype), None, g.stride, g.padding, tuple(extra),
                                  m.groups, g.dilation)


@inverts(nn.ReLU, nn.ReLU6)
class ReLUStep(Step):
    """ReLU / ReLU6 / Hardtanh(0, t): forward clamps; back rectifies the signal (``max(signal, 0)``)."""

    kind = "relu"

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__(name, module)
        if isinstance(module, nn.Hardtanh):  # ReLU6 is Hardtanh(0, 6)
            self.upper: float | None = float(module.max_val)
        else:
            self.upper = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        return (x.clamp(min=0) if self.upper is None else x.clamp(0, self.upper)), None

    def backward(self, signal: torch.Tensor, record: object, rows: torch.Tensor) -> torch.Tensor:
        return signal.clamp(min=0)


@inverts(nn.MaxPool2d)
class MaxPoolStep(Step):
    """Max-pooling: forward records the switches (argmax positions); back *unpools* onto them."""

    kind = "maxpool"

    @property
    def geometry(self) -> Geometry:
        m = self.module
        return Geometry(_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        m = self.module
        y, switches = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                   return_indices=True)
        return y, (switches, tuple(x.shape[-2:]))

    def backward(self, signal: torch.Tensor, record: object, rows: torch.Tensor) -> torch.Tensor:
        switches, size = record  # type: ignore[misc]
        return unpool(signal, switches[rows], size)


@inverts(nn.BatchNorm2d)
class BatchNormStep(Step):
    """Batch-norm with running statistics: back multiplies by ``gamma / sqrt(running_var + eps)``."""

    kind = "batchnorm"

    def __init__(self, name: str, module: nn.BatchNorm2d) -> None:
        super().__init__(name, module)
        if module.running_mean is None or module.running_var is None:
            raise DeconvError(f"cannot invert {name!r}: batch-norm without running statistics normalises by batch "
                              "statistics, which the deconvnet cannot invert")

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        m = self.module
        s = torch.rsqrt(m.running_var.to(like.dtype) + m.eps)
        if m.weight is not None:
            s = s * m.weight.to(like.dtype)
        return s.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        m = self.module
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps), None

    def backward(self, signal: torch.Tensor, record: object, rows: torch.Tensor) -> torch.Tensor:
        return signal * self._scale(signal)


def unpool(signal: torch.Tensor, switches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Put each value of ``signal`` at its switch position in a zero map of ``size``.

    Overlapping pooling windows (AlexNet's 3x3/stride 2) can share a switch; their values add up, which is the
    transpose of max-pooling (``F.max_unpool2d`` would keep only one of them).

    Shape:
        - signal, switches: ``[N, C, h, w]`` (switches index the flattened ``H*W`` input map).
        - Output: ``[N, C, H, W]`` with ``(H, W) = size``.
    """
    n, c = signal.shape[:2]
    out = signal.new_zeros(n, c, size[0] * size[1])
    out.scatter_add_(2, switches.reshape(n, c, -1), signal.reshape(n, c, -1))
    return out.view(n, c, size[0], size[1])


def step_for(name: str, module: nn.Module) -> Step | None:
    """The :class:`Step` that inverts ``module``, or ``None`` when it is not one of :data:`STEP_TYPES`."""
    for base in type(module).__mro__:
        cls = STEP_TYPES.get(base)
        if cls is None:
            continue
        if type(module).forward is not base.forward:
            return None  # a subclass with its own forward (timm's BatchNormAct2d, ...)
        return cls(name, module)
    if isinstance(module, nn.Hardtanh) and module.min_val == 0.0 and type(module).forward is nn.Hardtanh.forward:
        return ReLUStep(name, module)
    return None


#: fused module class (``"package.module.Class"``) -> the :class:`Step` of its own operation, which runs before its
#: submodules (see the module docstring).
FUSED_TYPES: dict[str, type[Step]] = {"timm.layers.norm_act.BatchNormAct2d": BatchNormStep}


def fused_step_for(name: str, module: nn.Module) -> Step | None:
    """The :class:`Step` of a fused module's own operation (its submodules follow), or ``None``."""
    cls = type(module)
    step = FUSED_TYPES.get(f"{cls.__module__}.{cls.__qualname__}")
    return None if step is None else step(name, module)


def supported() -> str:
    """The module kinds the deconvnet inverts, in words (for error messages)."""
    fused = [k.rsplit(".", 1)[-1] for k in FUSED_TYPES]
    return ", ".join([t.__name__ for t in STEP_TYPES] + fused)
