"""Feature-visualization artifact kinds: channel, diversity and centre neuron renders (default), negative (optional).

Each chunk of units is one :func:`cnnscope.featurevis.render` batch (Olah et al., *Feature Visualization*,
Distill 2017). A batched render equals single renders with the same seeds, so a resumed build renders the same
pictures as an uninterrupted one.

What is optimised: on an activation module (ReLU, ReLU6, ...) the renders optimise its *input*, the
pre-activation, as Lucid does: a ReLU passes no gradient where its input is negative, so a unit that is rarely
positive would never move from the initial noise. The layer's output (the unit's activation) is reported next to
it. With ``BuildOptions.pre_activation`` the unit *is* the pre-activation and nothing else is reported.

Every picture's numbers carry the objective's own value (a negative render reports the channel's value, not its
negation), a trace measured on the untransformed picture at up to :data:`TRACE_POINTS` steps, and ``"dead"``:
``True`` with a ``"dead_reason"`` when the watched value (the activation; the objective where nothing else is
reported) stayed at zero over the whole trace, so the picture is not a result to be read as one (also the unit's
``dead`` fact, 1 or 0, which the layer page filters by). The channel kind adds a :data:`THUMBNAIL`-pixel JPEG of
its render for the layer page's grid.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from ..errors import CnnscopeError
from .encode import image_artifact, thumbnail_bytes
from .kinds import ArtifactKind, BuildContext, register_kind
from .records import Artifact

#: steps of the optimisation at which the stored trace measures the picture
TRACE_POINTS = 16
#: most diversity renders per unit (``BuildOptions.diversity``); their artifacts are declared up to it
MAX_DIVERSITY = 8
#: a value at most this far from zero counts as zero for ``"dead"``
DEAD_TOLERANCE = 1e-6
#: pixels a side of the channel render's thumbnail (the layer page's grid)
THUMBNAIL = 96


def _optimises_input(ctx: BuildContext) -> bool:
    """Whether the renders optimise the layer's input instead of its output: an activation module's units, unless
    the build reads every layer's input anyway (``options.pre_activation``)."""
    from ..capture import is_activation, resolve_layers

    if ctx.options.pre_activation:
        return False
    module = resolve_layers(ctx.model.module, ctx.layer.name)[ctx.layer.name]
    return bool(is_activation(module))


def _trace_steps(steps: int) -> list[int]:
    """Up to :data:`TRACE_POINTS` steps (1-based, the last one included) at which the trace is measured."""
    idx = np.linspace(0, steps - 1, min(TRACE_POINTS, steps)).round().astype(int)
    return (np.unique(idx) + 1).tolist()


def _dead_reason(values: list[float], optimised: list[float] | None) -> str | None:
    """Why a picture is no result (its watched ``values`` stayed at zero over the trace), else ``None``."""
    if max(abs(v) for v in values) > DEAD_TOLERANCE:
        return None
    if optimised is not None:
        return (f"the activation stayed at 0 over the whole optimisation (its pre-activation reached at most "
                f"{max(optimised):.4g}): no input the renderer found makes this unit fire")
    return ("the objective stayed at 0 over the whole optimisation: no gradient reached the image, so the picture "
            "is the initial noise, not a feature")


