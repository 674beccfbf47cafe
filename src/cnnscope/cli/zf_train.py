"""Zeiler & Fergus commands: ``train``, ``evolution``, ``filters``, ``featuremaps``; and demo section 50."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import (
    batch_size_option,
    channels_option,
    cli,
    open_model,
    pre_activation_option,
    print_table,
    read_image_arg,
    resolve_device,
    show_progress,
)
from .demo import DemoContext, demo_section
from .zf import IMAGE, IMAGES_HELP, method_option, model_command, numbers, read_images, save, save_npy


def architecture_options(f):
    """The network options of ``train`` and ``ablate`` (a :class:`~cnnscope.zf.architecture.NetSpec`)."""
    opts = [
        click.option("--preset", type=click.Choice(["small", "zf", "alexnet"]), default="small", show_default=True,
                     help="Starting network: small (5x5 conv1, stride 1), zf (7x7 stride 2 conv1) or alexnet (11x11 "
                          "stride 4 conv1), each on the small stack; the options below change it."),
        click.option("--widths", default=None, help="Conv widths, e.g. 16,32,64 (the depth). [16,32,64]"),
        click.option("--kernels", default=None, help="Kernel side per conv; missing ones are 3 (e.g. 7 sets conv1)."),
        click.option("--strides", default=None, help="Stride per conv; missing ones are 1 (e.g. 2 sets conv1)."),
        click.option("--pool", type=click.Choice(["max", "avg"]), default=None, help="Pooling kind. [max]"),
        click.option("--pool-size", type=click.IntRange(1), default=None, help="Pooling window. [2]"),
        click.option("--pool-stride", type=click.IntRange(1), default=None, help="Pooling stride. [pool size]"),
        click.option("--pool-after", default=None, help="Convs followed by pooling: all, none or e.g. 1,2. [all]"),
        click.option("--fc", default=None, help="Hidden fully connected widths, e.g. 128,64. [none]"),
        click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Dropout before the fully connected layers. [0]"),
        click.option("--head-pool", type=click.IntRange(1), default=None,
                     help="Side of the average pool before the classifier. [4]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


ARCH_KEYS = ("preset", "widths", "kernels", "strides", "pool", "pool_size", "pool_stride", "pool_after", "fc",
             "dropout", "head_pool")


def spec_from_options(options: dict, size: int | None = None):
    """The :class:`~cnnscope.zf.architecture.NetSpec` of :func:`architecture_options`' values (popped from
    ``options``)."""
    from dataclasses import replace

    from ..zf.architecture import NetSpec

    values = {k: options.pop(k) for k in ARCH_KEYS}
    spec = {"small": NetSpec, "zf": NetSpec.zf, "alexnet": NetSpec.alexnet}[values.pop("preset")]()
    changes: dict = {k: v for k, v in values.items() if v is not None and k not in ("widths", "kernels", "strides",
                                                                                     "fc", "pool_after")}
    for key in ("widths", "kernels", "strides", "fc"):
        if values[key] is not None:
            changes[key] = tuple(numbers(values[key], int) or ())
    after = values["pool_after"]
    if after is not None:
        changes["pool_after"] = None if after == "all" else () if after in ("none", "") else tuple(
            numbers(after, int) or ())
    if size is not None:
        changes["input_size"] = size
    return replace(spec, **changes)


@cli.command("train")
@click.argument("data", default="digits")
@architecture_options
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--checkpoints", default="1,2,5", show_default=True,
              help="Epochs after which to save a checkpoint (0 = the initial weights).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None,
              help="Also save after every N-th epoch (and the initial weights).")
@click.option("--checkpoint-steps", type=click.IntRange(1), default=None,
              help="Also save step_NNNNNN.pt after every N-th optimiser step (and step 0).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Images per Adam step (fixed, so a seeded run trains the same model on every device).")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Share of the images held out.")
@click.option("--size", type=click.IntRange(8), default=None, help="Image side (default 32 digits, 64 others).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="zf-train", show_default=True,
              help="Folder for the checkpoints, history.json and curves.png.")
def train_cmd(data: str, epochs: int, checkpoints: str, checkpoint_every: int | None, checkpoint_steps: int | None,
              batch_size: int, lr: float, test_fraction: float, size: int | None, seed: int, device: str, out: str,
              **arch) -> None:
    """Train a ZF/AlexNet-style CNN on DATA, saving checkpoints for `cnnscope evolution` (and every command that
    takes a MODEL) and the training curves; reproducible with --seed.

    DATA: 'digits' (scikit-learn's digits), a folder with one sub-folder per class (the ImageFolder layout of
    torchvision datasets), classes:FOLDER, a manifest with labels, labelled shards, hf:PATH, or samples:N (N crops
    of each sample photo, one class per photo).
    """
    from ..plot.zf_experiments import training_curves_figure
    from ..zf.train import train

    spec = spec_from_options(arch)
    wanted = sorted(e for e in (numbers(checkpoints, int) or []) if e <= epochs)

    def report(rec: dict) -> None:
        click.echo(f"epoch {rec['epoch']:>3}: loss {rec['loss']:.4f}  train {rec['train_accuracy']:.2%}  "
                   f"held-out loss {rec['test_loss']:.4f}  test {rec['test_accuracy']:.2%}")

    with run_output(out, "train") as folder:
        click.echo(f"network: {spec.describe()}")
        r = train(data, spec=spec, epochs=epochs, checkpoint_epochs=wanted, checkpoint_every=checkpoint_every,
                  checkpoint_steps=checkpoint_steps, out=folder.folder, batch_size=batch_size, lr=lr,
                  test_fraction=test_fraction, size=size, seed=seed, device=resolve_device(device),
                  progress=show_progress(), on_epoch=report)
        for path in [*r.checkpoints.values(), *r.step_checkpoints.values()]:
            folder.path(Path(path).name)  # written atomically by train(); listed in the manifest
        folder.write_json("history.json", {"history": r.history, "seed": seed, "data": str(data),
                                           "spec": spec.to_dict(), "architecture": spec.describe(),
                                           "checkpoints": {k: str(v) for k, v in r.checkpoints.items()},
                                           "step_checkpoints": {k: str(v) for k, v in r.step_checkpoints.items()}})
        save(training_curves_figure(r.history, f"{r.model.name}: {spec.describe()}"), folder.path("curves.png"))
    files = [*r.checkpoints.values(), *r.step_checkpoints.values()]
    click.echo(f"checkpoints: {', '.join(str(p) for p in files) or 'none'}")


def checkpoint_files(args: tuple[str, ...]) -> list[Path]:
    """Checkpoint arguments: files, or folders (their ``epoch_*.pt`` in order, else their ``step_*.pt``)."""
    files: list[Path] = []
    for a in args:
        p = Path(a)
        if not p.exists():
            raise CnnscopeError(f"checkpoint {p} does not exist")
        if p.is_dir():  # a training run: its epoch checkpoints, or its step checkpoints where it has no others
            files += sorted(p.glob("epoch_*.pt")) or sorted(p.glob("step_*.pt"))
        else:
            files.append(p)
    if not files:
        raise CnnscopeError("no checkpoints found; run `cnnscope train --checkpoints 1,2,5 --out RUN` first")
    return files


@cli.command("evolution")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--layer", default="features.6", show_default=True, help="Layer of the trained net's features.")
@partial(channels_option, default="0-5")
@click.option("--images", "images", multiple=True, default=("digits:400",), show_default=True,
              help="Image set searched for the strongest activations (repeatable). " + IMAGES_HELP)
@pre_activation_option
@method_option()
@batch_size_option
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="zf-evolution", show_default=True)
def evolution_cmd(checkpoints: tuple[str, ...], layer: str, channels: str, images: tuple[str, ...],
                  pre_activation: bool, method: str, batch_size: int | None, device: str, out: str) -> None:
    """Feature evolution (paper Fig. 4): strongest projection of each channel at every checkpoint (files or a
    `cnnscope train` folder)."""
    from ..plot.zf import evolution_figure
    from ..zf.evolution import evolution

    with run_output(out, "evolution") as folder:
        ev = evolution(checkpoint_files(checkpoints), read_images(images), layer, channels=channels,
                       pre_activation=pre_activation, method=method, batch_size=batch_size,
                       device=resolve_device(device), progress=show_progress())
        click.echo(ev.line())
        folder.write_json("evolution.json", ev.to_dict())
        save(evolution_figure(ev), folder.path("evolution.png"))


@model_command("filters")
@click.option("--layer", default=None, help="Conv layer (default: the first one); with --diagnose: comma-separated "
                                            "conv layers (default: the first two).")
@click.option("--max-out", type=click.IntRange(1), default=16, show_default=True, help="Kernels shown (rows).")
@click.option("--max-in", type=click.IntRange(1), default=8, show_default=True, help="Input channels shown.")
@click.option("--diagnose", is_flag=True,
              help="Dead, high-frequency and aliased filters (paper Fig. 6; definitions in docs/zf.md) as a table, "
                   "diagnosis.json and diagnosis.png.")
@click.option("--compare", "compare", multiple=True, metavar="MODEL",
              help="Another model diagnosed beside MODEL, same images (repeatable; implies --diagnose).")
@click.option("--images", "images", multiple=True,
              help="Images for the never-active and aliasing measures (repeatable; default digits:300 for a model "
                   "trained on digits, else 'samples'). " + IMAGES_HELP)
@batch_size_option
@click.option("--out", type=click.Path(file_okay=False), default="zf-filters", show_default=True)
def filters_cmd(model: str, weights: str | None, device: str, layer: str | None, max_out: int, max_in: int,
                diagnose: bool, compare: tuple[str, ...], images: tuple[str, ...], batch_size: int | None,
                out: str) -> None:
    """Filters of MODEL: first-layer filters as pictures, kernels as heatmaps, and their frequency content; with
    --diagnose (and --compare MODEL_B ...) the filter diagnosis of each model side by side."""
    if diagnose or compare:
        _diagnose(model, weights, device, layer, compare, images, batch_size, out)
        return
    from ..plot.zf import filters_figure, kernels_figure, spectrum_figure
    from ..zf.filters import conv_layers, conv_weights, filter_images, filter_spectrum

    with run_output(out, "filters") as folder:
        m = open_model(model, weights, device)
        w = conv_weights(m, layer)
        name = layer or conv_layers(m)[0]
        save_npy(folder, "filters.npy", w.cpu().numpy())
        if w.shape[1] in (1, 3):
            save(filters_figure(filter_images(w), f"{name} filters"), folder.path("filters.png"))
        save(kernels_figure(w, name, max_out, max_in), folder.path("kernels.png"))
        spec = filter_spectrum(w)
        folder.write_json("spectrum.json", {"layer": name, **spec.to_dict()})
        save(spectrum_figure(spec), folder.path("spectrum.png"))
    low, mid, high = spec.bands.mean(0).tolist()
    click.echo(f"{name}: {tuple(w.shape)}; energy low {low:.1%}, mid {mid:.1%}, high {high:.1%}; "
               f"{len(spec.dead)} dead filters")


def _diagnose(model: str, weights: str | None, device: str, layer: str | None, compare: tuple[str, ...],
              images: tuple[str, ...], batch_size: int | None, out: str) -> None:
    """``filters --diagnose``: the diagnosis of MODEL and every --compare model on one image set."""
    from ..plot.zf_experiments import diagnosis_figure
    from ..zf.diagnose import compare_rows, diagnose, table_lines

    names = [model, *compare]
    if len(set(names)) != len(names):
        raise CnnscopeError(f"--compare repeats a model ({', '.join(names)}); give each model once")
    with run_output(out, "filters") as folder:
        models = [open_model(model, weights, device)] + [open_model(c, None, device) for c in compare]
        spec = images or (("digits:300",) if models[0].name.endswith("-digits") else ("samples",))
        pictures = list(read_images(spec).values())
        layers = [v.strip() for v in layer.split(",") if v.strip()] if layer else None
        diags = {n: diagnose(m, pictures, layers=layers, batch_size=batch_size, progress=show_progress())
                 for n, m in zip(names, models)}
        rows = compare_rows(diags)
        folder.write_json("diagnosis.json", {"images": list(spec), "rows": rows,
                                             "models": {n: d.to_dict() for n, d in diags.items()}})
        save(diagnosis_figure(diags), folder.path("diagnosis.png"))
    lines, header = table_lines(rows)
    print_table(lines, header)
    for n, d in diags.items():
        for ld in d.layers:
            for note in ld.notes:
                click.echo(f"note: {n} {ld.layer}: {note}", err=True)


@model_command("featuremaps", IMAGE)
@click.option("--layer", required=True, help="Layer whose maps to show.")
@pre_activation_option
@click.option("--max-maps", type=click.IntRange(1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="zf-featuremaps", show_default=True)
def featuremaps_cmd(model: str, image: str, weights: str | None, device: str, layer: str, pre_activation: bool,
                    max_maps: int, out: str) -> None:
    """One IMAGE's feature maps at a layer of MODEL, as a grid."""
    from ..plot.zf import feature_maps_figure
    from ..zf.filters import feature_maps

    with run_output(out, "featuremaps") as folder:
        m = open_model(model, weights, device)
        _, arr = read_image_arg(image)
        maps = feature_maps(m, arr, layer, pre_activation=pre_activation)[0]
        save_npy(folder, "featuremaps.npy", maps.cpu().numpy())
        save(feature_maps_figure(maps, layer, max_maps), folder.path("featuremaps.png"))


