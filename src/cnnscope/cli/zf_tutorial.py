"""The small-CNN tutorial's commands: ``boundary`` (decision plane), ``paramgrads`` (gradients with respect to the
parameters) and ``featurespace`` (penultimate features in 2-D with the classifier's regions)."""

from __future__ import annotations

import math

import click

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import batch_size_option, open_model, show_progress
from .zf import IMAGES, model_command, numbers, out_option, read_images, save, save_npy


@model_command("boundary", IMAGES)
@click.option("--resolution", type=click.IntRange(2), default=41, show_default=True, help="Points per axis.")
@click.option("--span", default=None, help="LO,HI of both coordinates (default -0.5,1.5 or -1,1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the random directions.")
@batch_size_option
@out_option("zf-boundary")
def boundary_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, resolution: int,
                 span: str | None, seed: int, batch_size: int | None, out: str) -> None:
    """Predicted class over the plane through three IMAGES (or one image and two random directions).

    Writes boundary.png (every class on the plane named in the legend, each in its own colour; the images marked
    with their own classes) and boundary.json (the grid, and the legend as drawn: class, label, colour).
    """
    from ..plot.boundary import boundary_figure, class_legend
    from ..zf.boundary import decision_plane

    lohi = numbers(span)
    if lohi is not None and len(lohi) != 2:
        raise CnnscopeError(f"--span is LO,HI, got {span!r}")
    with run_output(out, "boundary") as folder:
        m = open_model(model, weights, device)
        p = decision_plane(m, read_images(images), resolution=resolution, span=tuple(lohi) if lohi else None,
                           seed=seed, batch_size=batch_size, progress=show_progress())
        legend = class_legend(p.classes, p.labels, required=p.mark_classes)
        folder.write_json("boundary.json", {**p.to_dict(), "legend": legend})
        save(boundary_figure(p, legend=legend), folder.path("boundary.png"))
    for (name, _, _), c in zip(p.marks, p.mark_classes):
        click.echo(f"{name}: {p.labels[c]} ({c})")
    click.echo(f"{len(legend)} classes in the legend (largest area first): "
               + ", ".join(e["label"] for e in legend))


@model_command("paramgrads", IMAGES)
@click.option("--target", default="top", show_default=True,
              help="top (each image's top-1 class), a class INDEX, a class LABEL, or unit:LAYER:CHANNEL.")
@click.option("--score", type=click.Choice(["logit", "prob", "loss"]), default="logit", show_default=True,
              help="What is differentiated: the target's logit, its probability, or the cross-entropy loss of the "
                   "target class (one training step's gradient).")
@click.option("--top", type=click.IntRange(1), default=8, show_default=True,
              help="Layers printed (largest gradient relative to the weights first).")
@batch_size_option
@out_option("zf-paramgrads")
def paramgrads_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, target: str | None,
                   score: str, top: int, batch_size: int | None, out: str) -> None:
    """Gradients with respect to the parameters of MODEL for IMAGES (the mean over them).

    Writes paramgrads.json (per parameter and per layer: gradient norm, weight norm, their ratio; per-filter norms
    of every convolution), paramgrads.png (norms per layer, per-filter heatmaps, the first convolution's gradient
    as pictures) and first_layer_grad.npy. IMAGES: paths, folders, sample:NAME, 'samples' or 'digits[:N]'.
    """
    from ..plot.tutorial import param_grads_figure
    from ..zf.param_grads import parameter_gradients
    from .attribution import parse_cli_target

    tgt = parse_cli_target(target)
    with run_output(out, "paramgrads") as folder:
        m = open_model(model, weights, device)
        imgs = read_images(images)
        g = parameter_gradients(m, imgs, target=tgt, score=score, batch_size=batch_size, progress=show_progress())
        folder.write_json("paramgrads.json", {"model": m.describe(), "images": list(imgs), **g.to_dict()})
        if g.first_grad is not None:
            save_npy(folder, "first_layer_grad.npy", g.first_grad.numpy())
        save(param_grads_figure(g), folder.path("paramgrads.png"))
    click.echo(f"{score} of {g.target[0]}" + (f" and {len(g.target) - 1} more" if len(g.target) > 1 else "")
               + f": {g.value:.4g}")
    rows = sorted(g.layer_table(), key=lambda r: -r["relative"] if not math.isnan(r["relative"]) else math.inf)
    for r in rows[:top]:
        click.echo(f"{r['layer'] or '(root)'}: |g| {r['grad_norm']:.3g}, |w| {r['weight_norm']:.3g}, "
                   f"|g|/|w| {r['relative']:.3g}")
    if g.unused:
        click.echo(f"note: {len(g.unused)} parameter(s) do not affect the score: {', '.join(g.unused[:5])}", err=True)


@model_command("featurespace", IMAGES)
@click.option("--layer", default=None, help="Penultimate layer (default: the one feeding the final linear layer).")
@click.option("--head", default=None, help="Final linear layer (default: the last nn.Linear that runs).")
@click.option("--resolution", type=click.IntRange(2), default=101, show_default=True, help="Points per axis.")
@batch_size_option
@out_option("zf-featurespace")
def featurespace_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, layer: str | None,
                     head: str | None, resolution: int, batch_size: int | None, out: str) -> None:
    """Penultimate features of IMAGES (three or more) in 2-D (PCA) with the classifier's regions on that plane.

    Grid points of the plane are mapped back to feature space through the PCA and classified by the final linear
    layer. Writes featurespace.png, featurespace.json (points, predictions, regions, the share of images inside
    their own class's region, and the legend as drawn: class, label, colour) and features.npy. IMAGES: paths,
    folders, sample:NAME, 'samples' or 'digits[:N]'.
    """
    from ..plot.boundary import class_legend
    from ..plot.tutorial import feature_space_figure
    from ..zf.feature_space import feature_space

    with run_output(out, "featurespace") as folder:
        m = open_model(model, weights, device)
        fs = feature_space(m, read_images(images), layer=layer, head=head, resolution=resolution,
                           batch_size=batch_size, progress=show_progress())
        legend = class_legend(fs.classes, fs.labels, required=fs.predictions.tolist())
        folder.write_json("featurespace.json", {"model": m.describe(), **fs.to_dict(), "legend": legend})
        save_npy(folder, "features.npy", fs.features.numpy())
        save(feature_space_figure(fs, legend=legend), folder.path("featurespace.png"))
    click.echo(f"{len(fs.names)} images: {fs.layer} -> {fs.head}; PCA keeps {float(fs.explained.sum()):.0%} of the "
               f"variance; {fs.agreement:.0%} of the images lie in their own predicted class's region")
    click.echo(f"{len(legend)} classes on the plane: " + ", ".join(e["label"] for e in legend))
