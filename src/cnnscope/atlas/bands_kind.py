"""The optional ``bands`` kind: examples of a unit sampled across its activation bands, for labelling by hand.

The unit's positive range ``[0, max]`` is cut into :data:`N_BANDS` equal bands and its negative range ``[min, 0)``
(when it has one) into :data:`NEG_BANDS` (the article's "opposing curves" live there); each shows up to :data:`PER_BAND`
uniform random positions of the build's images whose value lies in it (:func:`cnnscope.dataset.labels.
activation_bands`), as receptive-field crops in one contact sheet (a row per band, the highest on top) with the
numbers behind them: each band's index, range, dataset positions and share of the expected value, each example's
value, image id and name, position, box and cell in the sheet. The viewer's annotate mode labels these examples
(:func:`cnnscope.web.label_routes.example_label_panel`) and :func:`cnnscope.dataset.labels.label_report` turns the
labels into the article's composition per band and agreement (Cammarata et al., *Curve Detectors*, Distill 2020, Figs. 9
and 11).

The kind runs its own statistics pass per run (its band samples: :data:`BAND_SAMPLES` per octave and a top pool of
:data:`TOP_POOL` for the tail), so it is optional: default builds are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from .dataset_kind import _fitted, _whole_image
from .encode import image_artifact
from .kinds import ArtifactKind, BuildContext, register_kind
from .records import Artifact, AtlasError

#: equal bands between 0 and the unit's maximum
N_BANDS = 10
#: equal bands between the unit's minimum and 0 (none when it is never negative)
NEG_BANDS = 2
#: examples shown per band
PER_BAND = 5
#: uniform samples the pass keeps per unit and octave of values
BAND_SAMPLES = 32
#: strongest (and weakest) positions kept per unit: the tail bands draw their examples from them when they hold the
#: whole band
TOP_POOL = 64
#: pixels a side of each crop in the sheet
CROP = 96


def band_stats(ctx: BuildContext):
    """One statistics pass with band samples over the build's images for every layer of the run, cached for the
    run (resumable in the build's work folder like the dataset kinds' pass)."""
    from ..dataset import collect_statistics

    stats = ctx.cache.get("band_stats")
    if stats is None or ctx.layer.name not in stats.layers:
        o = ctx.options
        layers = [n for n in ctx.layers if n == ctx.layer.name or ctx.layers.index(n) > ctx.layers.index(
            ctx.layer.name)] if ctx.layer.name in ctx.layers else [ctx.layer.name]
        work = None
        if ctx.workdir is not None and ctx.source.identity() is not None:
            key = json.dumps([layers, o.pre_activation, o.seed, "bands", BAND_SAMPLES, TOP_POOL], sort_keys=True)
            work = Path(ctx.workdir) / f"bands-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        stats = collect_statistics(ctx.model, ctx.source, layers, pre_activation=o.pre_activation, k=TOP_POOL,
                                   bottom_k=TOP_POOL, band_samples=BAND_SAMPLES, seed=o.seed, batch_size=ctx.batch_size,
                                   by_class=False, workdir=work, engine=ctx.engine if work is not None else None,
                                   address=ctx.address if work is not None else None)
        ctx.cache["band_stats"] = stats
        seen = ctx.cache.setdefault("skipped_images", {})
        seen.update({s.path: s for s in stats.skipped})
        ctx.cache["n_skipped"] = max(ctx.cache.get("n_skipped", 0), stats.n_skipped)
    return stats


@register_kind
class Bands(ArtifactKind):
    name = "bands"
    title = "Examples per activation band (for labelling)"
    artifacts = {"bands": "image/png"}
    order = 35
    requires = "cnnscope.dataset.examples"
    needs_images = True
    optional = True
    description = (f"uniform random examples from {N_BANDS} equal activation bands between 0 and the unit's maximum "
                   f"and {NEG_BANDS} below 0 ({PER_BAND} per band), with each band's dataset count, to label by hand")

    def produce(self, ctx: BuildContext, units: list[int]) -> dict[int, list[Artifact]]:
        stats = band_stats(ctx)
        prov = {"spec": {"source": stats.source, "images": stats.images, "bands": N_BANDS,
                         "negative_bands": NEG_BANDS, "per_band": PER_BAND,
                         "band_samples": BAND_SAMPLES, "top_pool": TOP_POOL, "bins": stats.bins.to_dict(),
                         "pre_activation": stats[ctx.layer.name].pre_activation, "skipped": stats.n_skipped},
                "seed": stats.seed}
        return {u: [self.sheet(ctx, stats, u, prov)] for u in units}

    def sheet(self, ctx: BuildContext, stats, u: int, prov: dict) -> Artifact:
        from ..dataset.examples import crop
        from ..dataset.labels import LabelDataError, activation_bands
        from ..plot.labels import band_sheet

        ls = stats[ctx.layer.name]
        numbers = {"bands": [], "n_bands": N_BANDS, "negative_bands": NEG_BANDS, "per_band": PER_BAND,
                   "pre_activation": ls.pre_activation,
                   "images": stats.images, "receptive_field": list(ls.rf.size) if ls.rf else None,
                   "input_size": list(ctx.model.input_size), "crop_display_size": CROP, "note": ""}
        try:
            bands = activation_bands(stats, ctx.layer.name, u, bands=N_BANDS, negative_bands=NEG_BANDS,
                                     per_band=PER_BAND, seed=stats.seed)
        except LabelDataError as exc:
            numbers["note"] = str(exc)
            return Artifact(kind=self.name, name="bands", mime="image/png", data=None, numbers=numbers,
                            provenance=dict(prov))
        if ls.rf is None:
            raise AtlasError(f"the band pass of {ctx.layer.name!r} found no receptive field: no crops to show")
        chosen = [ex for b in bands for ex in b.examples]
        fitted = _fitted(ctx, list(dict.fromkeys(ex.image_id for ex in chosen)))
        crops = [[crop(fitted[ex.image_id], ex.box, size=ls.rf.size) for ex in b.examples] for b in bands]
        sheet, cells = band_sheet(crops, side=CROP)
        numbers["sheet_size"] = [int(sheet.shape[1]), int(sheet.shape[0])]
        short = [b.index for b in bands if len(b.examples) < PER_BAND and b.count >= PER_BAND]
        if short:
            numbers["note"] = (f"bands {short} show fewer than {PER_BAND} examples: the pass kept too few samples of "
                               "them")
        for b, band_cells in zip(bands, cells):
            d = b.to_dict()
            d["examples"] = [e | {"cell": cell} for e, cell in zip(d["examples"], band_cells)]
            numbers["bands"].append(d)
        images = tuple(_whole_image(ctx, ex, fitted[ex.image_id]) for ex in dict(
            (ex.image_id, ex) for ex in chosen).values())
        return replace(image_artifact(self.name, "bands", sheet, numbers, **prov), images=images)


def atlas_bands(store, layer: str, unit: int) -> tuple[list, object] | None:
    """The bands of a unit as the atlas stores them: ``([ActivationBand, ...], artifact record)``, or ``None`` when
    the atlas has no ``bands`` artifact for the unit (build it with the ``bands`` kind)."""
    from ..dataset.labels import ActivationBand

    record = next((a for a in store.artifacts(layer, unit) if a.kind == "bands" and a.name == "bands"), None)
    if record is None or not isinstance(record.numbers, dict):
        return None
    return [ActivationBand.from_dict(b) for b in record.numbers.get("bands", [])], record
