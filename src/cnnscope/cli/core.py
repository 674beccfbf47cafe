"""Foundation commands: ``models``, ``layers``, ``predict``."""

from __future__ import annotations

import json

import click

from .app import cli, model_options, open_model, print_table, read_image_arg


@cli.command("models")
@click.option("--all", "show_all", is_flag=True, help="Also list every timm architecture (long).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(show_all: bool, as_json: bool) -> None:
    """List loadable models and their weights here: embedded, cached (with the file), or downloaded on first use.

    Presets come first; a torchvision or timm architecture loads pretrained weights with --weights DEFAULT (or
    another weights name), from the torch hub cache ($TORCH_HOME) or the Hugging Face cache ($HF_HOME).
    """
    from ..models import list_models

    rows = list_models(include_timm=show_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table([(r["name"], r["source"], ("pretrained - " if r["pretrained"] else "") + r["weights"]) for r in rows],
                ("name", "source", "weights (pretrained: usable here, no download)"))
    if not show_all:
        from ..models.registry import timm_names

        click.echo(f"... and {len(timm_names())} timm architectures (cnnscope models --all). torchvision and timm "
                   "architectures are random init without --weights FILE or --weights DEFAULT.")


def _layouts(values: tuple[str, ...]) -> dict[str, str]:
    """``--layout LAYER=LAYOUT`` options as ``{layer: layout}``."""
    from ..errors import LayerError

    out = {}
    for text in values:
        layer, sep, layout = text.partition("=")
        if not sep or not layer or not layout:
            raise LayerError(f"--layout takes LAYER=LAYOUT (e.g. blocks.4=nhwc), got {text!r}")
        out[layer] = layout
    return out


@cli.command("layers")
@click.argument("model", default="efficientnet_lite0")
@model_options
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="Only names with at most this many dots (0 = top level).")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Probe input size (default: the model's).")
@click.option("--layout", "layouts", multiple=True, metavar="LAYER=LAYOUT",
              help="Read LAYER's output as nchw, nhwc, tokens or tokens+cls (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def layers_cmd(model: str, weights: str | None, device: str, depth: int | None, size: int | None,
               layouts: tuple[str, ...], as_json: bool) -> None:
    """Table of MODEL's layers: dotted name, alias, kind, output shape, layout, parameters.

    Aliases (the Lucid names of inceptionv1: mixed3b, ...) are accepted wherever a layer name is; layers a preset
    recommends studying are marked with *.
    """
    from ..capture import canonical_layer, check_hookable, list_layers

    m = open_model(model, weights, device)
    check_hookable(m, m.name)
    given = {canonical_layer(m.module, k): v for k, v in _layouts(layouts).items()}
    infos = list_layers(m, size if size is not None else m.input_size, layout=given or None)
    if depth is not None:
        infos = [i for i in infos if i.name.count(".") <= depth]
    alias_of = {v: k for k, v in m.aliases.items()}
    study = set(m.study_layers)
    if as_json:
        click.echo(json.dumps([{**i.to_dict(), "alias": alias_of.get(i.name), "study": i.name in study}
                               for i in infos], indent=2))
        return
    rows = [(i.name + (" *" if i.name in study else ""), alias_of.get(i.name, ""), i.kind,
             "x".join(map(str, i.output_shape)) if i.output_shape else "-", i.layout or "-", f"{i.params:,}",
             "" if i.calls <= 1 else f"runs {i.calls}x") for i in infos]
    print_table(rows, ("name", "alias", "kind", "output", "layout", "params", ""))


@cli.command("predict")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("-k", "--top", "k", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--ensemble", default=None, metavar="MODEL2,MODEL3,...",
              help="Average the softmax of MODEL and these models (names or checkpoint files; same classes).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, k: int, ensemble: str | None,
                as_json: bool) -> None:
    """Top-k classes with probabilities for each IMAGE (path or sample:NAME).

    MODEL is a name from `cnnscope models` or a model file (a `cnnscope train` checkpoint, TorchScript; a pickled
    model with --trust-pickle). The JSON says where the weights came from and whether they are pretrained. With
    --ensemble the probabilities are the mean of the members' softmax (each member reads the image with its own
    preprocessing).
    """
    m = open_model(model, weights, device)
    others = [open_model(n.strip(), None, device) for n in (ensemble or "").split(",") if n.strip()]
    results = []
    for arg in images:
        name, arr = read_image_arg(arg)
        if others:
            from ..zf.ensemble import ensemble_probabilities, top_classes

            top = top_classes(m, ensemble_probabilities([m, *others], arr), k)[0]
        else:
            top = m.predict(arr, k=k)[0]
        if len(top) < k and not results:
            click.echo(f"note: {m.name} has {len(top)} classes; showing all of them", err=True)
        results.append({"image": arg, "top": [{"index": i, "label": lab, "probability": p}
                                              for i, lab, p in top]})
        if not as_json:
            click.echo(f"{name}:" if not others else f"{name} (ensemble of {1 + len(others)}):")
            for i, lab, p in top:
                click.echo(f"  {p:7.2%}  {lab} ({i})")
    if as_json:
        doc = {"model": m.describe(), "results": results}
        if others:
            doc["ensemble"] = [m.describe()] + [o.describe() for o in others]
        click.echo(json.dumps(doc, indent=2))
