"""``cnnscope flow`` (attribution between the orientation families of two layers) and ``cnnscope edit`` (ablate
units or edit weights and compare the tuning before and after): the circuit side analyses of *Curve Detectors*."""

from __future__ import annotations

import re
from functools import partial

import click

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import (
    batch_size_option,
    channels_option,
    cli,
    model_options,
    open_model,
    pre_activation_option,
    print_table,
    show_progress,
)
from .stimuli import _number_list, _stimulus_params, stimulus_options


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _family(m, layer: str, channels: str | None, k: int, min_selectivity: float, size: int | None,
            pre_activation: bool, batch_size: int | None):
    """``(layer, channels)`` when named, else the layer's discovered orientation family."""
    from ..stimuli import discover_family

    if channels is not None:
        return layer, channels
    fam, _ = discover_family(m, layer, k=k, min_selectivity=min_selectivity, size=size, pre_activation=pre_activation,
                             batch_size=batch_size, progress=show_progress())
    if not len(fam):
        raise CnnscopeError(f"no channel of {layer!r} has orientation selectivity >= {min_selectivity}; lower "
                            "--min-selectivity or name the channels")
    return fam


@cli.command("flow")
@click.argument("model")
@click.argument("source")
@click.argument("target")
@model_options
@click.option("--source-channels", default=None, help="Channels of SOURCE (default: its discovered curve family).")
@click.option("--target-channels", default=None, help="Channels of TARGET (default: its discovered curve family).")
@click.option("--family", "family_k", type=click.IntRange(1), default=8, show_default=True,
              help="Family size when the channels are discovered.")
@click.option("--min-selectivity", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Orientation selectivity a discovered member needs.")
@click.option("--size", type=click.IntRange(16), default=None,
              help="Stimulus size of the discovery (default: the model's input size).")
@pre_activation_option
@click.option("--images", default=None,
              help="Sum activation x weight over these images (folder, glob, samples, samples:N); default: the "
                   "weights alone.")
@click.option("--max-images", type=click.IntRange(1), default=64, show_default=True, help="At most this many.")
@batch_size_option
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the graph and numbers.")
def flow_cmd(model: str, source: str, target: str, weights: str | None, device: str, source_channels: str | None,
             target_channels: str | None, family_k: int, min_selectivity: float, size: int | None,
             pre_activation: bool, images: str | None, max_images: int, batch_size: int | None, out: str) -> None:
    """The flow from the orientation family of SOURCE to that of TARGET (a later layer): the weight (or, with
    --images, activation x weight summed over the images) from each source member to each target member, drawn
    as a graph with both rows ordered by preferred orientation. --pre-activation reads the discovery's tuning
    before the activation (as the article does)."""
    from ..plot import save_figure
    from ..plot.circuits import flow_figure
    from ..stimuli.flow import family_flow

    with run_output(out, "flow") as output:
        m = open_model(model, weights, device)
        src = _family(m, source, source_channels, family_k, min_selectivity, size, pre_activation, batch_size)
        dst = _family(m, target, target_channels, family_k, min_selectivity, size, pre_activation, batch_size)
        pictures = None
        if images is not None:
            from ..dataset import open_source

            found = open_source(images)
            pictures = [found.load(i) for i in range(min(len(found), max_images))]
            if not pictures:
                raise CnnscopeError(f"no images in {images!r}")
        flow = family_flow(m, src, dst, images=pictures, batch_size=batch_size)
        stem = f"flow_{_safe(flow.source_layer)}_to_{_safe(flow.target_layer)}"
        png = output.write(f"{stem}.png", partial(save_figure, flow_figure(flow)))
        output.write_json(f"{stem}.json", {"model": m.name, **flow.to_dict()})
    print_table([(s, t, f"{e:+.4g}") for s, t, e in flow.strongest(8)], ("source", "target", "edge"))
    click.echo(f"{len(flow.source_channels)} x {len(flow.target_channels)} edges ({flow.mode}) -> {png}")


@cli.command("edit")
@click.argument("model")
@click.argument("layer")
@model_options
@channels_option
@click.option("--ablate", "ablations", multiple=True, metavar="LAYER:CHANNELS",
              help="Zero these channels of LAYER's output (e.g. blocks.2.1.bn1.act:3,7-9); repeatable.")
@click.option("--edit-weight", "weight_edits", multiple=True, metavar="CONV:OUT:IN=V|CONV:OUT:IN*F",
              help="Set (=) or scale (*) the kernel from input IN (or all) to output OUT of a Conv2d; repeatable.")
@stimulus_options
@pre_activation_option
@click.option("--step", type=click.FloatRange(0.5, 90), default=10.0, show_default=True,
              help="Orientation step in degrees.")
@click.option("--size", type=click.IntRange(16), default=None, help="Stimulus size (default: the model's input).")
@batch_size_option
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the figure and numbers.")
def edit_cmd(model: str, layer: str, weights: str | None, device: str, channels: str | None,
             ablations: tuple[str, ...], weight_edits: tuple[str, ...], kind: str, levels: str | None,
             param: str | None, width: float | None, color: str | None, background: str | None,
             sets: tuple[str, ...], pre_activation: bool, step: float, size: int | None, batch_size: int | None,
             out: str) -> None:
    """Ablate units (--ablate) and/or edit weights (--edit-weight), and compare LAYER's tuning to synthetic stimuli
    before and after (the model itself is restored)."""
    from ..plot import save_figure
    from ..plot.stimuli import edit_figure
    from ..stimuli import stimulus_class
    from ..stimuli.editing import edit_effect, parse_ablation, parse_weight_edit
    from ..stimuli.tuning import default_orientations

    ablate: dict[str, str] = {}
    for text in ablations:
        name, chans = parse_ablation(text)
        ablate[name] = f"{ablate[name]},{chans}" if name in ablate else chans
    edits = [parse_weight_edit(t) for t in weight_edits]
    if not ablate and not edits:
        raise CnnscopeError("nothing to edit: give --ablate LAYER:CHANNELS and/or --edit-weight CONV:OUT:IN=VALUE")
    stimulus = _stimulus_params(width, color, background, sets)
    with run_output(out, "edit") as output:
        m = open_model(model, weights, device)
        effect = edit_effect(m, layer, channels=channels, ablate=ablate, weights=edits, kind=kind,
                             orientations=default_orientations(step, stimulus_class(kind).period),
                             levels=_number_list(levels, "--levels"), param=param, size=size,
                             pre_activation=pre_activation, batch_size=batch_size, progress=show_progress(),
                             **stimulus)
        stem = f"edit_{_safe(layer)}"
        png = output.write(f"{stem}.png", partial(save_figure, edit_figure(effect)))
        output.write_json(f"{stem}.json", {"model": m.name, **effect.to_dict()})
    change = effect.change().tolist()
    print_table([(c, f"{v:.1%}") for c, v in zip(effect.before.channels.tolist(), change)],
                ("channel", "largest change / largest response"))
    click.echo(f"tuning before and after -> {png}")
