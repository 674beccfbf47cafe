"""Layer layouts: which axis of a layer's output holds the channels (docs/ARCHITECTURE.md, "Layouts are data").

A layer's output is read as ``nchw`` ``[B, C, H, W]``, ``nhwc`` ``[B, H, W, C]`` (Swin stages, ConvNeXt-style
channels-last blocks), ``tokens`` ``[B, N, C]`` with ``N = h * w`` in row-major order, ``tokens+cls`` (a class token
first, then the grid: ViT blocks), or ``nc`` ``[B, C]`` (no grid). :func:`cnnscope.units.as_nchw` views each as
``[B, C, H, W]``. A :class:`LayoutProbe` watches one forward pass (hooks on every module, weak references to the
tensors, nothing kept alive) and decides each module's output (and input) layout by these rules, in order; it never
guesses, and what they leave open has no layout (``None``): reading its units is a :class:`~cnnscope.LayerError`
that names the layer and the ``layout=`` option.

1. ``layout=`` given by the user wins (:class:`~cnnscope.capture.Capture`, :func:`~cnnscope.capture.list_layers`).
2. A 2-D ``[B, C]`` tensor is ``nc``. A tensor whose first dimension is not the input's batch (attention windows
   folded into the batch, sequence-first attention) has no layout.
3. Evidence on the tensor object itself, from the modules that make or read it (a block returning its last child's
   output, or an in-place op, keeps the same object and so the same evidence):

   - channels first: made or read by PyTorch's 2-D ops, which check or define dim 1 as channels (``Conv2d``,
     ``ConvTranspose2d``, batch/group/instance norms, ``LocalResponseNorm``, 2-D pooling, upsampling, pixel
     (un)shuffle, 2-D padding, ``Dropout2d``, ``LayerNorm2d``-style norms); the model's input is ``[B, C, H, W]``.
   - channels last: made or read by ``Linear`` or ``LayerNorm`` over the last dimension, or by a batch-first
     ``MultiheadAttention``.

   4-D: channels first is ``nchw``, channels last ``nhwc``. 3-D with channels last: ``tokens`` when ``N = h * w``,
   ``tokens+cls`` when ``N = 1 + h * w``, for a grid shaped like the input (:func:`cnnscope.units.token_grid`; the
   two cannot both hold). Evidence of both kinds: no layout.
4. Flow, for a tensor without evidence, from the input of the module that made it: an output of the input's shape
   keeps the input's layout (activations, dropout, identity, residual blocks, layer scale), for a module other than
   an elementwise one only when the channel count differs from the grid sizes (then no transposition keeps the
   shape); a ``Permute`` module with dims ``(0, 2, 3, 1)`` / ``(0, 3, 1, 2)`` maps ``nchw`` to ``nhwc`` and back.
5. PyTorch's convention: when no tensor of the whole forward shows channels-last evidence (no ``Linear`` or
   ``LayerNorm`` over the last dimension of a 3-D or 4-D tensor: a plain CNN), a 4-D tensor left open is ``nchw``
   (a CNN block ending in a functional op, ``torch.cat`` or ``F.relu``, read by functional pooling), provided its
   last two dimensions are the grid of a channels-first tensor of the same forward (so a map a block permuted to
   ``[B, H, W, C]`` by functional ops alone, whose last two sizes are ``W, C``, stays open unless ``W, C`` happens
   to be such a grid). In a model with channels-last tensors (Swin, ConvNeXt, ViT's attention heads
   ``[B, heads, N, d]``) it stays open.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..units import token_grid
from .state import canonical_layer, first_tensor, is_activation, module_of

if TYPE_CHECKING:
    from ..models import ModelLike

#: PyTorch modules whose 2-D (or 1-D/3-D) semantics put the channels on dim 1
CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.Conv2d, nn.ConvTranspose2d, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.LPPool2d, nn.FractionalMaxPool2d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.Dropout2d, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ConstantPad2d,
)
#: class names of modules that act elementwise (or per channel) and keep their input's layout
ELEMENTWISE_NAMES = frozenset({"DropPath", "StochasticDepth", "LayerScale", "LayerScale2d", "Identity", "Swish",
                               "QuickGELU"})

_UNSET = object()


def _side(module: nn.Module, t: torch.Tensor) -> str | None:
    """``"first"`` / ``"last"``: where ``module``'s semantics put the channels of ``t`` (its input or output)."""
    if isinstance(module, nn.LayerNorm):
        if type(module).__name__.lower().endswith("2d"):
            return "first" if t.ndim == 4 else None
        shape = tuple(module.normalized_shape)
        return "last" if len(shape) == 1 and t.ndim >= 3 and t.shape[-1] == shape[0] else None
    if isinstance(module, nn.Linear):
        return "last" if t.ndim >= 3 else None
    if isinstance(module, nn.MultiheadAttention):
        return "last" if module.batch_first and t.ndim == 3 else None
    if isinstance(module, CHANNELS_FIRST) and t.ndim >= 3:
        return "first"
    return None


