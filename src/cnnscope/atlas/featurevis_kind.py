"""Feature-visualization artifact kinds: channel (default), centre neuron and negative channel (optional).

Each chunk of units is one :func:`cnnscope.featurevis.render` batch (Olah et al., *Feature Visualization*,
Distill 2017). A batched render equals single renders with the same seeds, so a resumed build renders the same
pictures as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .encode import image_artifact
from .kinds import ArtifactKind, BuildContext, register_kind

TRACE_POINTS = 32


def _objectives(kind: str) -> Callable:
    from .. import featurevis as fv

    if kind == "featurevis":
        return lambda layer, c: fv.channel(layer, c)
    if kind == "featurevis_neuron":
        return lambda layer, c: fv.neuron(layer, c)
    return lambda layer, c: -fv.channel(layer, c)


def _produce_for(kind: str) -> Callable[[BuildContext, list[int]], dict]:
    def produce(ctx: BuildContext, units: list[int]) -> dict:
        from ..featurevis import measure, render

        make = _objectives(kind)
        objs = [make(ctx.layer.name, u) for u in units]
        o = ctx.options
        res = render(ctx.model, objs, recipe=o.recipe, steps=o.steps, size=o.size, seed=o.seed,
                     batch_size=len(objs))
        stored = measure(ctx.model, objs, res.images)  # the objective on exactly the stored uint8 picture
        idx = np.unique(np.linspace(0, len(res.trace) - 1, min(TRACE_POINTS, len(res.trace))).round().astype(int))
        out = {}
        for i, u in enumerate(units):
            spec = {k: v for k, v in res.spec.items() if k not in ("objectives", "seeds")}
            spec["objective"] = res.spec["objectives"][i]
            numbers = {"objective": res.labels[i], "activation": float(res.activations[i]),
                       "activation_stored_image": float(stored[i]),
                       "trace": {"step": (idx + 1).tolist(), "value": res.trace[idx, i].astype(float).tolist()}}
            out[u] = [image_artifact(kind, "image", res.images[i], numbers, spec=spec, seed=int(res.spec["seeds"][i]),
                                     render_timing=res.timing)]
        return out

    return produce


_COMMON = {"requires": "cnnscope.featurevis.render", "thumbnail": "image"}
register_kind(ArtifactKind(
    name="featurevis", title="Feature visualization (channel)", produce=_produce_for("featurevis"), order=10,
    description="image that maximises the channel's mean activation (Olah et al. 2017)", **_COMMON))
register_kind(ArtifactKind(
    name="featurevis_neuron", title="Feature visualization (centre neuron)", produce=_produce_for("featurevis_neuron"),
    order=11, optional=True, description="image that maximises the channel at the centre position", **_COMMON))
register_kind(ArtifactKind(
    name="featurevis_negative", title="Feature visualization (negative)", produce=_produce_for("featurevis_negative"),
    order=12, optional=True, description="image that minimises the channel's mean activation", **_COMMON))
