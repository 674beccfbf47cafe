"""Feature-visualization artifact kinds: channel (default), centre neuron and negative channel (optional).

Each chunk of units is one :func:`cnnscope.featurevis.render` batch (Olah et al., *Feature Visualization*,
Distill 2017). A batched render equals single renders with the same seeds, so a resumed build renders the same
pictures as an uninterrupted one.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .encode import image_artifact
from .kinds import ArtifactKind, BuildContext, register_kind

TRACE_POINTS = 32


class _FeatureVis(ArtifactKind):
    """A rendered image per unit that maximises :meth:`objective`, with its activation and optimisation trace."""

    artifacts = {"image": "image/png"}
    requires = "cnnscope.featurevis.render"
    thumbnail = "image"

    #: maximise the centre position instead of the channel's mean; minimise instead of maximise
    neuron: ClassVar[bool] = False
    negative: ClassVar[bool] = False

    def objective(self, layer: str, c: int, pre_activation: bool):
        from ..featurevis import channel, neuron

        obj = (neuron if self.neuron else channel)(layer, c, pre_activation=pre_activation)
        return -obj if self.negative else obj

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        from ..featurevis import measure, render

        objs = [self.objective(ctx.layer.name, u, ctx.options.pre_activation) for u in units]
        o = ctx.options
        res = render(ctx.model, objs, recipe=o.recipe, steps=o.steps, size=o.size, seed=o.seed,
                     batch_size=len(objs))
        stored = measure(ctx.model, res.images, objs)  # the objective on exactly the stored uint8 picture
        idx = np.unique(np.linspace(0, len(res.trace) - 1, min(TRACE_POINTS, len(res.trace))).round().astype(int))
        out = {}
        for i, u in enumerate(units):
            spec = {k: v for k, v in res.spec.items() if k not in ("objectives", "seeds")}
            spec["objective"] = res.spec["objectives"][i]
            numbers = {"objective": res.labels[i], "activation": float(res.activations[i]),
                       "activation_stored_image": float(stored[i]),
                       "trace": {"step": (idx + 1).tolist(), "value": res.trace[idx.tolist(), i].tolist()}}
            out[u] = [image_artifact(self.name, "image", res.images[i], numbers, spec=spec,
                                     seed=int(res.spec["seeds"][i]), render_timing=res.timing)]
        return out


@register_kind
class FeatureVisChannel(_FeatureVis):
    name = "featurevis"
    title = "Feature visualization (channel)"
    order = 10
    description = "image that maximises the channel's mean activation (Olah et al. 2017)"


@register_kind
class FeatureVisNeuron(_FeatureVis):
    name = "featurevis_neuron"
    title = "Feature visualization (centre neuron)"
    order, optional, neuron = 11, True, True
    description = "image that maximises the channel at the centre position"


@register_kind
class FeatureVisNegative(_FeatureVis):
    name = "featurevis_negative"
    title = "Feature visualization (negative)"
    order, optional, negative = 12, True, True
    description = "image that minimises the channel's mean activation"
