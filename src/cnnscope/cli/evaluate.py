"""``cnnscope evaluate``: score explanation methods by faithfulness metrics and sanity checks; demo section 70."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import CnnscopeError, ImageError
from ..outputs import run_output
from .app import batch_size_option, cli, model_options, open_model, show_progress
from .demo import DemoContext, demo_section

DEFAULT_METHODS = "gradcam,saliency,random"
DEFAULT_METRICS = "deletion,insertion,road"


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _read_images(args: tuple[str, ...]):
    """Paths, folders (their images), globs, ``sample:NAME`` or ``samples`` -> an ``ImageSet`` named by file name;
    unreadable images are skipped, listed in the set and on stderr (a missing path is an error)."""
    from ..dataset.sources import ImageSet, read_images, skipped_lines

    out = ImageSet([], [], [])
    for arg in args:
        out.extend(read_images(arg, allow_empty=True))
    for line in skipped_lines(out.skipped):
        click.echo(line, err=True)
    if not out.images:
        raise ImageError("no readable image in " + " ".join(args)
                         + (f"; first problem: {out.skipped[0].path}: {out.skipped[0].reason}" if out.skipped else ""))
    short = [Path(n).name for n in out.names]
    if len(set(short)) == len(short):  # file names where they tell the images apart, else the paths
        out.names = short
    return out


@cli.command("evaluate")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated attribution methods (cnnscope.attribution) and baselines random, random_pixel, "
                   "center.")
@click.option("--metrics", default=DEFAULT_METRICS, show_default=True,
              help="Comma-separated: deletion, insertion, road, sanity, pointing (needs --regions).")
@click.option("--out", metavar="FOLDER", default="evaluate-out", show_default=True)
@click.option("--layer", default=None, help="Layer for CAM methods (default: chosen automatically).")
@click.option("--target", default=None, help="Class index or label scored for every image (default: top-1).")
@click.option("--step", type=click.IntRange(1), default=224, show_default=True,
              help="Pixels per deletion/insertion step (224 = RISE protocol).")
@click.option("--deletion-substrate", default="zero", show_default=True)
@click.option("--insertion-substrate", default="blur", show_default=True)
@click.option("--road-percentages", default="10,20,30,40,50,60,70,80,90", show_default=True)
@click.option("--noise", type=float, default=0.01, show_default=True, help="ROAD imputation noise.")
@click.option("--sanity-mode", type=click.Choice(["cascading", "independent"]), default="cascading",
              show_default=True)
@click.option("--regions", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON {image: [x0, y0, x1, y1]} boxes (original pixels) for the pointing game.")
@batch_size_option
@click.option("--seed", type=int, default=0, show_default=True)
def evaluate_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, methods: str,
                 metrics: str, out: str, layer: str | None, target: str | None, step: int,
                 deletion_substrate: str, insertion_substrate: str, road_percentages: str, noise: float,
                 sanity_mode: str, regions: str | None, batch_size: int | None, seed: int) -> None:
    """Score METHODS by METRICS on IMAGES (paths, folders, sample:NAME or 'samples') for MODEL.

    Writes evaluation.md and evaluation.csv (method x metric, mean +- std over images), per_image.csv,
    evaluation.json (with the images skipped as unreadable) and the curve plots into --out, listed in its
    manifest.json.
    """
    from ..errors import MethodError, unknown
    from ..evaluate import METRICS, available_methods, evaluate, load_regions, save_table
    from ..plot.evaluate import save_figures

    known = available_methods()
    for name in _split(methods):  # check names before loading anything
        if name not in known:
            raise MethodError(unknown("method", name, known))
    for name in _split(metrics):
        if name not in METRICS:
            raise MethodError(unknown("metric", name, METRICS))
    try:
        pcts = [float(p) for p in _split(road_percentages)]
    except ValueError:
        raise CnnscopeError(f"--road-percentages takes numbers like 10,20,30, got {road_percentages!r}") from None
    with run_output(out, "evaluate") as output:  # an unwritable --out fails before the model loads
        m = open_model(model, weights, device)  # a bad device or model fails before the images are read
        imgs = _read_images(images)  # at full size: --regions boxes are in the files' pixels
        tgt = int(target) if target is not None and target.lstrip("-").isdigit() else target
        boxes, labels = None, None
        if regions is not None:
            boxes, labels = load_regions(regions, dict(zip(imgs.names, (a.shape[:2] for a in imgs.images))),
                                         m.input_size)
        ev = evaluate(m, imgs, _split(methods), metrics=_split(metrics), layer=layer, target=tgt, step=step,
                      deletion_substrate=deletion_substrate, insertion_substrate=insertion_substrate,
                      road_percentages=pcts, noise=noise, regions=boxes, labels=labels, sanity_mode=sanity_mode,
                      seed=seed, batch_size=batch_size, progress=show_progress())
        notes = f"- model: {m.name} ({m.weights_note}); images: {len(ev.images)}\n" + ev.notes()
        if ev.skipped:
            notes += f"- skipped as unreadable: {len(ev.skipped)} (listed in evaluation.json)\n"
        paths = [output.path(p.name) for p in save_table(ev.table, output.folder, title=f"Evaluation of {m.name}",
                                                          notes=notes)]
        paths.append(output.write_json("evaluation.json", {
            "model": m.describe(), "images": ev.images, "skipped": ev.skipped, "settings": ev.settings,
            "targets": [{"image": n, "index": int(t), "label": m.label(int(t))}
                        for n, t in zip(ev.images, ev.targets)],
            "sanity_steps": ev.sanity.steps if ev.sanity is not None else None}))
        paths += [output.path(p.name) for p in save_figures(ev, output.folder)]
    click.echo(ev.table.to_markdown())
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@demo_section(70, "Can these explanations be trusted? (deletion/insertion, ROAD, sanity checks)")
def _demo(ctx: DemoContext) -> None:
    from ..evaluate import evaluate, save_table
    from ..plot.evaluate import save_figures

    quick = ctx.quick
    names = ["coffee"] if quick else ["chelsea", "coffee"]
    step = 224 * (32 if quick else 4)
    methods = ["gradcam", "random"] if quick else ["gradcam", "saliency", "guided_backprop", "random"]
    ev = evaluate(ctx.model, [ctx.images[n] for n in names], methods,
                  metrics=["deletion", "insertion", "road", "sanity"], image_names=names, step=step,
                  road_percentages=(20, 50, 80) if quick else (10, 30, 50, 70, 90),
                  sanity_units=6 if quick else 8)
    folder = ctx.out / "evaluate"
    save_table(ev.table, folder, title="Evaluation on " + " and ".join(names),
               notes=f"- deletion/insertion step {step} px: coarser than the RISE protocol's 224 px to keep the "
                     "tour short (`cnnscope evaluate` uses 224)")
    save_figures(ev, folder)
    click.echo(ev.table.to_markdown())
    finals = ev.sanity.final("spearman_abs")
    click.echo("after full randomization, Spearman |.| to the trained maps: "
               + ", ".join(f"{k} {v:.2f}" for k, v in finals.items())
               + " (near 0 = the method depends on the weights; guided backprop is known to stay high)")
    click.echo(f"   -> {folder}/")
