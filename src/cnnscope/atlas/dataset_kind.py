"""Dataset artifact kinds: top-k examples with receptive-field crops, and the activation histogram.

Both come from one :func:`cnnscope.dataset.collect_statistics` pass over the build's images per layer (kept in
the build's per-layer cache), as in OpenAI Microscope's dataset examples and (with ``pre_activation=True`` in the
build options) the pre-activation distributions of Cammarata et al., *Curve Detectors*, Distill 2020.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .encode import figure_artifact, image_artifact
from .kinds import ArtifactKind, BuildContext, register_kind
from .records import Artifact, AtlasError

#: crops are shown at this size (pixels a side) at most, and at least at ``MIN_CROP``
MAX_CROP, MIN_CROP = 96, 48


def layer_stats(ctx: BuildContext):
    """The dataset statistics of ``ctx.layer``: one pass over the images for every layer of the run (one
    receptive-field probe and one forward per image batch serve them all), cached for the whole run. The images
    the pass could not read are collected in ``ctx.cache["skipped_images"]`` (the build reports them)."""
    from ..dataset import collect_statistics

    stats = ctx.cache.get("dataset_stats")
    if stats is None or ctx.layer.name not in stats.layers:
        o = ctx.options
        layers = [n for n in ctx.layers if n == ctx.layer.name or ctx.layers.index(n) > ctx.layers.index(
            ctx.layer.name)] if ctx.layer.name in ctx.layers else [ctx.layer.name]
        work = None  # in memory: pictures given as arrays have no identity to resume a pass by
        if ctx.workdir is not None and ctx.source.identity() is not None:
            # one work folder per layer set and settings (a build that later adds layers runs another pass)
            key = json.dumps([layers, o.pre_activation, o.top_k, o.seed], sort_keys=True)
            work = Path(ctx.workdir) / f"dataset-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        stats = collect_statistics(ctx.model, ctx.source, layers, pre_activation=o.pre_activation, k=o.top_k,
                                   bottom_k=1, band_samples=1, seed=o.seed, batch_size=ctx.batch_size,
                                   workdir=work, engine=ctx.engine if work is not None else None,
                                   address=ctx.address if work is not None else None)
        ctx.cache["dataset_stats"] = stats
        seen = ctx.cache.setdefault("skipped_images", {})  # every pass meets the same unreadable images
        seen.update({s.path: s for s in stats.skipped})
        ctx.cache["n_skipped"] = max(ctx.cache.get("n_skipped", 0), stats.n_skipped)
    return stats


def _provenance(ctx: BuildContext, stats) -> dict:
    return {"spec": {"source": stats.source, "images": stats.images, "k": stats.k, "bins": stats.bins.to_dict(),
                     "pre_activation": stats[ctx.layer.name].pre_activation, "skipped": stats.n_skipped},
            "seed": stats.seed}


class _DatasetKind(ArtifactKind):
    """One artifact per unit from the build's dataset statistics of the layer."""

    requires = "cnnscope.dataset.examples"
    needs_images = True

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        stats = layer_stats(ctx)
        prov = _provenance(ctx, stats)
        return {u: [self.artifact(ctx, stats, u, prov)] for u in units}

    def artifact(self, ctx: BuildContext, stats, u: int, prov: dict) -> Artifact:
        raise NotImplementedError


@register_kind
class Examples(_DatasetKind):
    name = "examples"
    title = "Dataset examples (receptive-field crops)"
    artifacts = {"top": "image/png"}
    order = 20
    description = "top-k positions over the images, cropped to the unit's receptive field"

    def artifact(self, ctx: BuildContext, stats, u: int, prov: dict) -> Artifact:
        from ..dataset import crops
        from ..images import resize
        from ..plot.common import grid_image

        ls = stats[ctx.layer.name]
        ex = stats.examples(ctx.layer.name, u, "top")
        if not ex:
            raise AtlasError(f"no dataset examples for unit {u} of {ctx.layer.name!r} (no readable images?)")
        patches = crops(ctx.model, stats, ctx.layer.name, channel=u, source=ctx.source, which="top")
        side = int(np.clip(max(patches[0].shape[:2]), MIN_CROP, MAX_CROP))
        cols = min(len(patches), 3 if len(patches) <= 9 else 4)
        sheet = grid_image([resize(p, (side, side)) for p in patches], cols=cols)
        numbers = {"examples": [e.to_dict() for e in ex], "receptive_field": list(ls.rf.size) if ls.rf else None,
                   "pre_activation": ls.pre_activation, "crop_display_size": side}
        return image_artifact(self.name, "top", sheet, numbers, **prov)


@register_kind
class Histogram(_DatasetKind):
    name = "histogram"
    title = "Activation histogram"
    artifacts = {"histogram": "image/png"}
    order = 30
    description = "distribution of the unit's values over every position of every image"

    def artifact(self, ctx: BuildContext, stats, u: int, prov: dict) -> Artifact:
        from ..dataset.histograms import density
        from ..plot.atlas import unit_histogram

        ls = stats[ctx.layer.name]
        lower, upper = stats.bins.bin_bounds()
        what = "pre-activation" if ls.pre_activation else "activation"
        counts = ls.hist[u]
        centers, widths, dens = (t.numpy() for t in density(counts, stats.bins))
        nz = np.flatnonzero(counts.numpy())
        numbers = {"value": what, "count": int(counts.sum()), "mean": float(ls.mean[u]), "std": float(ls.std[u]),
                   "min": float(ls.minimum[u]), "max": float(ls.maximum[u]),
                   "fraction_positive": float(ls.fraction_positive[u]),
                   "bins": [[float(lower[i]), float(upper[i]), int(counts[i])] for i in nz]}
        fig = unit_histogram(centers, widths, dens * widths, title=f"{ctx.layer.name}:{u} {what}s over "
                             f"{stats.images} images", mean=float(ls.mean[u]), xlabel=what)
        return figure_artifact(self.name, "histogram", fig, numbers, total=max(int(counts.sum()), 1), **prov)