def _measure(model, res, steps: list[int], objs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``objs[n]`` on stored picture ``n`` (``[N]``) and on its snapshot at each of ``steps`` (``[steps, N]``), in
    one :func:`~cnnscope.featurevis.measure` call."""
    from ..featurevis import measure

    pictures = np.concatenate([res.images] + [res.snapshots[s] for s in steps])
    values = measure(model, pictures, objs * (len(steps) + 1)).cpu().view(len(steps) + 1, len(objs))
    return values[0], values[1:]


class _FeatureVis(ArtifactKind):
    """Rendered images per unit that maximise :meth:`objective`, with their values and optimisation traces."""

    artifacts = {"image": "image/png"}
    requires = "cnnscope.featurevis.render"
    thumbnail = "image"

    #: maximise the centre position instead of the channel's mean; minimise instead of maximise
    neuron: ClassVar[bool] = False
    negative: ClassVar[bool] = False

    def objective(self, layer: str, c: int, pre_activation: bool):
        """The unit's own objective (the value reported; a negative render minimises it)."""
        from ..featurevis import channel, neuron

        return (neuron if self.neuron else channel)(layer, c, pre_activation=pre_activation)

    def images_per_unit(self, ctx: BuildContext) -> int:
        """Pictures rendered per unit (``render(..., diversity=)``)."""
        return 1

    def names(self, ctx: BuildContext) -> list[str]:
        """Artifact names of a unit's pictures, in render order."""
        return ["image"]

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        from ..featurevis import render

        o, k, layer = ctx.options, self.images_per_unit(ctx), ctx.layer.name
        on_input = _optimises_input(ctx)
        own = [self.objective(layer, u, on_input or o.pre_activation) for u in units]
        objs = [-obj if self.negative else obj for obj in own]
        steps = _trace_steps(o.steps)
        res = render(ctx.model, objs, recipe=o.recipe, steps=o.steps, size=o.size, seed=o.seed,
                     batch_size=len(objs) * k, diversity=k, thresholds=steps)
        # the unit's own value (and with on_input the layer's output) on the stored uint8 picture and at each step
        value_stored, value_trace = _measure(ctx.model, res, steps, [obj for obj in own for _ in range(k)])
        if on_input:
            outs = [self.objective(layer, u, False) for u in units for _ in range(k)]
            act_stored, act_trace = _measure(ctx.model, res, steps, outs)
        out: dict[int, list] = {u: [] for u in units}
        for i, u in enumerate(units):
            spec = {key: v for key, v in res.spec.items() if key not in ("objectives", "seeds")}
            spec["objective"] = res.spec["objectives"][i]  # what was maximised: render(from_spec(...)) redoes it
            for j, name in enumerate(self.names(ctx)):
                n = i * k + j
                value = float(res.activations[n])  # render reports a minimised objective's own value
                numbers = {"objective": repr(own[i]), "direction": "minimise" if self.negative else "maximise",
                           "optimised": "pre_activation" if on_input or o.pre_activation else "output",
                           "value": value, "value_stored_image": float(value_stored[n]),
                           "trace": {"step": steps, "value": value_trace[:, n].tolist()}}
                watched, optimised = numbers["trace"]["value"], None
                if on_input:
                    numbers["activation_objective"] = repr(self.objective(layer, u, False))
                    numbers["activation"] = numbers["activation_stored_image"] = float(act_stored[n])
                    numbers["trace"]["activation"] = act_trace[:, n].tolist()
                    if not self.negative:  # a minimised ReLU unit's output is 0 by design, not dead
                        watched, optimised = numbers["trace"]["activation"] + [numbers["activation"]], watched
                else:
                    numbers["activation"], numbers["activation_stored_image"] = value, numbers["value_stored_image"]
                    watched = watched + [value]
                reason = _dead_reason(watched, optimised)
                numbers["dead"] = reason is not None
                if reason:
                    numbers["dead_reason"] = reason
                art = image_artifact(self.name, name, res.images[n], numbers, spec=spec,
                                     seed=int(res.spec["seeds"][i]) + j, render_timing=res.timing)
                channel = j == 0 and self.name == "featurevis"  # the layer page's dead mark is the channel render's
                out[u].append(replace(art, facts={"dead": float(numbers["dead"])}) if channel else art)
                if j == 0 and "thumbnail" in self.artifacts:
                    out[u].append(Artifact(kind=self.name, name="thumbnail", mime="image/jpeg",
                                           data=thumbnail_bytes(res.images[n], THUMBNAIL),
                                           numbers={"of": name, "size": THUMBNAIL},
                                           provenance={**art.provenance, "of": name}))
        return out


@register_kind
class FeatureVisChannel(_FeatureVis):
    name = "featurevis"
    title = "Feature visualization (channel)"
    artifacts = {"image": "image/png", "thumbnail": "image/jpeg"}
    thumbnail = "thumbnail"
    order = 10
    description = "image that maximises the channel's mean activation (Olah et al. 2017)"


@register_kind
class FeatureVisDiversity(_FeatureVis):
    name = "featurevis_diversity"
    title = "Feature visualization (diversity)"
    artifacts = {f"diversity_{j + 1}": "image/png" for j in range(MAX_DIVERSITY)}
    thumbnail = None
    order = 11
    description = ("BuildOptions.diversity images that maximise the channel's mean activation while differing from "
                   "each other (Olah et al. 2017, 'Diversity')")

    def images_per_unit(self, ctx: BuildContext) -> int:
        k = ctx.options.diversity
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_DIVERSITY:
            raise CnnscopeError(f"diversity must be 2..{MAX_DIVERSITY} images per unit, got {k!r} (leave the "
                                "featurevis_diversity kind out for none)")
        return k

    def names(self, ctx: BuildContext) -> list[str]:
        return [f"diversity_{j + 1}" for j in range(self.images_per_unit(ctx))]


@register_kind
class FeatureVisNeuron(_FeatureVis):
    name = "featurevis_neuron"
    title = "Feature visualization (centre neuron)"
    order, neuron = 12, True
    description = "image that maximises the channel at the centre position"


@register_kind
class FeatureVisNegative(_FeatureVis):
    name = "featurevis_negative"
    title = "Feature visualization (negative)"
    order, optional, negative = 13, True, True
    description = "image that minimises the channel's mean activation (its value is the channel's, not negated)"
