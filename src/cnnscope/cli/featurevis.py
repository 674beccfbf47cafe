"""``cnnscope render`` (feature visualization of channels, neurons or a whole layer), ``cnnscope interpolate``
(frames between two objectives), ``cnnscope semantic-dictionary`` (an image's top units per position) and the demo
section (order 30) showing the texture -> pattern -> part progression across depth (Olah et al. 2017)."""

from __future__ import annotations

import json
import re
from functools import partial

import click

from ..outputs import run_output, write_text
from .app import (
    POSITION,
    batch_size_option,
    channels_option,
    cli,
    model_options,
    open_model,
    pre_activation_option,
    print_table,
    read_image_arg,
    show_progress,
)
from .demo import DemoContext, demo_section

#: the demo's layers of EfficientNet-Lite0, shallow to deep
DEMO_LAYERS = {"shallow (blocks.1.1)": "blocks.1.1", "middle (blocks.3.2)": "blocks.3.2",
               "deep (blocks.5.3)": "blocks.5.3"}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def build_objectives(model, target: str, channels: str | None, position, pre_activation: bool, negative: bool):
    """The objectives of a ``render`` TARGET and a file-name stem for each."""
    from .. import featurevis as fv
    from ..errors import CnnscopeError

    if ":" in target:
        if channels is not None or position is not None or pre_activation:
            raise CnnscopeError("--channels, --position and --pre-activation go with a LAYER target; write them "
                                f"into the objective instead (cnnscope objectives shows how), got {target!r}")
        objs, stems = [fv.parse_objective(target)], [_safe(target)]
    else:
        objs = fv.unit_objectives(model, target, channels=channels, position=position, pre_activation=pre_activation)
        mark = ("n" if position is not None else "c")
        pre = "_pre" if pre_activation else ""
        stems = [f"{_safe(target)}{pre}_{mark}{o.channel:04d}" for o in objs]
    if negative:
        objs = [-o for o in objs]
        stems = [s + "_neg" for s in stems]
    return objs, stems


@cli.command("render")
@click.argument("model")
@click.argument("target")
@model_options
@partial(channels_option, help="With a LAYER target: channels to render, one image each: all (default), 0-31 "
                               "or 0,4,8-11.")
@click.option("--position", type=POSITION, default=None,
              help="With a LAYER target: render the neuron at max, center or ROW,COL instead of the channel mean.")
