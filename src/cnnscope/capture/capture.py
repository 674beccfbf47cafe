"""``Capture``: record layer activations (and their gradients) during a forward pass.

This is the one place that registers forward hooks on a user's model (docs/ARCHITECTURE.md, rule 1). Hooks live only
inside the ``with`` block and are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import LayerError
from .state import StopForward, evaluating, first_tensor, is_activation, module_of, resolve_layers

if TYPE_CHECKING:
    from ..models import ModelLike

REUSE_MODES = ("error", "all", "last")


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

    Attributes:
        activations: ``name -> Tensor`` (``name -> list[Tensor]`` with ``reuse="all"``).
        grads: ``name -> Tensor`` (or list), filled during backward.
        stopped: whether the last :meth:`run` ended early.
    """

    def __init__(self, model: ModelLike, layers: str | Iterable[str], *, grads: bool = False,
                 stop_early: bool = True, pre_activation: bool = False, reuse: str = "error",
                 clone: bool = True, eval_mode: bool = True) -> None:
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
        self.activations: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.stopped = False
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []
        self._stopping = False
        self._validated = False

    # -- context -----------------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        try:
            for name, mod in self.layers.items():
                if self.pre_activation:
                    h = mod.register_forward_pre_hook(partial(self._pre_hook, name))
                else:
                    h = mod.register_forward_hook(partial(self._hook, name))
                self._handles.append(h)
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

    # -- recording ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget what the previous forward recorded."""
        self.activations = {}
        self.grads = {}
        self._calls = {}
        self.stopped = False

    def _record(self, name: str, value: object) -> None:
        t = first_tensor(value)
        if t is None:
            raise LayerError(f"layer {name!r} produced no tensor (got {type(value).__name__})")
        n = self._calls.get(name, 0) + 1
        self._calls[name] = n
        if n > 1 and self.reuse == "error":
            raise LayerError(f"layer {name!r} ran {n} times in one forward pass (a module reused inside the "
                             "model); pass reuse='all' to keep every call or reuse='last' for the last one")
        stored = t.clone() if self.clone else t
        if self.grads_wanted and t.requires_grad:
            t.register_hook(partial(self._save_grad, name, n - 1))
        if self.reuse == "all":
            self.activations.setdefault(name, []).append(stored)
        else:
            self.activations[name] = stored
        if self._stopping and len(self._calls) == len(self.names):
            self.stopped = True
            raise StopForward

    def _hook(self, name: str, module: nn.Module, inputs: tuple, output: object) -> None:
        self._record(name, output)

    def _pre_hook(self, name: str, module: nn.Module, inputs: tuple) -> None:
        self._record(name, inputs)

    def _save_grad(self, name: str, index: int, grad: torch.Tensor) -> None:
        if self.reuse == "all":
            slots = self.grads.setdefault(name, [None] * self._calls.get(name, index + 1))
            while len(slots) <= index:
                slots.append(None)
            slots[index] = grad.detach()
        else:
            self.grads[name] = grad.detach()

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
        self._validated = True
        return out

    def __getitem__(self, name: str) -> Any:
        if name not in self.activations:
            raise LayerError(f"layer {name!r} was not captured (captured: {', '.join(self.activations)})")
        return self.activations[name]


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
