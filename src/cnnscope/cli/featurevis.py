"""``cnnscope render`` (feature visualization of channels, neurons or a whole layer) and the demo section
(order 30) showing the texture -> pattern -> part progression across depth (Olah et al. 2017)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import numpy as np

from ..errors import CnnscopeError
from .app import cli, model_options, open_model, print_table, write_json
from .demo import DemoContext, demo_section

#: the demo's layers of EfficientNet-Lite0, shallow to deep
DEMO_LAYERS = {"shallow (blocks.1.1)": "blocks.1.1", "middle (blocks.3.2)": "blocks.3.2",
               "deep (blocks.5.3)": "blocks.5.3"}


def parse_target(target: str) -> tuple[str, list[int] | str | None]:
    """``LAYER``, ``LAYER:3``, ``LAYER:0,4,7``, ``LAYER:0-7`` or ``LAYER:all`` -> ``(layer, channels)``.

    ``channels`` is ``None`` for a whole-layer (DeepDream) objective and ``"all"`` for every channel.
    """
    if ":" not in target:
        return target, None
    layer, spec = target.rsplit(":", 1)
    if not layer:
        raise CnnscopeError(f"missing layer name in {target!r} (expected LAYER[:CH[,CH...]|:all])")
    if spec.strip().lower() == "all":
        return layer, "all"
    channels: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise CnnscopeError(f"bad channel list {spec!r}: use numbers, ranges like 0-7, or 'all'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise CnnscopeError(f"bad channel range {part!r}: the end is below the start")
        channels += range(lo, hi + 1)
    return layer, list(dict.fromkeys(channels))


def _layer_channels(model, layer: str, size: int) -> int:
    """Channel count of ``layer`` (one probe forward at ``size``)."""
    from ..capture import list_layers, resolve_layers

    resolve_layers(model.module, layer)  # unknown names: LayerError with close matches
    try:
        infos = {i.name: i for i in list_layers(model.module, size)}
    except RuntimeError as exc:
        raise CnnscopeError(f"size {size} is too small for {model.name}: {exc}") from None
    info = infos.get(layer)
    if info is None or info.channels is None:
        raise CnnscopeError(f"layer {layer!r} produced no [C, H, W] output at size {size}; name channels explicitly")
    return int(info.channels)


def build_objectives(model, layer: str, channels, neuron: bool, negative: bool, size: int):
    """The objectives of a ``render`` target, and a file-name stem for each."""
    from .. import featurevis as fv

    if channels is None:
        if neuron:
            raise CnnscopeError("--neuron needs channels (LAYER:CH); a bare LAYER renders the whole layer")
        objs, stems = [fv.layer(layer)], ["layer"]
    else:
        if channels == "all":
            channels = list(range(_layer_channels(model, layer, size)))
        make = fv.neuron if neuron else fv.channel
        objs = [make(layer, c) for c in channels]
        stems = [f"{'n' if neuron else 'c'}{c:04d}" for c in channels]
    if negative:
        objs = [-o for o in objs]
        stems = [s + "_neg" for s in stems]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", layer)
    return objs, [f"{safe}_{s}" for s in stems]


@cli.command("render")
@click.argument("model")
@click.argument("target")
@model_options
@click.option("--neuron", is_flag=True, help="Maximise the centre neuron instead of the channel's mean.")
@click.option("--negative", is_flag=True, help="Minimise instead of maximise.")
@click.option("--recipe", default="lucid", show_default=True,
              help="plain, gaussian_blur, bilateral_blur, lucid or maco.")
@click.option("--steps", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--diversity", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per objective, pushed apart by the diversity term.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per render batch (memory bound; default 8 on a CPU, 32 on a GPU).")
@click.option("--out", type=click.Path(file_okay=False), default="render-out", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal).")
def render_cmd(model: str, target: str, weights: str | None, device: str, neuron: bool, negative: bool,
               recipe: str, steps: int, size: int, seed: int, diversity: int, batch_size: int | None, out: str,
               progress: bool | None) -> None:
    """Feature visualization: images that maximise units of MODEL.

    TARGET is LAYER (whole layer, DeepDream), LAYER:CH, LAYER:0,4,7, LAYER:0-7 or LAYER:all. Writes one PNG per
    image, grid.png (contact sheet) and render.json (specs, seeds, activations, timings) to --out.

    Example: cnnscope render efficientnet_lite0 blocks.4.0:0-7 --steps 256 --out fv
    """
    from ..featurevis import get_recipe, render
    from ..images import save_image
    from ..plot.common import save_figure
    from ..plot.featurevis import contact_sheet

    get_recipe(recipe)  # unknown recipe names fail before the model loads
    layer, channels = parse_target(target)
    m = open_model(model, weights, device)
    objs, stems = build_objectives(m, layer, channels, neuron, negative, size)
    show = sys.stderr.isatty() if progress is None else progress
    res = render(m, objs, recipe=recipe, steps=steps, size=size, seed=seed, batch_size=batch_size,
                 diversity=diversity, progress=show)
    folder = Path(out)
    files = []
    for k, img in enumerate(res.images):
        stem = stems[k // diversity] + (f"_d{k % diversity}" if diversity > 1 else "")
        files.append(save_image(img, folder / f"{stem}.png").name)
    short = [lab.replace(f"'{layer}', ", "") for lab in res.labels]
    cols = min(8, len(res.images)) if diversity == 1 else diversity
    save_figure(contact_sheet(res.images, short, res.activations, cols=cols,
                              title=f"{m.name} {target} ({res.spec['recipe']['name']}, {steps} steps)"),
                folder / "grid.png", dpi=120)
    write_json(folder / "render.json", {"model": m.describe(), "target": target, "seed": seed,
                                        "files": files, "grid": "grid.png", **res.to_dict()})
    rows = [(f, lab, f"{a:.4g}") for f, lab, a in zip(files, res.labels, res.activations)]
    if len(rows) <= 32:
        print_table(rows, ("file", "objective", "activation"))
    click.echo(f"{len(files)} images, grid.png and render.json in {folder}/ "
               f"({res.timing['seconds']:.1f}s, {res.timing['ms_per_image_step']:.1f} ms per image-step)")


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
        rows[title] = (res.images, [f"ch {c}: {a:.3g}" for c, a in enumerate(res.activations)])
        hf = high_frequency_share(res.images)
        numbers[layer] = {"channels": list(range(n)), "activations": res.activations.tolist(),
                          "high_frequency_share": hf.tolist(), "seconds": res.timing["seconds"]}
        click.echo(f"  {title:<22} channels 0..{n - 1}: activation "
                   f"{np.mean(res.activations):.3g} on average, {res.timing['seconds']:.1f}s")
    fig = layer_rows(rows, title=f"{ctx.model.name}: lucid recipe, {steps} steps, {size}px")
    path = save_figure(fig, ctx.out / "featurevis_layers.png", dpi=110)
    write_json(ctx.out / "featurevis_layers.json", {"steps": steps, "size": size, "layers": numbers})
    click.echo(f"  shallow layers give textures, middle ones patterns, deep ones object parts: {path}")
