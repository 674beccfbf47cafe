"""Circuit artifact kind: the strongest incoming weights of a unit from the layer below.

:func:`cnnscope.dataset.circuits.connection` gives the unit's direct convolution with an eval-mode batch norm
folded in (Cammarata et al., *Curve Detectors*, Distill 2020, "the weights"); the kind keeps the ``circuit_k``
strongest input kernels by L2 norm (each input's signed weight is its kernel's sum, the response to a uniform
input), and names the layer that feeds them so the viewer can link to those units: among every name of the feeding
tensor (a block and its last child, ...) the one the atlas holds. The inputs are stored as the unit's links, so the
viewer also lists each unit's outgoing units (the units of the next layer that count it among their strongest
inputs). :meth:`Circuit.advice` names the feeding layers a build leaves out (their units cannot be linked).
Layers that are not a convolution, a batch norm after one, or the activation after those are left out, with the
reason recorded in the atlas.
"""

from __future__ import annotations

from dataclasses import replace

from .encode import figure_artifact
from .kinds import ArtifactKind, BuildContext, register_kind


def _feeding(ctx: BuildContext, conv: str) -> tuple[str | None, list[str]]:
    """The layer whose units feed ``conv`` under the name the atlas holds (among every name of that tensor: a
    block and its last child, ...; the first name when the atlas holds none) and all its names."""
    from ..dataset.circuits import feeding_layers
    from ..errors import LayerError

    key = ("feeding_layers", conv)
    if key not in ctx.cache:
        try:
            ctx.cache[key] = feeding_layers(ctx.model, conv)
        except LayerError:
            ctx.cache[key] = []  # the conv's input is computed inside a forward: no unit to link to
    names = ctx.cache[key]
    held = set(ctx.cache.get("atlas_layers") or ()) | set(ctx.layers)
    return next((n for n in names if n in held), names[0] if names else None), names


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
            source, names = _feeding(ctx, conn.conv)
            order = conn.ranked(k)
            inputs = [{"layer": source, "unit": int(conn.inputs[i]), "norm": float(conn.norms[i]),
                       "weight": float(conn.weights[i].sum()), "weights": conn.weights[i].tolist()} for i in order]
            labels = [f"{source or conn.conv + ' in'}:{it['unit']}" for it in inputs]
            fig = circuit_figure(conn.weights[order].numpy(), labels, title=f"{ctx.layer.name}:{u}: strongest of "
                                 f"{len(conn.inputs)} inputs from {source or conn.conv + ' in'}")
            numbers = {"conv": conn.conv, "norm": conn.norm, "bias": conn.bias, "source": source,
                       "source_names": names, "kernel": list(conn.weights.shape[1:]),
                       "total_inputs": len(conn.inputs), "inputs": inputs}
            spec = {"conv": conn.conv, "norm": conn.norm, "k": k, "ranking": "L2 norm of the folded kernel"}
            links = tuple({"layer": source, "unit": it["unit"], "weight": it["weight"], "norm": it["norm"]}
                          for it in inputs) if source is not None else ()
            out[u] = [replace(figure_artifact(self.name, "weights", fig, numbers, spec=spec, seed=None),
                              links=links)]
        return out

    def feeding(self, model, layers: list[str]) -> dict[str, list[str]]:
        """``layer -> every name of the tensor its circuit reads`` (layers whose input has no name are left out)."""
        from ..dataset.circuits import connection, feeding_layers
        from ..errors import LayerError

        out = {}
        for name in layers:
            try:
                names = feeding_layers(model, connection(model, name, 0, verify=False).conv)
            except LayerError:
                continue
            if names:
                out[name] = names
        return out

    def aliases(self, model, layers: list[str]) -> dict[str, list[str]]:
        """``name -> every name of the same tensor`` for the tensors the layers' circuits read: links stored under
        one name are found from a unit page of another (a block and its last child)."""
        return {n: names for names in self.feeding(model, layers).values() for n in names}

    def advice(self, model, layers: list[str], atlas_layers: list[str]) -> list[str]:
        """One line per built layer whose feeding layer the atlas does not hold (add it to link the circuits)."""
        held, missing = set(atlas_layers), {}
        for name, names in self.feeding(model, layers).items():
            if not held.intersection(names):
                missing.setdefault(names[0], []).append(name)
        return [f"circuits of {', '.join(users)} read {src}, which this atlas does not hold: add it to --layers to "
                f"link their inputs" for src, users in missing.items()]
