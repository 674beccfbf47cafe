"""``cnnscope explain`` (attribution panels, raw maps and a JSON summary per image) and demo section 40."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import click
import numpy as np

from ..errors import CnnscopeError
from .app import (
    POSITION,
    batch_size_option,
    cli,
    model_options,
    one_line_warnings,
    open_model,
    read_image_arg,
    show_progress,
    write_json,
)
from .demo import DemoContext, demo_section

DEFAULT_METHODS = "gradcam,guided_backprop,integrated_gradients,occlusion"


def parse_cli_target(text: str | None, position: tuple[int, int] | str | None = None):
    """``top``, ``INDEX``, ``LABEL`` or ``unit:LAYER:CHANNEL`` (at ``--position``) -> an attribution target."""
    from ..units import unit

    if text is not None and text.startswith("unit:"):
        parts = text.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise CnnscopeError(f"bad unit target {text!r}: use unit:LAYER:CHANNEL (and --position for one neuron)")
        return unit(parts[1], int(parts[2]), position)
    if position is not None:
        raise CnnscopeError("--position needs a unit target (--target unit:LAYER:CHANNEL)")
    if text is None or text.strip().lower() in ("", "top", "top1"):
        return None
    return int(text) if text.strip().isdigit() else text


def parse_options(items: tuple[str, ...], methods: list[str]) -> dict[str, dict]:
    """``METHOD.KEY=VALUE`` strings -> ``{method: {key: value}}`` (values read as JSON when they parse)."""
    out: dict[str, dict] = {}
    for item in items:
        m = re.fullmatch(r"([A-Za-z_]\w*)\.(\w+)=(.*)", item)
        if not m:
            raise CnnscopeError(f"bad option {item!r}: use METHOD.KEY=VALUE, e.g. integrated_gradients.n_steps=32")
        method, key, raw = m.groups()
        if method not in methods:
            raise CnnscopeError(f"option {item!r} names method {method!r}, which is not in --methods "
                                f"({', '.join(methods)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def _stems(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem) or "image"
        base, k = stem, 2
        while stem in out:
            stem, k = f"{base}_{k}", k + 1
        out.append(stem)
    return out


@cli.command("explain")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated methods (`cnnscope explain-methods` lists them).")
@click.option("--target", default="top", show_default=True,
              help="top, a class INDEX, a class LABEL, or unit:LAYER:CHANNEL.")
@click.option("--position", type=POSITION, default=None,
              help="Of a unit target: max, center or ROW,COL (one neuron); default: the channel's mean.")
@click.option("--layer", default=None, help="Layer of the CAM methods (default: the last one with spatial extent).")
@click.option("--out", type=click.Path(file_okay=False), default="explain-out", show_default=True)
@batch_size_option
@click.option("-o", "--option", "option", multiple=True,
              help="Method option METHOD.KEY=VALUE (repeatable), e.g. occlusion.window=48.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heatmap opacity.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr (default: on a terminal, unless cnnscope --quiet).")
def explain_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, methods: str, target: str,
                position: tuple[int, int] | str | None, layer: str | None, out: str, batch_size: int | None,
                option: tuple[str, ...], alpha: float, progress: bool | None) -> None:
    """Explain MODEL's answer on each IMAGE (path or sample:NAME) with several attribution methods.

    Writes per image: NAME_panel.png (original + one overlay per method), NAME_METHOD.npy (raw maps) and
    NAME.json (prediction, target, per-method layer/options/statistics), and manifest.json when done. A method
    that cannot apply to MODEL (guided backprop without ReLUs, ...) is skipped with a note on stderr and listed
    under "skipped" in NAME.json.
    """
    from ..attribution import explain, get_method
    from ..outputs import run_output
    from ..plot.attribution import save_panel

    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:
        get_method(name)
    opts = parse_options(option, names)
    tgt = parse_cli_target(target, position)
    with run_output(out, "explain") as folder:
        m = open_model(model, weights, device)
        loaded = [read_image_arg(arg) for arg in images]
        stems = _stems([n for n, _ in loaded])
        with one_line_warnings():
            expls = explain(m, [a for _, a in loaded], methods=names, target=tgt, layer=layer, names=stems,
                            options=opts, batch_size=batch_size,
                            progress=show_progress() if progress is None else progress)
        for meth, reason in expls[0].skipped.items():
            click.echo(f"note: skipped {meth}: {reason}", err=True)
        for stem, expl in zip(stems, expls):
            panel = save_panel(expl, folder.path(f"{stem}_panel.png"), alpha=alpha)
            maps = {}
            for meth, res in expl.results.items():
                arr = res.values[0].detach().float().cpu().numpy()
                maps[meth] = folder.write(f"{stem}_{meth}.npy", partial(np.save, arr=arr)).name
            folder.write_json(f"{stem}.json", {"model": m.describe(), **expl.to_dict(), "panel": panel.name,
                                               "maps": maps})
            idx, label, prob = expl.predicted
            click.echo(f"{stem}: {label} {prob:.1%}; explained {expl.target} -> {panel}")
    ran = len(names) - len(expls[0].skipped)
    click.echo(f"{len(expls)} image(s), {ran} method(s): panels, .npy maps and .json in {folder.folder}/")


@cli.command("explain-methods")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (names, options and their defaults).")
def explain_methods_cmd(as_json: bool) -> None:
    """List the attribution methods of `cnnscope explain` with their kind and paper."""
    from ..attribution import get_method, list_methods
    from .app import print_table

    rows = [get_method(n) for n in list_methods()]
    if as_json:
        click.echo(json.dumps([{"name": c.name, "title": c.title, "kind": c.kind, "reference": c.reference,
                                "options": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                                            for k, v in c.defaults().items()}} for c in rows], indent=2))
        return
    print_table([(c.name, c.kind, c.reference) for c in rows], ("method", "kind", "reference"))


@demo_section(40, "Attribution: which pixels made the model say that")
def _attribution_demo(ctx: DemoContext) -> None:
    from ..attribution import explain
    from ..plot.attribution import panels_figure
    from ..plot.common import save_figure

    if ctx.quick:
        names, methods = ["chelsea", "coffee"], ["gradcam", "guided_backprop", "saliency"]
        options: dict[str, dict] = {}
    else:
        names = [n for n in ("chelsea", "coffee", "astronaut", "rocket") if n in ctx.images]
        methods = ["gradcam", "gradcam_pp", "guided_gradcam", "integrated_gradients", "occlusion"]
        options = {"integrated_gradients": {"n_steps": 32}}
    names = [n for n in names if n in ctx.images]
    expls = explain(ctx.model, [ctx.images[n] for n in names], methods=methods, names=names, options=options)
    numbers = {}
    for e in expls:
        cam = e.results["gradcam"].values[0, 0]
        h, w = cam.shape
        peak = int(cam.flatten().argmax())
        py, px = (peak // w + 0.5) / h, (peak % w + 0.5) / w
        _, label, prob = e.predicted
        click.echo(f"  {e.name:<10} {label} {prob:.1%}; Grad-CAM ({e.results['gradcam'].layer}) peaks at "
                   f"{px:.0%} across, {py:.0%} down")
        numbers[e.name] = {"top1": label, "probability": prob, "gradcam_peak_xy": [px, py],
                           "gradcam_layer": e.results["gradcam"].layer}
    path = save_figure(panels_figure(expls), ctx.out / "attribution_panels.png", dpi=100)
    write_json(ctx.out / "attribution.json", {"methods": methods, "images": numbers})
    click.echo(f"  panels (photo + one overlay per method): {path}")