@demo_section(50, "Zeiler & Fergus: occlusion, invariance, filters, training evolution")
def _demo(ctx: DemoContext) -> None:
    from ..plot import save_figure
    from ..plot import zf as plots
    from ..zf import (
        conv_weights,
        evolution,
        filter_images,
        filter_spectrum,
        invariance_study,
        occlusion_study,
        top_projections,
        train,
    )
    from ..zf.train import digits_dataset

    out = ctx.out / "zf"
    m, imgs = ctx.model, ctx.images
    s = occlusion_study(m, imgs["chelsea"], "blocks.5", size=64 if ctx.quick else 48,
                        stride=32 if ctx.quick else 16)
    save_figure(plots.occlusion_figure(s), out / "occlusion.png")
    click.echo(f"occlusion: p({s.label}) {s.base_probability:.2f} -> min {float(s.probability.min()):.2f}")
    sweep = {"translate": [0, 15, 30]} if ctx.quick else {"translate": None, "scale": None, "rotate": None}
    few = {k: imgs[k] for k in ("chelsea", "coffee", "astronaut")}
    studies = [invariance_study(m, few, t, amounts=a) for t, a in sweep.items()]
    save_figure(plots.invariance_figure(studies), out / "invariance.png")
    w = conv_weights(m)
    spec = filter_spectrum(w)
    save_figure(plots.filters_figure(filter_images(w)), out / "filters.png")
    save_figure(plots.spectrum_figure(spec), out / "spectrum.png")
    click.echo("first-layer energy low/mid/high: " + "/".join(f"{v:.0%}" for v in spec.bands.mean(0).tolist()))
    run = train("digits", epochs=1 if ctx.quick else 4, checkpoint_epochs=[0, 1] if ctx.quick else [0, 1, 2, 4],
                out=out / "run", widths=(8, 16, 32) if ctx.quick else (16, 32, 64))
    click.echo(f"digits CNN: test accuracy {run.history[-1]['test_accuracy']:.1%}")
    ds = digits_dataset()
    test = {f"digit{i}": ds.images[i] for i in run.test_indices[:200]}
    tp = top_projections(run.model, test, "features.3", channels=[0, 1, 2, 3], k=9)
    save_figure(plots.top9_figure(tp), out / "top9.png")
    ev = evolution(list(run.checkpoints.values()), test, "features.3", channels=[0, 1, 2, 3])
    save_figure(plots.evolution_figure(ev), out / "evolution.png")
    click.echo(f"figures in {out}/")

