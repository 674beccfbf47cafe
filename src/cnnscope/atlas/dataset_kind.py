"""Dataset artifact kinds: the dataset examples (receptive-field crops, one per image: a ``top`` panel of positive
values, a ``bottom`` panel of negative ones, each crop's value, image name, class and box in the numbers, and the
examples' whole images, as the model saw them, for the viewer's click-through) and the activation histogram (whose
mean, maximum and fraction positive are the unit's facts the layer page sorts by).

Both come from one :func:`cnnscope.dataset.collect_statistics` pass over the build's images per layer (kept in
the build's per-layer cache), as in OpenAI Microscope's dataset examples and (with ``pre_activation=True`` in the
build options) the pre-activation distributions of Cammarata et al., *Curve Detectors*, Distill 2020.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np

from .encode import figure_artifact, image_artifact, jpeg_bytes
from .kinds import ArtifactKind, BuildContext, register_kind
from .records import Artifact, AtlasError, AtlasImage

#: every crop is stored at this size (pixels a side): the receptive field scaled up or down to it
CROP = 128
#: positions kept per shown example: one example per image is picked from the ``top_k * CANDIDATES`` strongest
#: (and weakest) positions, so an image that holds many of them does not crowd the others out
CANDIDATES = 8
#: fitted source images a run keeps decoded (each example panel reads a few; neighbouring units share many)
FITTED_CACHE = 256
#: encoded whole images a run keeps (a few MB; bounded so a long build over a large source does not grow)
ENCODED_CACHE = 2048


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
            key = json.dumps([layers, o.pre_activation, o.top_k, o.seed, CANDIDATES], sort_keys=True)
            work = Path(ctx.workdir) / f"dataset-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        pool = o.top_k * CANDIDATES
        stats = collect_statistics(ctx.model, ctx.source, layers, pre_activation=o.pre_activation, k=pool,
                                   bottom_k=pool, band_samples=1, seed=o.seed, batch_size=ctx.batch_size,
                                   workdir=work, engine=ctx.engine if work is not None else None,
                                   address=ctx.address if work is not None else None)
        ctx.cache["dataset_stats"] = stats
        seen = ctx.cache.setdefault("skipped_images", {})  # every pass meets the same unreadable images
        seen.update({s.path: s for s in stats.skipped})
        ctx.cache["n_skipped"] = max(ctx.cache.get("n_skipped", 0), stats.n_skipped)
    return stats


def _provenance(ctx: BuildContext, stats) -> dict:
    return {"spec": {"source": stats.source, "images": stats.images, "k": ctx.options.top_k, "candidates": stats.k,
                     "bins": stats.bins.to_dict(),
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


def one_per_image(examples: list, k: int, keep, pool: int) -> tuple[list, bool]:
    """The first ``k`` examples of distinct images among ranked ``examples`` (each image's first, i.e. strongest,
    position) whose value passes ``keep``, and whether the ranking may hide more images: the pool of ``pool``
    candidates was full, all passed ``keep`` and fewer than ``k`` distinct images came out of them.

    The distinct images of the ``n`` strongest positions are exactly the ``n``-position prefix of the ranking of
    images by their strongest position, so what is returned is always correct; at most it is short.
    """
    seen: set[int] = set()
    out = []
    for ex in examples:
        if ex.image_id not in seen and keep(ex.value):
            seen.add(ex.image_id)
            out.append(ex)
            if len(out) == k:
                return out, False
    return out, len(examples) >= pool and all(keep(ex.value) for ex in examples)


def _fitted(ctx: BuildContext, ids: list[int]) -> dict[int, np.ndarray]:
    """The source images ``ids`` fitted to the model's input (as the pass saw them), through a small cache shared by
    the run's chunks (the same images are examples of many units)."""
    from ..dataset.sources import open_source

    cache = ctx.cache.setdefault("fitted_images", OrderedDict())
    src = None
    out = {}
    for i in ids:
        if i in cache:
            cache.move_to_end(i)
        else:
            src = src or open_source(ctx.source)
            cache[i] = ctx.model.fit_image(src.load(i))
            while len(cache) > FITTED_CACHE:
                cache.popitem(last=False)
        out[i] = cache[i]
    return out


def _whole_image(ctx: BuildContext, ex, fitted: np.ndarray) -> AtlasImage:
    """The atlas record of an example's whole (fitted) image, encoded once per run."""
    encoded = ctx.cache.setdefault("whole_images", OrderedDict())
    if ex.image_id in encoded:
        encoded.move_to_end(ex.image_id)
    else:
        while len(encoded) >= ENCODED_CACHE:  # an evicted image is encoded again (the store ignores repeats)
            encoded.popitem(last=False)
        encoded[ex.image_id] = AtlasImage(image_id=int(ex.image_id), name=str(ex.name),
                                          label=None if ex.label is None else str(ex.label), mime="image/jpeg",
                                          data=jpeg_bytes(fitted), width=int(fitted.shape[1]),
                                          height=int(fitted.shape[0]))
    return encoded[ex.image_id]


