"""Foundation commands: ``models``, ``layers``, ``predict``."""

from __future__ import annotations

import json

import click

from .app import cli, model_options, open_model, print_table, read_image_arg


@cli.command("models")
@click.option("--all", "show_all", is_flag=True, help="Also list every timm architecture (long).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(show_all: bool, as_json: bool) -> None:
    """List loadable models and which are pretrained (only embedded ones; nothing is downloaded)."""
    from ..models import list_models

    rows = list_models(include_timm=show_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table([(r["name"], r["source"], "pretrained" if r["pretrained"] else "random init")
                 for r in rows], ("name", "source", "weights"))
    if not show_all:
        from ..models.registry import timm_names

        click.echo(f"... and {len(timm_names())} timm architectures (cnnscope models --all). "
                   "Random-init models take --weights PATH.")


@cli.command("layers")
@click.argument("model", default="efficientnet_lite0")
@model_options
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="Only names with at most this many dots (0 = top level).")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Probe input size (default: the model's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def layers_cmd(model: str, weights: str | None, device: str, depth: int | None, size: int | None,
               as_json: bool) -> None:
    """Table of MODEL's layers: dotted name, kind, output shape, parameters."""
    from ..capture import list_layers

    m = open_model(model, weights, device)
    infos = list_layers(m, size or m.input_size)
    if depth is not None:
        infos = [i for i in infos if i.name.count(".") <= depth]
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    rows = [(i.name, i.kind, "x".join(map(str, i.output_shape)) if i.output_shape else "-", f"{i.params:,}",
             "" if i.calls <= 1 else f"runs {i.calls}x") for i in infos]
    print_table(rows, ("name", "kind", "output", "params", ""))


@cli.command("predict")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("-k", "--top", "k", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, k: int,
                as_json: bool) -> None:
    """Top-k classes with probabilities for each IMAGE (path or sample:NAME).

    MODEL is a name from `cnnscope models` or a model file (TorchScript; a pickled model with --trust-pickle).
    """
    m = open_model(model, weights, device)
    results = []
    for arg in images:
        name, arr = read_image_arg(arg)
        top = m.predict(arr, k=k)[0]
        if len(top) < k and not results:
            click.echo(f"note: {m.name} has {len(top)} classes; showing all of them", err=True)
        results.append({"image": arg, "top": [{"index": i, "label": lab, "probability": p}
                                              for i, lab, p in top]})
        if not as_json:
            click.echo(f"{name}:")
            for i, lab, p in top:
                click.echo(f"  {p:7.2%}  {lab} ({i})")
    if as_json:
        click.echo(json.dumps({"model": m.describe(), "results": results}, indent=2))