@pre_activation_option
@click.option("--negative", is_flag=True, help="Minimise instead of maximise.")
@click.option("--recipe", default=None,
              help="A recipe of cnnscope.featurevis.RECIPES (a wrong name lists them all); default: class for "
                   "class_logit targets, lucid otherwise.")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Optimisation steps (default: the recipe's; 512, class: 128).")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Image side in pixels (default: the recipe's; 128, class: the model's input size).")
@click.option("--init", "init", metavar="PATH|sample:NAME", default=None,
              help="Start from this picture instead of noise (a learned prior: a dataset image).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--diversity", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per objective, pushed apart by the diversity term.")
@batch_size_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the chunks of units run: this process, or Ray actors (pip install 'cnnscope[ray]'; "
                   "docs/scale.md). Same images either way.")
@click.option("--address", metavar="auto|HOST:PORT", default=None,
              help="With --engine ray: the cluster to join (default: start a local Ray on this machine).")
@click.option("--out", metavar="FOLDER", default="render-out", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal).")
def render_cmd(model: str, target: str, weights: str | None, device: str, channels: str | None, position,
               pre_activation: bool, negative: bool, recipe: str | None, steps: int | None, size: int | None,
               init: str | None, seed: int, diversity: int, batch_size: int | None, engine: str,
               address: str | None, out: str, progress: bool | None) -> None:
    """Feature visualization: images that maximise units of MODEL.

    TARGET is a LAYER (one image per channel of --channels; the neuron at --position instead of the channel's
    mean), or one objective written KIND:ARG[:ARG...] with KIND from `cnnscope objectives` (layer:blocks.3 for
    DeepDream, neuron:blocks.4.0:3:2,5, class_logit:281, ...). Writes one PNG per image, grid.png (contact sheet),
    render.json (specs, seeds, activations, timings) and manifest.json (the run's files) to --out. A one-channel
    model's images are saved grey (what the model sees). Activations are raw values: with --negative, the
    minimised unit's own (low) value. class_logit targets use the class recipe (the model's input size, 128
    steps) unless --recipe says otherwise; --init starts from a picture (--steps 0 returns it unchanged).

    Example: cnnscope render efficientnet_lite0 blocks.4.0 --channels 0-7 --steps 256 --out fv

    Many units on a Ray cluster: ... --channels 0-255 --engine ray --address auto
    """
    from ..featurevis import get_recipe, render
    from ..images import save_image
    from ..plot.common import save_figure
    from ..plot.featurevis import contact_sheet

    if recipe is not None:
        get_recipe(recipe)  # unknown recipe names fail before the model loads
    with run_output(out, "render") as output:  # so does an unwritable --out
        m = open_model(model, weights, device)
        objs, stems = build_objectives(m, target, channels, position, pre_activation, negative)
        start = None if init is None else read_image_arg(init)[1]
        show = show_progress() if progress is None else progress
        res = render(m, objs, recipe=recipe, steps=steps, size=size, seed=seed, batch_size=batch_size,
                     diversity=diversity, progress=show, engine=engine, address=address, init=start)
        steps = res.spec["steps"]
        files = []
        for k, img in enumerate(res.images):
            stem = stems[k // diversity] + (f"_d{k % diversity}" if diversity > 1 else "")
            files.append(output.write(f"{stem}.png", partial(save_image, img)).name)
        short = [lab.replace(f"'{target}', ", "") for lab in res.labels]
        cols = min(8, len(res.images)) if diversity == 1 else diversity
        values = res.activations.tolist()
        sheet = contact_sheet(res.images, short, values, cols=cols,
                              title=f"{m.name} {target} ({res.spec['recipe']['name']}, {steps} steps)",
                              progress=show)
        output.write("grid.png", partial(save_figure, sheet, dpi=120))
        output.write_json("render.json", {"model": m.describe(), "target": target, "seed": seed, "files": files,
                                          "grid": "grid.png", "init": init, **res.to_dict()})
    folder = output.folder
    rows = [(f, lab, f"{a:.4g}") for f, lab, a in zip(files, res.labels, values)]
    if len(rows) <= 32:
        print_table(rows, ("file", "objective", "activation"))
    click.echo(f"{len(files)} images, grid.png and render.json in {folder}/ "
               f"({res.timing['seconds']:.1f}s, {res.timing['ms_per_image_step']:.1f} ms per image-step)")


@cli.command("interpolate")
@click.argument("model")
@click.argument("objective_a", metavar="OBJ_A")
@click.argument("objective_b", metavar="OBJ_B")
@model_options
@click.option("--frames", type=click.IntRange(min=2), default=6, show_default=True, help="Images from A to B.")
@click.option("--recipe", default="lucid", show_default=True,
              help="Transforms, optimiser and learning rate of this recipe (the parameterization is shared Fourier).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimisation steps (default 512).")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Image side in pixels (default 128).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", metavar="FOLDER", default="interpolate-out", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal).")
def interpolate_cmd(model: str, objective_a: str, objective_b: str, weights: str | None, device: str, frames: int,
                    recipe: str, steps: int | None, size: int | None, seed: int, out: str,
                    progress: bool | None) -> None:
    """Frames from objective OBJ_A to OBJ_B with a shared parameterization (the frames line up).

    OBJ_A and OBJ_B are objectives written KIND:ARG[:ARG...] (`cnnscope objectives`). Frame i maximises
    (1 - t) * A + t * B, t = i / (frames - 1). Writes frame_NN.png, interpolation.png (the frames over both
    objectives' values), interpolation.json and manifest.json to --out.

    Example: cnnscope interpolate efficientnet_lite0 channel:blocks.4.0:3 channel:blocks.4.0:7 --frames 6
    """
    from ..featurevis import get_recipe, parse_objective
    from ..featurevis.interpolate import interpolate
    from ..images import save_image
    from ..plot.common import save_figure
    from ..plot.featurevis import interpolation_strip

    get_recipe(recipe)
    a, b = parse_objective(objective_a), parse_objective(objective_b)
    with run_output(out, "interpolate") as output:
        m = open_model(model, weights, device)
        show = show_progress() if progress is None else progress
        res = interpolate(m, a, b, frames=frames, recipe=recipe, steps=steps, size=size, seed=seed, progress=show)
        files = [output.write(f"frame_{i:02d}.png", partial(save_image, img)).name for i, img in enumerate(res.images)]
        fig = interpolation_strip(res.images, res.t, res.values_a.tolist(), res.values_b.tolist(), res.labels,
                                  title=f"{m.name}: {objective_a} -> {objective_b}")
        output.write("interpolation.png", partial(save_figure, fig, dpi=120))
        output.write_json("interpolation.json", {"model": m.describe(), "files": files,
                                                 "figure": "interpolation.png", **res.to_dict()})
    rows = [(f, f"{t:.2f}", f"{va:.4g}", f"{vb:.4g}")
            for f, t, va, vb in zip(files, res.t, res.values_a.tolist(), res.values_b.tolist())]
    print_table(rows, ("file", "t", "A", "B"))
    click.echo(f"{len(files)} frames, interpolation.png and interpolation.json in {output.folder}/")


@cli.command("semantic-dictionary")
@click.argument("model")
@click.argument("image", metavar="IMAGE")
@click.argument("layer")
@model_options
@click.option("--k", "k", type=click.IntRange(min=1), default=3, show_default=True, help="Units per position.")
@click.option("--grid", type=click.IntRange(min=1), default=None,
              help="Average the activations to a GRID x GRID map first (default: the layer's own positions).")
@pre_activation_option
@click.option("--no-visualize", is_flag=True, help="Numbers only: do not render the units.")
@click.option("--recipe", default=None, help="Recipe of the units' renders (default lucid).")
@click.option("--steps", type=click.IntRange(min=1), default=256, show_default=True,
              help="Optimisation steps of each unit's render.")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True, help="Render side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@batch_size_option
@click.option("--out", metavar="FOLDER", default="dictionary-out", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal).")
def semantic_dictionary_cmd(model: str, image: str, layer: str, weights: str | None, device: str, k: int,
                            grid: int | None, pre_activation: bool, no_visualize: bool, recipe: str | None,
                            steps: int, size: int, seed: int, batch_size: int | None, out: str,
                            progress: bool | None) -> None:
    """Semantic dictionary: at each position of IMAGE, LAYER's top units with their feature visualizations.

    IMAGE is a path or sample:NAME. Writes dictionary.png (the image with the layer's grid, the top channels per
    position, each position's top unit's visualization faded by the activation norm, the most frequent units),
    unit_CCCC.png per rendered unit, dictionary.json (per position its units and values) and manifest.json.

    Example: cnnscope semantic-dictionary efficientnet_lite0 sample:chelsea blocks.4.0 --grid 7 --steps 128
    """
    from ..featurevis import get_recipe
    from ..featurevis.dictionary import semantic_dictionary
    from ..images import save_image
    from ..plot.common import save_figure
    from ..plot.featurevis import semantic_dictionary_figure

    if recipe is not None:
        get_recipe(recipe)
    with run_output(out, "semantic-dictionary") as output:
        m = open_model(model, weights, device)
        name, picture = read_image_arg(image)
        show = show_progress() if progress is None else progress
        d = semantic_dictionary(m, picture, layer, k=k, grid=grid, pre_activation=pre_activation,
                                visualize=not no_visualize, recipe=recipe, steps=steps, size=size, seed=seed,
                                batch_size=batch_size, progress=show)
        files = [output.write(f"unit_{u:04d}.png", partial(save_image, img)).name
                 for u, img in zip(d.units, d.images)]
        norms = d.activations.norm(dim=0).numpy()
        fig = semantic_dictionary_figure(d.image, d.top_units.numpy(), d.top_values.numpy(), norms, d.units,
                                         d.images, title=f"{m.name} {layer} on {name}")
        output.write("dictionary.png", partial(save_figure, fig, dpi=120))
        output.write_json("dictionary.json", {"model": m.describe(), "image": image, "files": files,
                                              "figure": "dictionary.png", **d.to_dict()})
    h, w, _ = d.top_units.shape
    click.echo(f"{h}x{w} positions, {len(d.units)} distinct top-{k} units; dictionary.png and dictionary.json in "
               f"{output.folder}/")


@cli.command("objectives")
def objectives_cmd() -> None:
    """List the feature-visualization objectives: the KIND:ARG[:ARG...] targets of `cnnscope render`.

    Arguments map in order onto the objective's parameters; name=value sets one by name. Values are numbers,
    true/false, none, text, or comma-separated lists (a position ROW,COL, a direction's vector).
    """
    from ..featurevis import describe_objectives

    rows = [(d["name"], d["usage"], d["summary"]) for d in describe_objectives()]
    print_table(rows, ("objective", "usage", "value per image"))


@demo_section(30, "Feature visualization: textures -> patterns -> parts")
def _featurevis_demo(ctx: DemoContext) -> None:
    from ..featurevis import channel, high_frequency_share, render
    from ..plot.common import save_figure
    from ..plot.featurevis import layer_rows

    # 128 steps at 112 px already show the progression; the full demo stays within a few minutes on a laptop CPU
    n, steps, size = (2, 8, 48) if ctx.quick else (4, 128, 112)
    rows, numbers = {}, {}
    for title, layer in DEMO_LAYERS.items():
        res = render(ctx.model, [channel(layer, c) for c in range(n)], recipe="lucid", steps=steps, size=size)
        rows[title] = (res.images, [f"ch {c}: {a:.3g}" for c, a in enumerate(res.activations.tolist())])
        hf = high_frequency_share(res.images)
        numbers[layer] = {"channels": list(range(n)), "activations": res.activations.tolist(),
                          "high_frequency_share": hf.tolist(), "seconds": res.timing["seconds"]}
        click.echo(f"  {title:<22} channels 0..{n - 1}: activation "
                   f"{float(res.activations.mean()):.3g} on average, {res.timing['seconds']:.1f}s")
    fig = layer_rows(rows, title=f"{ctx.model.name}: lucid recipe, {steps} steps, {size}px")
    path = save_figure(fig, ctx.out / "featurevis_layers.png", dpi=110)
    write_text(ctx.out / "featurevis_layers.json",
               json.dumps({"steps": steps, "size": size, "layers": numbers}, indent=2))
    click.echo(f"  shallow layers give textures, middle ones patterns, deep ones object parts: {path}")
