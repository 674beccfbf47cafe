"""``cnnscope labels``: example labels per activation band and their report (:mod:`cnnscope.dataset.labels`).

``labels bands MODEL LAYER`` samples examples across a unit's activation bands (sheets and a CSV to fill in, without
an atlas), ``labels import FILE.csv --labels LABELS.sqlite`` stores example labels from a CSV (columns ``layer,unit,
image,y,x,label``), ``labels export`` writes them out again, ``labels report`` draws the label composition per band,
the value distribution and expected-value contribution per label and the agreement of a unit (the Curve Detectors
article's Figs. 9, 11 and 12).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import click

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import batch_size_option, cli, model_options, open_model, pre_activation_option, show_progress


def _safe(text: str) -> str:
    """A layer name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


@cli.group("labels")
def labels_group() -> None:
    """Label dataset examples per activation band and compare the labels with the activations."""


def _unique_names(pairs) -> dict[str, int]:
    """``name -> id`` of the names that belong to one image id only (an ambiguous name is left out)."""
    out: dict[str, int] = {}
    twice: set[str] = set()
    for i, name in pairs:
        if name in out and out[name] != i:
            twice.add(name)
        out[name] = int(i)
    return {n: i for n, i in out.items() if n not in twice}


def _atlas_names(store) -> dict[str, int]:
    """Image names the atlas stores (the whole images of its examples and band samples)."""
    if not store._has_table("images"):
        return {}
    return _unique_names(store.con.execute("SELECT id, name FROM images").fetchall())