def _panel(ctx: BuildContext, ls, which: str, chosen: list, note: str
           ) -> tuple[np.ndarray | None, dict, tuple[AtlasImage, ...]]:
    """The contact sheet of ``chosen`` examples (``None`` when there are none), its numbers (each example with its
    cell in the sheet, ``[top, left, height, width]`` pixels, and its receptive-field box in the fitted image) and
    the examples' whole images."""
    from ..dataset.examples import crop
    from ..images import resize
    from ..plot.common import grid_image

    numbers = {"which": which, "examples": [], "receptive_field": list(ls.rf.size) if ls.rf else None,
               "input_size": list(ctx.model.input_size), "pre_activation": ls.pre_activation,
               "crop_display_size": CROP, "note": note}
    if not chosen:
        return None, numbers, ()
    if ls.rf is None:
        raise AtlasError(f"the dataset pass of {ctx.layer.name!r} found no receptive field: no crops to show")
    fitted = _fitted(ctx, list(dict.fromkeys(ex.image_id for ex in chosen)))
    patches = [crop(fitted[ex.image_id], ex.box, size=ls.rf.size) for ex in chosen]
    cols, pad = min(len(chosen), 3 if len(chosen) <= 9 else 4), 2
    resample = "nearest" if patches[0].shape[0] * 2 <= CROP else "bilinear"  # a few pixels stay pixels enlarged
    sheet = grid_image([resize(p, (CROP, CROP), resample=resample) for p in patches], cols=cols, pad=pad)
    numbers["sheet_size"] = [int(sheet.shape[1]), int(sheet.shape[0])]
    for n, ex in enumerate(chosen):
        r, c = divmod(n, cols)
        numbers["examples"].append(ex.to_dict() | {"rank": n + 1, "cell": [pad + r * (CROP + pad),
                                                                        pad + c * (CROP + pad), CROP, CROP]})
    images = tuple(_whole_image(ctx, ex, fitted[ex.image_id]) for ex in chosen)
    return sheet, numbers, images


@register_kind
class Examples(_DatasetKind):
    name = "examples"
    title = "Dataset examples (receptive-field crops)"
    artifacts = {"top": "image/png", "bottom": "image/png"}
    order = 20
    description = ("the images that excite the unit most (one position per image, positive values only) and, "
                   "in their own panel, those that inhibit it most, cropped to the unit's receptive field")

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        stats = layer_stats(ctx)
        prov = _provenance(ctx, stats)
        return {u: self.panels(ctx, stats, u, prov) for u in units}

    def panels(self, ctx: BuildContext, stats, u: int, prov: dict) -> list[Artifact]:
        ls = stats[ctx.layer.name]
        k, what = ctx.options.top_k, "pre-activation" if ls.pre_activation else "activation"
        out = []
        for which, keep, sign in (("top", lambda v: v > 0, "positive"), ("bottom", lambda v: v < 0, "negative")):
            ranked = stats.examples(ctx.layer.name, u, which)
            if which == "top" and not ranked:
                raise AtlasError(f"no dataset examples for unit {u} of {ctx.layer.name!r} (no readable images?)")
            chosen, short = one_per_image(ranked, k, keep, stats.k if which == "top" else stats.bottom_k)
            extreme = float(ls.maximum[u] if which == "top" else ls.minimum[u])
            if not chosen:
                word = "largest" if which == "top" else "smallest"
                note = f"the unit's {what} is never {sign} on the {stats.images} images ({word} value {extreme:.4g})"
            elif short:
                word = "strongest" if which == "top" else "weakest"
                note = f"only {len(chosen)} distinct images among the {len(ranked)} {word} positions"
            else:
                note = ""
            sheet, numbers, images = _panel(ctx, ls, which, chosen, note)
            if sheet is None:
                out.append(Artifact(kind=self.name, name=which, mime="image/png", data=None, numbers=numbers,
                                    provenance=dict(prov)))
            else:
                out.append(replace(image_artifact(self.name, which, sheet, numbers, **prov), images=images))
        return out


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
        art = figure_artifact(self.name, "histogram", fig, numbers, total=max(int(counts.sum()), 1), **prov)
        return replace(art, facts={"mean": numbers["mean"], "max": numbers["max"],
                                   "fraction_positive": numbers["fraction_positive"]})
