"""The explain page's computation: :func:`cnnscope.attribution.explain` on one image and its panel figure."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..models import ModelLike

#: per-method options that keep a request to seconds on a CPU (the defaults suit offline use)
FAST_OPTIONS = {"integrated_gradients": {"n_steps": 16}, "smoothgrad": {"n_samples": 16},
                "rise": {"n_masks": 512}}


def explain_panel(model: ModelLike, image: np.ndarray, methods: Sequence[str], *, target: int | None = None,
                  batch_size: int | None = None) -> dict:
    """Explain one picture (``uint8 [H, W, 3]``) with ``methods`` for ``target`` (``None``: top-1); nothing is
    written. ``batch_size``: images per forward of every method (``None``: each method's default for the device).

    Returns:
        ``{"predictions", "target", "methods", "attribution" (per-method statistics), "seconds", "panel_png"}``.
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
    [ex] = explain(model, [image], methods=methods, target=target, names=["upload"], options=options,
                   batch_size=batch_size)
    png = figure_png(panel_figure(ex), dpi=90)
    summary = ex.to_dict()
    return {"predictions": summary["top"], "methods": list(methods),
            "target": {"label": ex.target, "index": ex.target_index, "probability": ex.target_probability},
            "attribution": summary["methods"], "skipped": summary["skipped"], "seconds": time.perf_counter() - t0,
            "panel_png": png}
