"""Orientation tuning artifact kind (optional): responses to synthetic curves over orientation x radius.

One :func:`cnnscope.stimuli.tuning.tuning_map` per chunk reads every unit of the chunk from the same forward
passes (Cammarata et al., *Curve Detectors*, Distill 2020, synthetic stimuli). With images in the build the
responses are expressed in standard deviations above each unit's dataset mean, as in the article.
"""

from __future__ import annotations

import torch

from .encode import figure_artifact
from .kinds import ArtifactKind, BuildContext, register_kind

STIMULUS = "curve"


@register_kind
class Tuning(ArtifactKind):
    name = "tuning"
    title = "Orientation tuning (synthetic curves)"
    artifacts = {"orientation_x_radius": "image/png"}
    order = 50
    optional = True
    requires = "cnnscope.stimuli.tuning"
    description = "response to curves over orientation x radius (Cammarata et al. 2020)"

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        from ..plot.stimuli import tuning_heatmaps
        from ..stimuli.tuning import tuning_map

        mean = std = None
        if ctx.source is not None:
            from .dataset_kind import layer_stats

            ls = layer_stats(ctx)[ctx.layer.name]  # the same values as the tuning map's (options.pre_activation)
            mean, std = ls.mean, ls.std
        tmap = tuning_map(ctx.model, ctx.layer.name, channels=units, kind=STIMULUS, mean=mean, std=std,
                          pre_activation=ctx.options.pre_activation, batch_size=ctx.batch_size)
        values = tmap.values
        best = tmap.preferred()
        radial = tmap.radial()
        spec = {"stimulus": tmap.kind, "param": tmap.param, "fixed": tmap.fixed, "period": tmap.period,
                "in_std": tmap.in_std, "orientations": tmap.orientations.tolist(), "levels": tmap.levels.tolist()}
        out = {}
        for u in units:
            i = tmap.index(u)
            fig = tuning_heatmaps(values[i:i + 1], tmap.orientations, tmap.levels, [u], param=tmap.param,
                                  in_std=tmap.in_std, layer=ctx.layer.name, cols=1)
            numbers = {"orientations": tmap.orientations.tolist(), "levels": tmap.levels.tolist(),
                       "values": torch.nan_to_num(values[i], nan=0.0).tolist(), "in_std": tmap.in_std,
                       "radial": radial[i].tolist(), "preferred": {k: float(v[i]) for k, v in best.items()}}
            out[u] = [figure_artifact(self.name, "orientation_x_" + tmap.param, fig, numbers, spec=spec)]
        return out
