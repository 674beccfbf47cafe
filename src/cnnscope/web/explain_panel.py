"""The explain page's computation: :func:`cnnscope.attribution.explain` on one image and its panel figure.

A running explanation can be cancelled (its client went away): the flag is checked before and after the
methods, and during them after each top-level submodule of the model in every forward pass (through
:func:`~cnnscope.capture.patch_outputs`, whose hooks pass every output on unchanged), so a job stops within
one forward pass of any method (one integrated-gradients batch, one batch of RISE masks), not at its end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from ..capture import patch_outputs
from ..models import ModelLike, as_model

#: per-method options that keep a request to seconds on a CPU (the defaults suit offline use)
FAST_OPTIONS = {"integrated_gradients": {"n_steps": 16}, "smoothgrad": {"n_samples": 16},
                "rise": {"n_masks": 512}}


class Cancelled(Exception):
    """The explanation's client went away and the job stopped at a check; not a mistake in any input (so it is
    not a :class:`~cnnscope.errors.CnnscopeError`, which :func:`~cnnscope.attribution.explain` would take for a
    method that cannot apply and skip)."""


def check_cancelled(cancelled: threading.Event | None) -> None:
    """Raise :class:`Cancelled` when ``cancelled`` is set."""
    if cancelled is not None and cancelled.is_set():
        raise Cancelled("the client disconnected")


def _watch(model: ModelLike, cancelled: threading.Event | None) -> AbstractContextManager:
    """A context in which every forward pass of ``model`` raises :class:`Cancelled` once ``cancelled`` is set
    (checked after each top-level submodule)."""
    module = as_model(model).module
    children = [name for name, _ in module.named_children()]
    if cancelled is None or not children or isinstance(module, torch.jit.ScriptModule):
        return nullcontext()  # a TorchScript model takes no hooks: checked between the steps only

    def check(out):
        check_cancelled(cancelled)
        return out

    return patch_outputs(model, dict.fromkeys(children, check))


def explain_panel(model: ModelLike, image: np.ndarray, methods: Sequence[str], *, target: int | None = None,
                  batch_size: int | None = None, cancelled: threading.Event | None = None) -> dict:
    """Explain one picture (``uint8 [H, W, 3]``) with ``methods`` for ``target`` (``None``: top-1); nothing is
    written. ``batch_size``: images per forward of every method (``None``: each method's default for the device).
    ``cancelled``: when it is set, the computation stops within one forward pass (see the module's docstring).

    Returns:
        ``{"predictions", "target", "methods", "attribution" (per-method statistics), "seconds", "panel_png"}``.

    Raises:
        Cancelled: ``cancelled`` was set.
    """
    from ..atlas.encode import figure_png
    from ..attribution import explain, get_method
    from ..plot.attribution import panel_figure

    t0 = time.perf_counter()
    options = {}
    for m in methods:
        known = get_method(m).defaults()
        opts = {k: v for k, v in FAST_OPTIONS.get(m, {}).items() if k in known}
        if opts:
            options[m] = opts
    check_cancelled(cancelled)
    with _watch(model, cancelled):
        [ex] = explain(model, [image], methods=methods, target=target, names=["upload"], options=options,
                       batch_size=batch_size)
    check_cancelled(cancelled)
    png = figure_png(panel_figure(ex), dpi=90)
    summary = ex.to_dict()
    return {"predictions": summary["top"], "methods": list(methods),
            "target": {"label": ex.target, "index": ex.target_index, "probability": ex.target_probability},
            "attribution": summary["methods"], "skipped": summary["skipped"], "seconds": time.perf_counter() - t0,
            "panel_png": png}
