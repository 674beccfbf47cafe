"""``Capture``: record layer activations (and their gradients) during a forward pass.

This is the one place that registers forward hooks on a user's model (docs/ARCHITECTURE.md, rule 1). Hooks live only
inside the ``with`` block and are removed in ``finally``. Activations are handed out in channels-first views
(``[B, C, H, W]``) whatever the layer's layout (:mod:`.layout`), so channels and positions mean the same everywhere.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import LayerError
from ..units import as_nchw, check_layout
from .layout import LayoutProbe, channels_first_module
from .state import StopForward, canonical_layer, evaluating, first_tensor, is_activation, module_of, resolve_layers

if TYPE_CHECKING:
    from ..models import ModelLike

REUSE_MODES = ("error", "all", "last")
LayoutOption = str | Mapping[str, str] | None


_DECLARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def declare_layout(model: ModelLike, layouts: Mapping[str, str]) -> None:
    """Say once how layers of ``model`` are laid out (``{layer: "nchw" | "nhwc" | "tokens" | "tokens+cls"}``), for
    every function that reads them (renders, statistics, attribution, ...) while the model lives: the layouts the
    detection (:mod:`.layout`) cannot determine, or a correction of it. A ``layout=`` option of :class:`Capture` or
    :func:`~cnnscope.capture.list_layers` still wins for its call. A layer may be named by an alias (it is
    recorded under its dotted name).

    Raises:
        LayerError: an unknown layer or layout name.
    """
    module = module_of(model)
    resolve_layers(module, list(layouts))
    # stored under the dotted names, so an alias and its layer are one layer for every later reader
    checked = {canonical_layer(module, name): check_layout(lay) for name, lay in layouts.items()}
    _DECLARED.setdefault(module, {}).update(checked)


def declared_layouts(model: ModelLike) -> dict[str, str]:
    """The layouts :func:`declare_layout` recorded for ``model`` (``{}`` when none)."""
    return dict(_DECLARED.get(module_of(model), {}))


def layout_overrides(layout: LayoutOption, names: Iterable[str]) -> dict[str, str]:
    """``{layer: layout}`` from a ``layout=`` option: ``None``/``"auto"`` (none), ``"raw"`` (none), one layout name
    for every layer, or a mapping ``{layer: layout}`` whose layers must be among ``names``.

    Raises:
        LayerError: an unknown layout name, or a mapping naming a layer that is not requested.
    """
    wanted = list(names)
    if layout is None or layout in ("auto", "raw"):
        return {}
    if isinstance(layout, str):
        check_layout(layout)
        return dict.fromkeys(wanted, layout)
    if not isinstance(layout, Mapping):
        raise LayerError(f"layout is 'auto', 'raw', a layout name or {{layer: layout}}, got {layout!r}")
    extra = [k for k in layout if k not in wanted]
    if extra:
        raise LayerError(f"layout names layers that are not requested: {', '.join(map(str, extra))} "
                         f"(requested: {', '.join(wanted)})")
    return {k: check_layout(v) for k, v in layout.items()}


def undetermined(layer: str, shape: tuple[int, ...], why: str) -> LayerError:
    """The error for a layer whose layout cannot be determined (one line, naming the ``layout=`` option)."""
    return LayerError(f"the layout of layer {layer!r} (output {list(shape)}) cannot be determined: {why}; "
                      f"declare it once with cnnscope.capture.declare_layout(model, {{{layer!r}: 'nhwc'}}) (layouts: "
                      "nchw, nhwc, tokens, tokens+cls; Capture and list_layers also take layout=), or choose another "
                      "layer")


class Capture:
    """Context manager that records the outputs (or activation inputs) of named layers.

    Example:
        >>> with Capture(model, ["blocks.4.0", "blocks.6.0"], grads=True) as cap:
        ...     logits = cap.run(x)  # full forward, since a later backward needs the logits
        ...     logits[:, 281].sum().backward()
        >>> cap.activations["blocks.4.0"].shape, cap.grads["blocks.4.0"].shape

    Args:
        model: a ``LoadedModel`` or any ``nn.Module``; it is not modified.
        layers: one dotted name or several (``named_modules()`` names).
        grads: also record the gradient of whatever is back-propagated w.r.t. each captured tensor
            (through tensor hooks, so in-place activations are handled).
        stop_early: :meth:`run` ends the forward as soon as every requested layer was seen (the first
            :meth:`run` of a context does a full forward once to detect modules that run twice).
        pre_activation: capture the *input* of activation modules (pre-ReLU values). Every layer must then be
            an activation module.
        reuse: a captured module that runs twice in one forward raises unless ``"all"`` (keep a list of every
            call) or ``"last"`` (keep the last call).
        clone: store clones, so later in-place operations cannot change what was captured. The clones stay
            differentiable w.r.t. the input.
        eval_mode: :meth:`run` runs the module in eval mode (every ``training`` flag is restored afterwards, so
            batch-norm statistics never change); ``False`` runs it in whatever mode it is in.
        layout: how to read each layer's output. ``"auto"`` (default): detect the layout (:mod:`.layout`, during the
            first forward of the context) and record ``[B, C, H, W]`` views (``[B, C]`` without a grid): ``[B, H, W,
            C]`` outputs are permuted, tokens laid out on their grid with the class token dropped; a layer whose
            layout cannot be determined raises :class:`LayerError`. ``"nchw"``, ``"nhwc"``, ``"tokens"``,
            ``"tokens+cls"``: every layer is read so; ``{layer: layout}``: those layers so, the others detected;
            ``"raw"``: the tensors as the modules return them.

    Attributes:
        activations: ``name -> Tensor`` (``name -> list[Tensor]`` with ``reuse="all"``).
        grads: ``name -> Tensor`` (or list), filled during backward, in the same views as the activations.
        layouts: ``name -> layout`` of each layer, once known (``{}`` with ``layout="raw"``; ``"as is"`` for an
            output without a channel axis, ``[B]``).
        stopped: whether the last :meth:`run` ended early.
    """

    def __init__(self, model: ModelLike, layers: str | Iterable[str], *, grads: bool = False,
                 stop_early: bool = True, pre_activation: bool = False, reuse: str = "error",
                 clone: bool = True, eval_mode: bool = True, layout: LayoutOption = "auto") -> None:
        if reuse not in REUSE_MODES:
            raise LayerError(f"reuse must be one of {REUSE_MODES}, got {reuse!r}")
        module = self.module = module_of(model)
        self.layers = resolve_layers(module, layers)
        self.names = list(self.layers)
        if pre_activation:
            bad = [f"{n} ({type(m).__name__})" for n, m in self.layers.items() if not is_activation(m)]
            if bad:
                raise LayerError("pre_activation=True needs activation modules (ReLU, ReLU6, ...), but these "
                                 "are not: " + ", ".join(bad) + "; pass the activation submodule's name instead")
        self.grads_wanted = grads
        self.stop_early = stop_early
        self.pre_activation = pre_activation
        self.reuse = reuse
        self.clone = clone
        self.eval_mode = eval_mode
        self.raw = layout == "raw"
        known = {} if self.raw else declared_layouts(module)
        declared = {n: known[c] for n in self.names if (c := canonical_layer(module, n)) in known}
        self.layouts: dict[str, str] = {**declared, **layout_overrides(layout, self.names)}
        self._acts: dict[str, Any] = {}
        self._grads: dict[str, Any] = {}
        self.stopped = False
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []
        self._stopping = False
        self._validated = False
        self._probe: LayoutProbe | None = None
        self._pending: set[str] = set()
        self._error: LayerError | None = None
        self._input_size: tuple[int, int] | None = None

    @property
    def activations(self) -> dict[str, Any]:
        """``name -> Tensor`` (``name -> list[Tensor]`` with ``reuse="all"``) of the last forward."""
        self._settle()
        return self._acts

    @property
    def grads(self) -> dict[str, Any]:
        """``name -> Tensor`` (or list) of the gradients recorded during backward."""
        return self._grads

    # -- context -----------------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        try:
            for name, mod in self.layers.items():
                if self.pre_activation:
                    h = mod.register_forward_pre_hook(partial(self._pre_hook, name))
                else:
                    h = mod.register_forward_hook(partial(self._hook, name))
                self._handles.append(h)
            if not self.raw:
                self._handles.append(self.module.register_forward_pre_hook(self._note_input))
                unknown = [n for n in self.names if n not in self.layouts]
                if any(self.pre_activation or not channels_first_module(self.layers[n]) for n in unknown):
                    self._probe = LayoutProbe(self.module, on_complete=self._forward_done).attach()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()
        self._drop_probe()

    def _drop_probe(self) -> None:
        if self._probe is not None:
            self._probe.detach()
            self._probe = None

    # -- layouts -----------------------------------------------------------------------------------
    def _note_input(self, module: nn.Module, inputs: tuple) -> None:
        t = first_tensor(inputs)
        self._input_size = (int(t.shape[-2]), int(t.shape[-1])) if t is not None and t.ndim == 4 else None

    def _layout_now(self, name: str, t: torch.Tensor) -> str | None:
        """The layer's layout if it is known (or obvious) at record time; ``None``: wait for the probe."""
        if name in self.layouts:
            return self.layouts[name]
        lay = None
        if t.ndim <= 1:
            lay = "as is"  # one value per image or a scalar: no channels to place
        elif t.ndim == 2:
            lay = "nc"
        elif t.ndim == 4 and not self.pre_activation and channels_first_module(self.layers[name]):
            lay = "nchw"
        elif self._probe is None:
            raise undetermined(name, tuple(t.shape), "no probe could watch the forward")
        if lay is not None:
            self.layouts[name] = lay
        return lay

    def _view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        lay = self.layouts[name]
        return t if lay == "as is" else as_nchw(t, lay, self._input_size, name)

    def _forward_done(self) -> None:
        """End of the first forward the probe watched: decide the open layouts now; an error waits until the
        activations are read (so that a layer that did not run is reported first)."""
        try:
            self._finalize()
        except LayerError as exc:
            self._error = exc

    def _settle(self) -> None:
        if self._error is None and self._pending:
            self._forward_done()
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def _finalize(self) -> None:
        """Decide the layouts still open after the first forward and convert what was recorded with them."""
        probe = self._probe
        if probe is None:
            return
        for name in sorted(self._pending):
            lay = probe.input_layout(name) if self.pre_activation else probe.output_layout(name)
            if lay is None:
                self._pending.clear()
                self._drop_probe()
                raw = self._acts.get(name)
                shape = tuple((raw[0] if isinstance(raw, list) else raw).shape) if raw is not None else ()
                raise undetermined(name, shape, probe.why(name, inputs=self.pre_activation))
            self.layouts[name] = lay
            got = self._acts.get(name)
            if isinstance(got, list):
                self._acts[name] = [self._view(name, a) for a in got]
            elif got is not None:
                self._acts[name] = self._view(name, got)
        self._pending.clear()
        if probe.complete or all(n in self.layouts for n in self.names):
            self._drop_probe()

    # -- recording ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget what the previous forward recorded."""
        self._acts = {}
        self._grads = {}
        self._calls = {}
        self._pending = set()
        self._error = None
        self.stopped = False

    def _record(self, name: str, value: object) -> None:
        t = first_tensor(value)
        if t is None:
            raise LayerError(f"layer {name!r} produced no tensor (got {type(value).__name__})")
        n = self._calls.get(name, 0) + 1
        self._calls[name] = n
        if n > 1 and self.reuse == "error":
            raise LayerError(f"layer {name!r} ran {n} times in one forward pass (a module reused inside the "
                             "model), so it has no single output: choose its parent block or a layer that runs "
                             "once (Capture itself also takes reuse='all' or reuse='last')")
        stored = t.clone() if self.clone else t
        if self.grads_wanted and t.requires_grad:
            t.register_hook(partial(self._save_grad, name, n - 1))
        if not self.raw:
            if self._layout_now(name, t) is None:
                self._pending.add(name)
            else:
                stored = self._view(name, stored)
        if self.reuse == "all":
            self._acts.setdefault(name, []).append(stored)
        else:
            self._acts[name] = stored
        if self._stopping and len(self._calls) == len(self.names):
            self.stopped = True
            raise StopForward

    def _hook(self, name: str, module: nn.Module, inputs: tuple, output: object) -> None:
        self._record(name, output)

    def _pre_hook(self, name: str, module: nn.Module, inputs: tuple) -> None:
        self._record(name, inputs)

    def _save_grad(self, name: str, index: int, grad: torch.Tensor) -> None:
        self._settle()
        g = grad.detach() if self.raw else self._view(name, grad.detach())
        if self.reuse == "all":
            slots = self._grads.setdefault(name, [None] * self._calls.get(name, index + 1))
            while len(slots) <= index:
                slots.append(None)
            slots[index] = g
        else:
            self._grads[name] = g

    # -- running -----------------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Forward ``module(*args, **kwargs)`` while recording.

        Returns:
            The model's output, or ``None`` when the pass stopped early (then :attr:`stopped` is ``True``).

        Raises:
            LayerError: a requested layer never ran, or ran twice with ``reuse="error"``.
        """
        if not self._handles:
            raise LayerError("Capture.run() must be called inside 'with Capture(...) as cap:'")
        self.reset()
        self._stopping = self.stop_early and self._validated and self.reuse == "error"
        try:
            if self.eval_mode:
                with evaluating(self.module):
                    out = self.module(*args, **kwargs)
            else:
                out = self.module(*args, **kwargs)
        except StopForward:
            out = None
        finally:
            self._stopping = False
        missing = [n for n in self.names if n not in self._calls]
        if missing:
            raise LayerError("these layers did not run in the forward pass: " + ", ".join(missing))
        self._settle()
        self._validated = True
        return out

    def __getitem__(self, name: str) -> Any:
        acts = self.activations
        if name not in acts:
            raise LayerError(f"layer {name!r} was not captured (captured: {', '.join(acts)})")
        return acts[name]


def capture(model: ModelLike, images: torch.Tensor, layers: str | Iterable[str], **options: Any
            ) -> dict[str, torch.Tensor]:
    """One-shot: run the model on ``images`` and return ``{layer: activation}``.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        images: a model-space ``[B, C, H, W]`` tensor; with a ``LoadedModel`` also pictures (see
            :meth:`~cnnscope.models.LoadedModel.batch`).
        layers: dotted layer name(s).
        **options: :class:`Capture` options (keyword-only).

    A single call does a full forward (to detect reused modules); loops should keep one :class:`Capture`
    open so that later passes stop early.
    """
    x = model.batch(images) if hasattr(model, "batch") and hasattr(model, "module") else images
    with Capture(model, layers, **options) as cap:
        cap.run(x)
    return dict(cap.activations)
