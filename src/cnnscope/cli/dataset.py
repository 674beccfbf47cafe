"""``cnnscope examples``, ``spectrum``, ``circuit`` and ``nmf`` (dataset and circuit analysis) and the demo section
(order 60): dataset examples, the activation spectrum, a unit's circuit and NMF of one photo."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import click

from ..errors import CnnscopeError
from ..outputs import MANIFEST, run_output
from ..units import parse_channels
from .app import (
    POSITION,
    batch_size_option,
    cli,
    model_options,
    open_model,
    pre_activation_option,
    print_table,
    read_image_arg,
    show_progress,
)
from .demo import DemoContext, demo_section
from .study import layers_or_study

DEMO_LAYER = "blocks.4.0.bn1.act"
#: classes listed per channel (ranked by the mean of their images' maxima) in ``examples``' JSON
TOP_CLASSES = 5
#: the quick demo's shallower layer: its receptive fields take a fraction of the probes' time
QUICK_LAYER = "blocks.2.1.bn1.act"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _channels(spec: str | None, ls) -> list[int]:
    """``--channels``: ``top:N`` (the N channels with the largest maximum) or a :func:`cnnscope.parse_channels`
    selection (``all``, ``0-7``, ``0,4,8-11``)."""
    text = (spec or "top:8").strip().lower()
    if text.startswith("top:"):
        if not text[4:].isdigit():
            raise CnnscopeError(f"--channels top:N needs a number, got {spec!r}")
        return ls.strongest(int(text[4:]))
    return parse_channels(text, ls.channels)


def _saved_statistics(stats_file: str, layer: str | list[str], pre_activation: bool):
    """A ``--stats`` file, checked against LAYER (or each of several layers) and ``--pre-activation``."""
    from ..dataset import DatasetStats

    stats = DatasetStats.load(stats_file)
    for name in [layer] if isinstance(layer, str) else layer:
        if name not in stats.layers:
            raise CnnscopeError(f"{stats_file} has no statistics of {name!r} (it has: {', '.join(stats.layers)})")
        if stats[name].pre_activation != pre_activation:
            raise CnnscopeError(f"{stats_file} holds {'pre-activation' if stats[name].pre_activation else 'output'} "
                                f"values of {name!r}; " + ("add" if stats[name].pre_activation else "drop")
                                + " --pre-activation")
    return stats


def _listed(out: str, path: str | None) -> str | None:
    """The name under which the previous run in ``out`` lists ``path`` (opening ``out`` removes it), or ``None``."""
    folder = Path(out).expanduser()
    try:
        names = json.loads((folder / MANIFEST).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return None
    target = Path(path).resolve() if path else None
    return next((str(n) for n in names if (folder / str(n)).resolve() == target), None)


def _statistics(model, layer: str | list[str], images: str, k: int, batch_size: int | None, workers: int, rf: str,
                pre_activation: bool, class_histograms: bool = False, scale: dict | None = None):
    """One statistics pass over ``--images`` (for one layer or several) and the source, opened once (the crops
    read it again); unreadable images are listed on stderr. ``scale``: the work-folder and engine options
    (:func:`_scale`)."""
    from ..dataset import collect_statistics
    from ..dataset.sources import open_source, skipped_lines

    source = open_source(images)
    stats = collect_statistics(model, source, [layer] if isinstance(layer, str) else list(layer),
                               pre_activation=pre_activation, k=k, batch_size=batch_size,
                               num_workers=workers, progress=show_progress(), receptive_field=rf,
                               class_histograms=class_histograms, **(scale or {}))
    for line in skipped_lines(stats.skipped, stats.n_skipped):
        click.echo(line, err=True)
    return stats, source


def _scale(work: str | None, shard_size: int | None, engine: str, address: str | None, stats_file: str | None
           ) -> dict:
    """``collect_statistics``' work-folder and engine arguments from ``--work``, ``--shard-size``, ``--engine`` and
    ``--address``."""
    if work is None and (shard_size is not None or engine != "local" or address is not None):
        raise CnnscopeError("--shard-size, --engine and --address need --work DIR (the folder of the pass's shards)")
    if work is not None and stats_file:
        raise CnnscopeError("--work runs a new pass; --stats reuses a saved one: give one of them")
    if work is None:
        return {}
    return {"workdir": work, "shard_size": shard_size, "engine": engine, "address": address}


def _pass_options(f):
    f = click.option("--address", default=None, help="With --engine ray: 'auto' or HOST:PORT of a running Ray "
                     "cluster (default: a local Ray started here).")(f)
    f = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where the shards of a --work pass run (ray: the extra cnnscope[ray]).")(f)
    f = click.option("--shard-size", type=click.IntRange(1), default=None,
                     help="Images per shard of a --work pass (default 256, a multiple of the batch size).")(f)
    f = click.option("--work", metavar="DIR", default=None,
                     help="Work folder: the pass is saved shard by shard there; run again to resume a killed pass.")(f)
    f = click.option("--rf", "rf", type=click.Choice(["auto", "fast", "exact"]), default="auto", show_default=True,
                     help="How to measure receptive-field boxes.")(f)
    f = click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")(f)
    f = batch_size_option(f)
    f = pre_activation_option(f)
    f = click.option("--stats", "stats_file", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Reuse a statistics file written by `cnnscope examples` instead of a new pass.")(f)
    f = click.option("--images", default="samples:4", show_default=True,
                     help="Folder, glob, image file, classes:FOLDER (a subfolder per class), a .csv/.jsonl manifest "
                          "(path, label), WebDataset shards ('shards/train-{0000..0146}.tar'), hf:PATH (a Hugging "
                          "Face dataset on disk), 'samples' or 'samples:N' (N random crops per sample photo).")(f)
    return f


@cli.command("examples")
@click.argument("model")
@click.argument("layer", required=False)
@model_options
@_pass_options
@click.option("-k", "k", type=click.IntRange(1, 1000), default=9, show_default=True, help="Examples per channel.")
@click.option("--channels", default="top:8", show_default=True,
              help="Channels to draw: top:N (largest maxima), all, 0-7 or 0,4,8-11.")
@click.option("--class-histograms", is_flag=True,
              help="On a labelled source, also keep each channel's histogram per class (in stats.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print examples.json instead of the table.")
@click.option("--out", metavar="FOLDER", default="examples-out", show_default=True)
def examples_cmd(model: str, layer: str | None, weights: str | None, device: str, images: str, stats_file: str | None,
                 pre_activation: bool, batch_size: int | None, workers: int, rf: str, work: str | None,
                 shard_size: int | None, engine: str, address: str | None, k: int, channels: str,
                 class_histograms: bool, as_json: bool, out: str) -> None:
    """Top-k and bottom-k dataset examples of LAYER's channels (receptive-field crops), with statistics.

    Writes OUT/stats.npz (every channel: examples, histograms, mean/std, band samples; reusable with --stats; the
    --stats file's contents when one is given),
    one OUT/<layer>_cNNNN.png contact sheet per drawn channel, OUT/examples.json (each example with its image's
    class on a labelled source, the classes that fire each channel most, the images skipped as unreadable) and
    OUT/manifest.json (the run's files; absent while it runs or after it failed).

    LAYER is a layer name or alias; without it, the model's study layers (a preset's, marked * by `cnnscope
    layers`) go through one pass, and examples.json holds {"layers": [...], "by_layer": {layer: {...}}}.
    """
    from ..dataset.sources import skipped_dicts

    scale = _scale(work, shard_size, engine, address, stats_file)
    saved = _saved_statistics(stats_file, layer, pre_activation) if stats_file and layer else None  # before --out
    with run_output(out, "examples") as output:  # an unwritable --out fails before the model loads
        m = open_model(model, weights, device)
        layers = layers_or_study(m, [layer] if layer else [], "LAYER")
        if stats_file and not layer:
            saved = _saved_statistics(stats_file, layers, pre_activation)
        stats, source = (saved, None) if saved is not None else _statistics(
            m, layers, images, k, batch_size, workers, rf, pre_activation, class_histograms, scale)
        output.write("stats.npz", stats.save)  # a --stats file too: it may be a file the last run here listed
        parts = {name: _layer_examples(m, stats, name, source, channels, output) for name in layers}
        common = {"model": m.describe(), "images": stats.images, "source": stats.source,
                  "skipped": skipped_dicts(stats.skipped), "n_skipped": stats.n_skipped}
        if layer:
            report = {**common, **parts[layer][0]}
            report = {k: report[k] for k in ("model", "layer", "images", "source", "skipped", "n_skipped",
                                             "pre_activation", "receptive_field", "channels")}
        else:
            report = {**common, "layers": layers, "by_layer": {n: p[0] for n, p in parts.items()}}
        output.write_json("examples.json", report)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for name, (_, rows, labelled) in parts.items():
        if len(parts) > 1:
            click.echo(f"{name}:")
        print_table(rows, ("channel", "max", "mean", "std", "> 0", "best image") + (("top classes",) if labelled
                                                                                     else ()))
    if source is None:
        click.echo("(no crops drawn: --stats files do not know their images; run without --stats for crops)")
    click.echo(f"wrote {output.folder}/")


def _layer_examples(m, stats, layer: str, source, channels: str, output) -> tuple[dict, list[tuple], bool]:
    """One layer's part of ``examples``: its contact sheets written into ``output`` (with a source), its numbers
    (``examples.json``'s per-layer keys), its table rows and whether the source is labelled."""
    from ..batching import track
    from ..dataset import crops
    from ..plot.common import save_figure
    from ..plot.dataset import examples_figure

    ls = stats[layer]
    chosen = _channels(channels, ls)
    numbers, rows = {}, []
    for c in track(chosen, show_progress(), f"contact sheets {layer}", total=len(chosen), unit="sheet"):
        top, bottom = stats.examples(layer, c, "top"), stats.examples(layer, c, "bottom")
        if source is not None:
            fig = examples_figure(crops(m, stats, layer, channel=c, source=source), [e.value for e in top],
                                  crops(m, stats, layer, channel=c, source=source, which="bottom"),
                                  [e.value for e in bottom], title=f"{layer}:{c}  ({stats.images} images)")
            output.write(f"{_safe(layer)}_c{c:04d}.png", partial(save_figure, fig))
        classes = stats.top_classes(layer, c, TOP_CLASSES) if ls.by_class is not None else None
        numbers[c] = {"mean": float(ls.mean[c]), "std": float(ls.std[c]),
                      "fraction_positive": float(ls.fraction_positive[c]), "max": float(ls.maximum[c]),
                      "min": float(ls.minimum[c]), "top": [e.to_dict() for e in top],
                      "bottom": [e.to_dict() for e in bottom], "classes": classes}
        rows.append((c, f"{numbers[c]['max']:.3g}", f"{numbers[c]['mean']:.3g}", f"{numbers[c]['std']:.3g}",
                     f"{numbers[c]['fraction_positive']:.1%}", top[0].name if top else "-")
                    + ((", ".join(r["class"] for r in classes[:3]) or "-",) if classes is not None else ()))
    part = {"layer": layer, "pre_activation": ls.pre_activation,
            "receptive_field": list(ls.rf.size) if ls.rf else None, "channels": numbers}
    return part, rows, ls.by_class is not None


@cli.command("spectrum")
@click.argument("model")
@click.argument("layer")
@model_options
@_pass_options
@click.option("-c", "--channels", required=True, help="Channels: 17, 3,17, 0-3 or top:N.")
@click.option("--examples", "n_examples", type=click.IntRange(0, 64), default=6, show_default=True,
              help="Random example crops per band.")
@click.option("--out", metavar="FOLDER", default="spectrum-out", show_default=True)
def spectrum_cmd(model: str, layer: str, weights: str | None, device: str, images: str, stats_file: str | None,
                 pre_activation: bool, batch_size: int | None, workers: int, rf: str, work: str | None,
                 shard_size: int | None, engine: str, address: str | None, channels: str, n_examples: int,
                 out: str) -> None:
    """Activation spectrum of units: log density of the pre-activations, contribution x*p(x) to the expected value
    per band, and random examples of each band (the Curve Detectors article's Figs. 6, 7 and 12)."""
    from ..batching import track
    from ..dataset.examples import example_crops
    from ..dataset.spectrum import spectrum
    from ..plot.common import save_figure
    from ..plot.dataset import spectrum_figure

    scale = _scale(work, shard_size, engine, address, stats_file)
    saved = _saved_statistics(stats_file, layer, pre_activation) if stats_file else None
    keep = _listed(out, stats_file)  # a --stats file the last run in --out listed is written again, not lost
    with run_output(out, "spectrum") as output:
        m = open_model(model, weights, device)
        stats, source = (saved, None) if saved is not None else _statistics(m, layer, images, 9, batch_size,
                                                                             workers, rf, pre_activation,
                                                                             scale=scale)
        if keep:
            output.write(keep, stats.save)
        ls = stats[layer]
        chosen = _channels(channels, ls)
        for c in track(chosen, show_progress(), "spectra", total=len(chosen), unit="unit"):
            spec = spectrum(stats, layer, c, examples=n_examples)
            band_crops = None
            if source is not None and n_examples:
                band_crops = [example_crops(m, b.examples, source=source, rf=ls.rf) for b in spec.bands]
            stem = f"spectrum_{_safe(layer)}_c{c:04d}"
            output.write(f"{stem}.png", partial(save_figure, spectrum_figure(spec, band_crops)))
            output.write_json(f"{stem}.json", spec.to_dict())
            click.echo(f"{layer}:{c}: mean {spec.mean:.3g}, std {spec.std:.3g}, {spec.fraction_positive:.1%} > 0; "
                       + "; ".join(f"{b.label} {b.fraction:.1%} of positions, {b.contribution:.0%} of E[max(x,0)]"
                                   for b in spec.bands))
    click.echo(f"wrote {output.folder}/")


@cli.command("circuit")
@click.argument("model")
@click.argument("layer")
@model_options
@click.option("-c", "--channel", type=int, required=True, help="The unit.")
@click.option("--image", default=None, help="Attribute the unit on this image (path or sample:NAME).")
@click.option("--position", type=POSITION, default="max", show_default=True,
              help="max, center or ROW,COL in LAYER's grid (the neuron attributed on --image).")
@click.option("--expand-from", "expand_from", default=None,
              help="Also show expanded weights from this earlier layer (activations in between linearised).")
@click.option("--visualize", is_flag=True, help="Render the attribution vector with feature visualization.")
@click.option("--spatial", is_flag=True,
              help="Spatial attribution: per kernel position, the strongest inputs' visualizations with opacity "
                   "|activation x weight| (needs --image).")
@click.option("--spatial-k", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Input channels shown by --spatial.")
@click.option("--steps", type=int, default=128, show_default=True, help="Steps of --visualize and --spatial.")
@click.option("-n", "n", type=click.IntRange(1, 256), default=16, show_default=True, help="Inputs shown.")
@click.option("--out", metavar="FOLDER", default="circuit-out", show_default=True)
def circuit_cmd(model: str, layer: str, weights: str | None, device: str, channel: int, image: str | None,
                position: tuple[int, int] | str | None, expand_from: str | None, visualize: bool, spatial: bool,
                spatial_k: int, steps: int, n: int, out: str) -> None:
    """How a unit is built from the layer below: its incoming weights ranked by norm; with --image the
    activation x weight attribution (sums to the pre-activation minus the bias) and its top channels; with
    --spatial also that attribution at each kernel position over the inputs' feature visualizations."""
    from ..dataset.circuits import attribution, connection, expanded_weights, render_attribution
    from ..images import save_image
    from ..plot.common import save_figure
    from ..plot.dataset import attribution_figure, expanded_figure, weights_figure

    if (visualize or spatial) and image is None:
        raise CnnscopeError(f"--{'visualize' if visualize else 'spatial'} needs --image (the attribution comes from "
                            "an image)")
    with run_output(out, "circuit") as output:
        m = open_model(model, weights, device)
        stem = f"{_safe(layer)}_c{channel:04d}"
        conn = connection(m, layer, channel)
        output.write(f"{stem}_weights.png", partial(save_figure, weights_figure(conn, n)))
        numbers: dict = {"connection": conn.to_dict(n)}
        norms = conn.norms.tolist()
        click.echo(f"{layer}:{channel} <- {conn.conv}" + (f" + {conn.norm}" if conn.norm else "")
                   + f": {len(conn.inputs)} inputs, strongest " + ", ".join(
                       f"{int(conn.inputs[i])} (|w| {norms[i]:.3g})" for i in conn.ranked(5)))
        if image is not None:
            name, arr = read_image_arg(image)
            attr = attribution(m, arr, layer, channel=channel, position=position)
            output.write(f"{stem}_attribution.png",
                         partial(save_figure, attribution_figure(m.fit_image(arr), attr, None, n)))
            numbers["attribution"] = {"image": name, **attr.to_dict(n)}
            click.echo(f"on {name} at {attr.position}: value {attr.value:.4g} = bias {conn.bias:.4g} + "
                       f"{float(attr.contributions.sum()):.4g}; top: "
                       + ", ".join(f"{c} ({v:+.3g})" for c, v in attr.top(5)))
            if visualize:
                res = render_attribution(m, attr, steps=steps, size=128, progress=show_progress())
                output.write(f"{stem}_attribution_vis.png", partial(save_image, res.images[0]))
                numbers["attribution"]["visualization"] = res.to_dict()
            if spatial:
                from ..dataset.spatial_attribution import spatial_attribution
                from ..plot.circuits import spatial_attribution_figure

                sa = spatial_attribution(m, arr, layer, channel=channel, position=attr.position, k=spatial_k,
                                         steps=steps, size=64, progress=show_progress())
                output.write(f"{stem}_spatial.png", partial(save_figure,
                                                            spatial_attribution_figure(sa, m.fit_image(arr))))
                numbers["spatial"] = sa.to_dict()
                click.echo(f"spatial attribution of inputs {', '.join(map(str, sa.channels))} over the "
                           f"{'x'.join(map(str, sa.maps.shape[1:]))} window"
                           + (f" (visualizations of {sa.from_layer})" if sa.from_layer else ""))
        if expand_from is not None:
            ew = expanded_weights(m, layer, channel=channel, from_layer=expand_from)
            output.write(f"{stem}_expanded_from_{_safe(expand_from)}.png",
                         partial(save_figure, expanded_figure(ew, n)))
            numbers["expanded"] = ew.to_dict(n)
        output.write_json(f"{stem}.json", numbers)
    click.echo(f"wrote {output.folder}/")


@cli.command("nmf")
@click.argument("model")
@click.argument("layer")
@click.argument("image_args", nargs=-1, metavar="[IMAGE]...")
@model_options
@click.option("-k", "k", type=click.IntRange(1, 64), default=4, show_default=True, help="Number of groups.")
@click.option("--images", default=None, help="Find neuron groups over many images (folder, glob, 'samples:N').")
@click.option("--max-positions", type=int, default=20000, show_default=True, help="Positions sampled (--images).")
@click.option("--negative", type=click.Choice(["clip", "abs", "error"]), default="clip", show_default=True,
              help="What NMF does with negative activations.")
@pre_activation_option
@batch_size_option
@click.option("--out", metavar="FOLDER", default="nmf-out", show_default=True)
def nmf_cmd(model: str, layer: str, image_args: tuple[str, ...], weights: str | None, device: str, k: int,
            images: str | None, max_positions: int, negative: str, pre_activation: bool, batch_size: int | None,
            out: str) -> None:
    """Non-negative matrix factorisation of LAYER's activations into k groups: per IMAGE (where each group is
    active + its channel loadings), or with --images over many images (neuron groups, then applied to IMAGEs)."""
    from ..dataset.factorize import factorize_dataset, factorize_image
    from ..dataset.sources import skipped_lines
    from ..images import save_image
    from ..plot.common import save_figure
    from ..plot.dataset import groups_figure, nmf_figure

    if not image_args and images is None:
        raise CnnscopeError("give IMAGE arguments (path or sample:NAME) and/or --images SOURCE")
    with run_output(out, "nmf") as output:
        m = open_model(model, weights, device)
        numbers: dict = {"layer": layer, "k": k}
        groups = None
        if images is not None:
            groups = factorize_dataset(m, images, layer, k=k, pre_activation=pre_activation,
                                       max_positions=max_positions, negative=negative, batch_size=batch_size,
                                       progress=show_progress())
            for line in skipped_lines(groups.skipped):
                click.echo(line, err=True)
            output.write(f"groups_{_safe(layer)}_k{k}.png", partial(save_figure, groups_figure(groups)))
            numbers["groups"] = groups.to_dict()
            click.echo(f"{k} groups over {groups.images} images ({groups.positions} positions): relative error "
                       f"{groups.relative_error:.3f}")
        numbers["images"] = {}
        for arg in image_args:
            name, arr = read_image_arg(arg)
            f = groups.transform(m, arr) if groups is not None else factorize_image(
                m, arr, layer, k=k, pre_activation=pre_activation, negative=negative)
            stem = f"nmf_{_safe(Path(name).stem)}_{_safe(layer)}_k{k}"
            output.write(f"{stem}.png", partial(save_figure, nmf_figure(f)))
            output.write(f"{stem}_overlay.png", partial(save_image, f.overlay()))
            numbers["images"][name] = f.to_dict()
            click.echo(f"{name}: relative error {f.relative_error:.3f}; group shares " + ", ".join(
                f"{g['group']}: {g['share']:.0%}" for g in f.to_dict()["groups"]))
        output.write_json(f"nmf_{_safe(layer)}_k{k}.json", numbers)
    click.echo(f"wrote {output.folder}/")


@demo_section(60, "Dataset examples, activation spectrum, circuits and NMF (Curve Detectors)")
def _dataset_demo(ctx: DemoContext) -> None:
    from ..dataset import attribution, collect_statistics, connection, crops, example_crops, factorize_image, spectrum
    from ..plot.common import save_figure
    from ..plot.dataset import attribution_figure, examples_figure, nmf_figure, spectrum_figure, weights_figure

    model, layer = ctx.model, QUICK_LAYER if ctx.quick else DEMO_LAYER
    source = "samples" if ctx.quick else "samples:6"
    # pre-activation values, as the article plots them
    stats = collect_statistics(model, source, [layer], pre_activation=True, k=6 if ctx.quick else 9)
    ls = stats[layer]
    unit = ls.strongest(1)[0]
    click.echo(f"  {stats.images} images through {layer} ({ls.channels} channels, receptive field "
               f"{ls.rf.size[0]}x{ls.rf.size[1]} px); strongest unit {unit}: max {float(ls.maximum[unit]):.3g}, "
               f"{float(ls.fraction_positive[unit]):.0%} of positions > 0 (pre-activation)")
    top, bottom = stats.examples(layer, unit), stats.examples(layer, unit, "bottom")
    save_figure(examples_figure(crops(model, stats, layer, channel=unit, source=source), [e.value for e in top],
                                crops(model, stats, layer, channel=unit, source=source, which="bottom"),
                                [e.value for e in bottom], title=f"{layer}:{unit}"), ctx.out / "dataset_examples.png")
    spec = spectrum(stats, layer, unit, examples=3 if ctx.quick else 6)
    band_crops = [example_crops(model, b.examples, source=source, rf=ls.rf) for b in spec.bands]
    save_figure(spectrum_figure(spec, band_crops), ctx.out / "dataset_spectrum.png")
    click.echo("  bands: " + "; ".join(f"{b.label} {b.fraction:.1%} of positions -> {b.contribution:.0%} of "
                                       "E[max(x,0)]" for b in spec.bands))
    conn = connection(model, layer, unit)
    save_figure(weights_figure(conn, 12), ctx.out / "circuit_weights.png")
    name = next(iter(ctx.images))
    attr = attribution(model, ctx.images[name], layer, channel=unit)
    save_figure(attribution_figure(model.fit_image(ctx.images[name]), attr, ls.rf.box(*attr.position), 12),
                ctx.out / "circuit_attribution.png")
    click.echo(f"  {layer}:{unit} on {name} at {attr.position}: {attr.value:.3g} = bias {conn.bias:.3g} + sum of "
               f"W*h_prev {float(attr.contributions.sum()):.3g}; top inputs "
               + ", ".join(f"{c} ({v:+.2f})" for c, v in attr.top(3)))
    f = factorize_image(model, ctx.images[name], layer, k=4)
    save_figure(nmf_figure(f), ctx.out / "nmf_groups.png")
    click.echo(f"  NMF of {name} at {layer} into 4 groups: relative error {f.relative_error:.2f}")
