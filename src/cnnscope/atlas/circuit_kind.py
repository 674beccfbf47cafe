"""Circuit artifact kind: the strongest incoming weights of a unit from the layer below.

:func:`cnnscope.dataset.circuits.connection` gives the unit's direct convolution with an eval-mode batch norm
folded in (Cammarata et al., *Curve Detectors*, Distill 2020, "the weights"); the kind keeps the ``circuit_k``
strongest input kernels by L2 norm, and names the layer that feeds them so the viewer can link to those units.
Layers that are not a convolution, a batch norm after one, or the activation after those are left out, with the
reason recorded in the atlas.
"""

from __future__ import annotations

from .encode import figure_artifact
from .kinds import ArtifactKind, BuildContext, register_kind


def _feeding(ctx: BuildContext, conv: str) -> str | None:
    from ..dataset.circuits import feeding_layer
    from ..errors import LayerError

    key = ("feeding_layer", conv)
    if key not in ctx.cache:
        try:
            ctx.cache[key] = feeding_layer(ctx.model, conv)
        except LayerError:
            ctx.cache[key] = None  # the conv's input is computed inside a forward: no unit to link to
    return ctx.cache[key]


@register_kind
class Circuit(ArtifactKind):
    name = "circuit"
    title = "Circuit: strongest incoming weights"
    artifacts = {"weights": "image/png"}
    order = 40
    requires = "cnnscope.dataset.circuits"
    description = "the unit's conv kernels from the layer below (batch norm folded), strongest first"

    def applies(self, model, layer) -> str | None:
        from ..dataset.circuits import connection
        from ..errors import LayerError

        try:
            connection(model, layer.name, 0, verify=True)
        except LayerError as exc:
            return str(exc)
        return None

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        from ..dataset.circuits import connection
        from ..plot.atlas import circuit_figure

        k = ctx.options.circuit_k
        out = {}
        for u in units:
            conn = connection(ctx.model, ctx.layer.name, u, verify=False)
            source = _feeding(ctx, conn.conv)
            order = conn.ranked(k)
            inputs = [{"layer": source, "unit": int(conn.inputs[i]), "norm": float(conn.norms[i]),
                       "weights": conn.weights[i].tolist()} for i in order]
            labels = [f"{source or conn.conv + ' in'}:{it['unit']}" for it in inputs]
            fig = circuit_figure(conn.weights[order].numpy(), labels, title=f"{ctx.layer.name}:{u} strongest inputs "
                                 f"(of {len(conn.inputs)}) via {conn.conv}")
            numbers = {"conv": conn.conv, "norm": conn.norm, "bias": conn.bias, "source": source,
                       "kernel": list(conn.weights.shape[1:]), "total_inputs": len(conn.inputs), "inputs": inputs}
            spec = {"conv": conn.conv, "norm": conn.norm, "k": k, "ranking": "L2 norm of the folded kernel"}
            out[u] = [figure_artifact(self.name, "weights", fig, numbers, spec=spec, seed=None)]
        return out
