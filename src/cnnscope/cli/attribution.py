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


def read_explain_images(args: tuple[str, ...]) -> tuple[list[str], list[np.ndarray], list]:
    """IMAGE arguments -> ``(names, arrays, skipped)``: files and ``sample:NAME`` as :func:`read_image_arg` reads
    them; anything else (a folder, a glob, ``samples``, a manifest, shards: see
    :func:`cnnscope.dataset.sources.open_source`) image by image.

    Unreadable images are skipped and reported (``skipped``: :class:`~cnnscope.dataset.sources.SkippedImage`, also
    printed on stderr, one line each); a path that does not exist, or no readable image at all, is an error. After
    :func:`open_model`, a picture larger than the model needs is reduced as it is read.
    """
    from ..dataset.sources import SkippedImage, load_or_skip, open_source, skipped_lines, unreadable_reason
    from ..errors import ImageError
    from ..images import load_image

    ctx = click.get_current_context(silent=True)
    model = ctx.meta.get("cnnscope.model") if ctx is not None else None
    names: list[str] = []
    arrays: list[np.ndarray] = []
    skipped: list[SkippedImage] = []
    for arg in args:
        if Path(arg).is_file() or (arg.startswith("sample:") and "," not in arg):
            try:
                name, arr = read_image_arg(arg)
            except ImageError as exc:
                if not Path(arg).is_file():
                    raise
                skipped.append(SkippedImage(arg, unreadable_reason(exc)))
                continue
            names.append(name)
            arrays.append(arr)
            continue
        src = open_source(arg)
        skipped += src.problems()
        for i in src.ids():
            got = load_or_skip(src, i)
            if isinstance(got, SkippedImage):
                skipped.append(got)
                continue
            names.append(src.name(i))
            arrays.append(got if model is None else load_image(got, at_least=model.fit_needs()))
    for line in skipped_lines(skipped):
        click.echo(line, err=True)
    if not arrays:
        raise ImageError("no readable image in " + " ".join(args)
                         + (f"; first problem: {skipped[0].path}: {skipped[0].reason}" if skipped else ""))
    return names, arrays, skipped


def index_html(title: str, rows: list[dict], skipped: list[dict]) -> str:
    """The run's ``index.html``: one row per image (its panel, name, top class and probability, target), then the
    images skipped as unreadable with the reason."""
    from html import escape
    from urllib.parse import quote

    body = [f"<h1>{escape(title)}</h1>", "<table>",
            "<tr><th>image</th><th>top class</th><th>probability</th><th>explained</th><th>panel</th></tr>"]
    for r in rows:
        body.append(f"<tr><td>{escape(r['image'])}</td><td>{escape(r['label'])} ({r['index']})</td>"
                    f"<td>{r['probability']:.1%}</td><td>{escape(r['target'])}</td>"
                    f"<td><a href=\"{quote(r['panel'])}\"><img src=\"{quote(r['panel'])}\" height=\"160\" "
                    f"alt=\"{escape(r['image'])}\"></a></td></tr>")
    body.append("</table>")
    if skipped:
        body.append(f"<h2>skipped as unreadable ({len(skipped)})</h2><ul>")
        body += [f"<li>{escape(s['path'])}: {escape(s['reason'])}</li>" for s in skipped]
        body.append("</ul>")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title) + "</title><style>"
            "body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left;vertical-align:middle}</style>"
            "</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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
    """Explain MODEL's answer on each of IMAGES (paths, folders, globs, sample:NAME or samples) with several
    attribution methods.

    Writes per image: NAME_panel.png (original + one overlay per method), NAME_METHOD.npy (raw maps) and
    NAME.json (prediction, target, per-method layer/options/statistics); for the run: index.html (every panel with
    its image's top class; the unreadable images with the reason), index.json (the same as data: "images" and
    "skipped") and manifest.json when done. Unreadable images are skipped and listed on stderr. A method that
    cannot apply to MODEL (guided backprop without ReLUs, ...) is skipped with a note on stderr and listed under
    "skipped" in NAME.json.
    """
    from ..attribution import explain, get_method
    from ..dataset.sources import skipped_dicts
    from ..outputs import run_output
    from ..plot.attribution import save_panel

    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:
        get_method(name)
    opts = parse_options(option, names)
    tgt = parse_cli_target(target, position)
    with run_output(out, "explain") as folder:
        m = open_model(model, weights, device)
        image_names, arrays, skipped = read_explain_images(images)
        stems = _stems(image_names)
        with one_line_warnings():
            expls = explain(m, arrays, methods=names, target=tgt, layer=layer, names=stems, options=opts,
                            batch_size=batch_size, progress=show_progress() if progress is None else progress)
        for meth, reason in expls[0].skipped.items():
            click.echo(f"note: skipped {meth}: {reason}", err=True)
        rows = []
        for stem, source, expl in zip(stems, image_names, expls):
            panel = save_panel(expl, folder.path(f"{stem}_panel.png"), alpha=alpha)
            maps = {}
            for meth, res in expl.results.items():
                arr = res.values[0].detach().float().cpu().numpy()
                maps[meth] = folder.write(f"{stem}_{meth}.npy", partial(np.save, arr=arr)).name
            folder.write_json(f"{stem}.json", {"model": m.describe(), **expl.to_dict(), "source": source,
                                               "panel": panel.name, "maps": maps})
            idx, label, prob = expl.predicted
            rows.append({"image": stem, "source": source, "index": idx, "label": label, "probability": prob,
                         "target": expl.target, "panel": panel.name, "json": f"{stem}.json"})
            click.echo(f"{stem}: {label} {prob:.1%}; explained {expl.target} -> {panel}")
        skipped_list = skipped_dicts(skipped)
        folder.write_json("index.json", {"model": m.describe(), "methods": names, "images": rows,
                                         "skipped": skipped_list})
        folder.write("index.html", lambda p: p.write_text(index_html(f"cnnscope explain: {m.name}", rows,
                                                                     skipped_list)))
    ran = len(names) - len(expls[0].skipped)
    click.echo(f"{len(expls)} image(s), {ran} method(s)" + (f", {len(skipped)} skipped as unreadable" if skipped
                                                            else "")
               + f": panels, .npy maps and .json in {folder.folder}/, index in {folder.folder / 'index.html'}")


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