def channels_first_module(module: nn.Module) -> bool:
    """Whether ``module``'s 4-D outputs are ``nchw`` by its type alone (no probe needed)."""
    return isinstance(module, CHANNELS_FIRST)


def _elementwise(module: nn.Module) -> bool:
    return (is_activation(module) or isinstance(module, (nn.modules.dropout._DropoutNd, nn.Identity))
            or type(module).__name__ in ELEMENTWISE_NAMES)


def _permutation(module: nn.Module) -> tuple[int, ...] | None:
    dims = getattr(module, "dims", None)
    if type(module).__name__ == "Permute" and isinstance(dims, (list, tuple)):
        return tuple(int(d) for d in dims)
    return None


def _unambiguous(shape: tuple[int, ...], layout: str) -> bool:
    """Whether no transposition maps ``shape`` read in ``layout`` onto itself with the channels moved."""
    if layout == "nchw":
        return shape[1] not in (shape[2], shape[3])
    if layout == "nhwc":
        return shape[3] not in (shape[1], shape[2])
    if layout in ("tokens", "tokens+cls"):
        return shape[1] != shape[2]
    return True


class _Facts:
    """What one forward showed about one tensor object."""

    __slots__ = ("ref", "shape", "order", "sides", "parent", "flow", "elementwise", "layout")

    def __init__(self, t: torch.Tensor, order: int) -> None:
        self.ref = weakref.ref(t)
        self.shape = tuple(t.shape)
        self.order = order
        self.sides: set[str] = set()
        self.parent: _Facts | None = None
        self.flow: object = None
        self.elementwise = False
        self.layout: object = _UNSET