def _check_csv(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CnnscopeError(f"no CSV file at {path}; pass a file with the columns layer,unit,image,y,x,label")
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CnnscopeError(f"{path} is not UTF-8 text; save the CSV as UTF-8") from None


@labels_group.command("bands")
@click.argument("model")
@click.argument("layer")
@model_options
@click.option("-c", "--channels", required=True, help="Units: 17, 3,17 or 0-3.")
@click.option("--images", default="samples:4", show_default=True,
              help="The images (as for `cnnscope examples`: folder, glob, manifest, classes:DIR, hf:PATH, samples:N).")
@pre_activation_option
@batch_size_option
@click.option("--bands", "n_bands", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Equal bands between 0 and each unit's maximum.")
@click.option("--negative-bands", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Also this many equal bands between the unit's minimum and 0.")
@click.option("--per-band", type=click.IntRange(1, 64), default=5, show_default=True, help="Examples per band.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the band sampling.")
@click.option("--out", metavar="FOLDER", default="bands-out", show_default=True)
def bands_cmd(model: str, layer: str, weights: str | None, device: str, channels: str, images: str,
              pre_activation: bool, batch_size: int | None, n_bands: int, negative_bands: int, per_band: int,
              seed: int, out: str) -> None:
    """Examples of LAYER's units sampled across their activation bands, to label without an atlas.

    Writes OUT/stats.npz (the pass: `labels report --stats` reads the same bands from it), per unit
    OUT/bands_<layer>_cNNNN.png (a row of receptive-field crops per band, the highest band on top) and .json (each
    band's range, dataset positions and examples with their cells in the sheet), and OUT/labels.csv with one row
    per example (layer,unit,image,y,x,label plus name, band and value): fill in the label column, then run
    `cnnscope labels report --labels OUT/labels.csv --stats OUT/stats.npz --layer LAYER --unit U` with the same
    --bands and --negative-bands.
    """
    import csv
    import io

    from ..atlas.bands_kind import BAND_SAMPLES, TOP_POOL
    from ..dataset import collect_statistics
    from ..dataset.examples import example_crops
    from ..dataset.labels import LabelDataError, activation_bands
    from ..dataset.sources import open_source, skipped_lines
    from ..plot.labels import band_sheet
    from ..units import parse_channels

    with run_output(out, "labels bands") as output:  # an unwritable --out fails before the model loads
        m = open_model(model, weights, device)
        source = open_source(images)
        stats = collect_statistics(m, source, [layer], pre_activation=pre_activation, k=TOP_POOL, bottom_k=TOP_POOL,
                                   band_samples=BAND_SAMPLES, seed=seed, batch_size=batch_size,
                                   progress=show_progress(), by_class=False)
        for line in skipped_lines(stats.skipped, stats.n_skipped):
            click.echo(line, err=True)
        output.write("stats.npz", stats.save)
        name = next(iter(stats.layers))
        ls = stats[name]
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["layer", "unit", "image", "y", "x", "label", "name", "band", "value"])
        for u in parse_channels(channels, ls.channels):
            try:
                bands = activation_bands(stats, name, u, bands=n_bands, negative_bands=negative_bands,
                                         per_band=per_band, seed=seed)
            except LabelDataError as exc:
                click.echo(f"{name}:{u}: {exc}", err=True)
                continue
            crops = [example_crops(m, b.examples, source=source, rf=ls.rf) if b.examples else [] for b in bands]
            sheet, cells = band_sheet(crops)
            stem = f"bands_{_safe(name)}_c{u:04d}"
            output.write(f"{stem}.png", partial(_save_png, sheet))
            numbers = [b.to_dict() | {"examples": [e.to_dict() | {"cell": cell} for e, cell in zip(b.examples, cc)]}
                       for b, cc in zip(bands, cells)]
            output.write_json(f"{stem}.json", {"layer": name, "unit": u, "pre_activation": ls.pre_activation,
                                               "images": stats.images, "bands": numbers})
            for b in bands:
                for e in b.examples:
                    writer.writerow([name, u, e.image_id, e.y, e.x, "", e.name, b.index, f"{e.value:.6g}"])
            click.echo(f"{name}:{u}: " + ", ".join(f"[{b.low:.3g}, {b.high:.3g}) {len(b.examples)}" for b in bands))
        output.write("labels.csv", lambda p: p.write_text(rows.getvalue(), encoding="utf-8"))
    click.echo(f"wrote {output.folder}/ (fill in the label column of labels.csv)")


def _save_png(image, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


@labels_group.command("import")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False))
@click.option("--labels", "labels_file", required=True, metavar="LABELS.sqlite",
              help="The labels file (created when missing; the one `cnnscope serve ATLAS --annotate` uses).")
@click.option("--atlas", default=None, type=click.Path(file_okay=False, exists=True),
              help="The atlas the labels belong to: checks its units and model, and resolves image names.")
@click.option("--stats", "stats_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="A statistics file (`cnnscope examples`) whose image names resolve the image column.")
def import_cmd(csv_file: str, labels_file: str, atlas: str | None, stats_file: str | None) -> None:
    """Store example labels from FILE.csv in LABELS.sqlite.

    FILE.csv has a header with the columns layer, unit, image, y, x and label (any order, more columns ignored):
    image is the image's id in the atlas's image source, or its name (with --atlas or --stats); y, x the position in
    the layer's grid; label any text (e.g. curve, edge, other; empty deletes). All rows are stored, or none.
    """
    from ..web.labels import LabelStore, read_example_csv

    text = _check_csv(csv_file)
    names: dict[str, int] | None = None
    root, fingerprint, store = None, None, None
    if stats_file is not None:
        from ..dataset import DatasetStats

        names = _unique_names((i, n) for i, n in DatasetStats.load(stats_file).names.items())
    if atlas is not None:
        from ..atlas import AtlasStore

        store = AtlasStore(atlas)
        root, fingerprint = store.root, store.get_meta("fingerprint")
        names = {**_atlas_names(store), **(names or {})}
    try:
        rows = read_example_csv(text, names, source=csv_file)
        if store is not None:
            for r in rows:
                store.require_unit(r["layer"], r["unit"])
        with LabelStore(labels_file, atlas_root=root, fingerprint=fingerprint) as labels:
            done = labels.import_examples(rows)
    finally:
        if store is not None:
            store.close()
    deleted = sum(1 for d in done if d is None)
    click.echo(f"{len(done) - deleted} example labels stored" + (f", {deleted} deleted" if deleted else "")
               + f" in {labels_file}")


@labels_group.command("export")
@click.option("--labels", "labels_file", required=True, metavar="LABELS.sqlite", type=click.Path(dir_okay=False),
              help="The labels file.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default=None,
              help="Export format (default: csv when --out ends in .csv, json otherwise).")
@click.option("--out", default=None, metavar="PATH", help="Write the export here (atomically) instead of stdout.")
def export_cmd(labels_file: str, fmt: str | None, out: str | None) -> None:
    """Export the example labels of LABELS.sqlite (columns layer, unit, image_id, name, y, x, label, updated; the
    CSV can be imported again). The file is only read."""
    from .atlas_labels import export_labels

    export_labels(labels_file, fmt, out, lambda labels, f: (labels.export_examples(f), labels.example_count()),
                  "example labels")


def _given_labels(labels_file: str, layer: str, unit: int, names: dict[str, int] | None) -> list[dict]:
    """The example labels of one unit from a labels file or a CSV."""
    if labels_file.lower().endswith(".csv"):
        from ..web.labels import read_example_csv

        rows = read_example_csv(_check_csv(labels_file), names, source=labels_file)
        return [r for r in rows if r["layer"] == layer and r["unit"] == unit]
    from ..web.labels import LabelStore

    with LabelStore(labels_file, atlas_root=None, fingerprint=None, readonly=True) as labels:
        return labels.example_labels(layer, unit)


@labels_group.command("report")
@click.option("--labels", "labels_file", required=True, metavar="FILE", type=click.Path(dir_okay=False, exists=True),
              help="The example labels: a labels file (LABELS.sqlite) or a CSV (layer,unit,image,y,x,label).")
@click.option("--atlas", default=None, type=click.Path(file_okay=False, exists=True),
              help="An atlas built with the bands kind: the bands and their examples come from it.")
@click.option("--stats", "stats_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="A statistics file with band samples (`cnnscope examples`): the bands are cut from it.")
@click.option("--layer", required=True, help="The layer of the unit(s).")
@click.option("--unit", "units", required=True, help="Unit(s): 3 or 0,3,8-11.")
@click.option("--bands", "n_bands", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Equal bands between 0 and the unit's maximum (with --stats; an atlas keeps its own).")
@click.option("--negative-bands", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Also this many equal bands between the unit's minimum and 0 (with --stats).")
@click.option("--bins", type=click.IntRange(1, 200), default=20, show_default=True,
              help="Bins of the value histograms per label.")
@click.option("--out", metavar="FOLDER", default="labels-out", show_default=True)
def report_cmd(labels_file: str, atlas: str | None, stats_file: str | None, layer: str, units: str, n_bands: int,
               negative_bands: int, bins: int, out: str) -> None:
    """Label composition per activation band, value distribution per label and agreement (the share of the unit's
    expected value carried by each label) of labelled band examples.

    Writes OUT/labels_<layer>_cNNNN.png and .json per unit, and OUT/manifest.json.
    """
    from ..dataset.labels import activation_bands, label_report
    from ..plot.common import save_figure
    from ..plot.labels import label_report_figure
    from ..units import parse_channels

    if (atlas is None) == (stats_file is None):
        raise CnnscopeError("pass one of --atlas (built with the bands kind) or --stats (a statistics file) for the "
                            "activation bands")
    store = stats = None
    with run_output(out, "labels report") as output:  # an unwritable --out fails before any file is read
        try:
            if atlas is not None:
                from ..atlas import AtlasStore
                from ..atlas.bands_kind import atlas_bands

                store = AtlasStore(atlas)
                channels = store.layer(layer).channels
                names = _atlas_names(store)
            else:
                from ..dataset import DatasetStats

                stats = DatasetStats.load(stats_file)
                channels = stats[layer].channels
                names = _unique_names(stats.names.items())
            for u in parse_channels(units, channels):
                if store is not None:
                    found = atlas_bands(store, layer, u)
                    if found is None:
                        raise CnnscopeError(f"{atlas} has no bands of {layer}:{u}; build it with --kinds bands")
                    bands = found[0]
                else:
                    bands = activation_bands(stats, layer, u, bands=n_bands, negative_bands=negative_bands,
                                             per_band=None, seed=stats.seed)
                report = label_report(bands, _given_labels(labels_file, layer, u, names), layer=layer, unit=u,
                                      bins=bins)
                stem = f"labels_{_safe(layer)}_c{u:04d}"
                output.write(f"{stem}.png", partial(save_figure, label_report_figure(report)))
                output.write_json(f"{stem}.json", report.to_dict())
                agree = ", ".join(f"{lab} {share:.1%}" for lab, share in report.agreement.items())
                click.echo(f"{layer}:{u}: {len(report.examples)} labelled examples; share of the expected value: "
                           f"{agree} (labelled bands hold {report.coverage:.0%} of it)")
        finally:
            if store is not None:
                store.close()
    click.echo(f"wrote {output.folder}/")