class LayoutProbe:
    """Watch a forward pass and tell the layout of every module's output and input (rules in the module docstring).

    Example:
        >>> with LayoutProbe(model) as probe:
        ...     model(x)
        >>> probe.output_layout("layers.3"), probe.output_grid("layers.3")
        ('nhwc', (7, 7))

    Hooks on every module exist between :meth:`attach` and :meth:`detach` (or inside ``with``); the probe holds weak
    references only. Each forward of the root module starts afresh.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        on_complete: called (without arguments) when a forward of the root module has finished.
    """

    def __init__(self, model: ModelLike, *, on_complete: Callable[[], None] | None = None) -> None:
        self.module = module_of(model)
        self.on_complete = on_complete
        self._handles: list[Any] = []
        self.reset()

    def reset(self) -> None:
        """Forget the previous forward."""
        self._facts: dict[int, _Facts] = {}  # by id() of live tensors (an id may be reused once a tensor dies)
        self._all: list[_Facts] = []
        self._aliases: dict[int, tuple[weakref.ref, _Facts]] = {}
        self._count = 0
        self._stack: dict[str, list[_Facts | None]] = {}
        self.outputs: dict[str, _Facts | None] = {}
        self.inputs: dict[str, _Facts | None] = {}
        self.calls: dict[str, int] = {}
        self.batch: int | None = None
        self.input_size: tuple[int, int] | None = None
        self.complete = False
        self._resolved = False

    # -- hooks ---------------------------------------------------------------------------------------------------
    def attach(self) -> LayoutProbe:
        """Register the hooks (idempotent)."""
        if self._handles:
            return self
        try:
            for name, mod in self.module.named_modules():
                self._handles.append(mod.register_forward_pre_hook(partial(self._pre, name)))
                self._handles.append(mod.register_forward_hook(partial(self._post, name)))
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> LayoutProbe:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def alias(self, new: torch.Tensor, old: torch.Tensor) -> None:
        """Treat ``new`` as the same tensor as ``old`` (a module's output swapped for a copy by a hook)."""
        f = self._facts_of(old)
        if f is not None:
            self._aliases[id(new)] = (weakref.ref(new), f)

    def _facts_of(self, t: torch.Tensor | None) -> _Facts | None:
        if t is None:
            return None
        alias = self._aliases.get(id(t))
        if alias is not None and alias[0]() is t:
            return alias[1]
        f = self._facts.get(id(t))
        if f is not None and f.ref() is t:
            return f
        f = _Facts(t, self._count)
        self._count += 1
        self._facts[id(t)] = f
        self._all.append(f)
        return f

    def _pre(self, name: str, module: nn.Module, inputs: tuple) -> None:
        t = first_tensor(inputs)
        if not name:  # the root: a new forward, whose input is [B, C, H, W] by cnnscope's input contract
            self.reset()
            if t is not None and t.ndim >= 1:
                self.batch = int(t.shape[0])
                if t.ndim == 4:
                    self.input_size = (int(t.shape[2]), int(t.shape[3]))
        f = self._facts_of(t)
        if f is not None and t is not None:
            side = "first" if not name and t.ndim == 4 else _side(module, t)
            if side:
                f.sides.add(side)
        self._stack.setdefault(name, []).append(f)
        self.inputs.setdefault(name, f)

    def _post(self, name: str, module: nn.Module, inputs: tuple, output: object) -> None:
        stack = self._stack.get(name)
        f_in = stack.pop() if stack else None
        self.calls[name] = self.calls.get(name, 0) + 1
        t = first_tensor(output)
        f = self._facts_of(t)
        if f is not None and t is not None:
            side = _side(module, t)
            if side:
                f.sides.add(side)
            if f_in is not None and f is not f_in and f.parent is None and f.order > f_in.order:
                f.parent = f_in
                f.elementwise = _elementwise(module)
                perm = _permutation(module)
                f.flow = perm if perm is not None else ("same" if f.shape == f_in.shape else None)
        self.outputs.setdefault(name, f)
        if not name:
            self.complete = True
            if self.on_complete is not None:
                self.on_complete()

    # -- answers -------------------------------------------------------------------------------------------------
    def _resolve(self) -> None:
        if self._resolved:
            return
        facts = self._all
        self._convention = self.complete and not any("last" in f.sides for f in facts)
        self._grids = {f.shape[2:] for f in facts if len(f.shape) == 4 and f.sides == {"first"}}
        #: (N, C) of every 3-D tensor something reads along its last axis: a token-mixing MLP (MLP-Mixer, gMLP)
        #: reads the transposed ``[B, C, N]`` that way too, so a shape whose transpose is also read is ambiguous
        self._last_read = {tuple(f.shape[1:]) for f in facts if len(f.shape) == 3 and "last" in f.sides}
        for f in facts:
            f.layout = _UNSET
        for f in facts:  # in creation order: a parent before its children
            self._layout(f)
        self._resolved = True

    def _layout(self, f: _Facts) -> str | None:
        if f.layout is _UNSET:
            f.layout = None  # guards against cycles
            f.layout = self._decide(f)
        return f.layout  # type: ignore[return-value]

    def _decide(self, f: _Facts) -> str | None:
        shape = f.shape
        if not shape or (self.batch is not None and shape[0] != self.batch):
            return None
        if len(shape) == 2:
            return "nc"
        if len(f.sides) == 1:
            side = next(iter(f.sides))
            if len(shape) == 4:
                return "nchw" if side == "first" else "nhwc"
            if len(shape) == 3 and side == "last":
                return self._tokens(shape)
            return None
        if f.sides:
            return None
        found = None
        if f.parent is not None:
            p = self._layout(f.parent)
            if p is not None and f.flow == "same" and (f.elementwise or _unambiguous(shape, p)):
                found = p
            elif p is not None and isinstance(f.flow, tuple) and len(shape) == 4:
                found = {("nchw", (0, 2, 3, 1)): "nhwc", ("nhwc", (0, 3, 1, 2)): "nchw"}.get((p, f.flow))
        if found is None and len(shape) == 4 and self._convention and shape[2:] in self._grids:
            found = "nchw"
        return found

    def _tokens(self, shape: tuple[int, ...]) -> str | None:
        if shape[1] != shape[2] and (shape[2], shape[1]) in self._last_read:
            return None  # [B, N, C] and [B, C, N] are both read as rows of features: which is which is unknown
        if token_grid(shape[1], self.input_size) is not None:
            return "tokens"
        if token_grid(shape[1] - 1, self.input_size) is not None:
            return "tokens+cls"
        return None

    def output_layout(self, name: str) -> str | None:
        """Layout of module ``name``'s output in the last forward (first call), ``None`` if undetermined."""
        name = canonical_layer(self.module, name)  # an alias reads its layer
        self._resolve()
        f = self.outputs.get(name)
        return None if f is None else self._layout(f)

    def input_layout(self, name: str) -> str | None:
        """Layout of module ``name``'s first tensor input in the last forward (first call)."""
        name = canonical_layer(self.module, name)  # an alias reads its layer
        self._resolve()
        f = self.inputs.get(name)
        return None if f is None else self._layout(f)

    def output_tensor(self, name: str) -> int | None:
        """Index of module ``name``'s output tensor object, in the order the forward made tensors (equal for modules
        returning the same object)."""
        name = canonical_layer(self.module, name)  # an alias reads its layer
        f = self.outputs.get(name)
        return None if f is None else f.order

    def why(self, name: str, *, inputs: bool = False) -> str:
        """A short reason why ``name``'s output (or input) has no layout, for error messages."""
        name = canonical_layer(self.module, name)
        self._resolve()
        f = (self.inputs if inputs else self.outputs).get(name)
        if f is None:
            return "it produced no tensor in the probe"
        if self.batch is not None and f.shape and f.shape[0] != self.batch:
            return f"its first dimension ({f.shape[0]}) is not the batch ({self.batch})"
        if len(f.sides) > 1:
            return "modules read it both channels-first and channels-last"
        if len(f.shape) == 3 and f.sides == {"last"}:
            return f"its {f.shape[1]} tokens form no grid shaped like the input, with or without a class token"
        return "no module around it tells which axis holds the channels"
