"""Zeiler & Fergus commands: ``deconv``, ``top9``, ``occlude``, ``invariance``, ``correspond``.

(``boundary`` lives in :mod:`.zf_tutorial`; ``train``, ``evolution``, ``filters``, ``featuremaps`` and the demo
section in :mod:`.zf_train`.)
Every command writes PNG figures and the numbers behind them (JSON, NPY) into ``--out``, which is checked before
any work (:func:`cnnscope.outputs.run_output`: atomic files and a ``manifest.json`` once the run is complete).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click
import numpy as np

from ..errors import CnnscopeError
from ..outputs import RunOutput, run_output
from .app import (
    POSITION,
    batch_size_option,
    channels_option,
    cli,
    model_options,
    open_model,
    pre_activation_option,
    read_image_arg,
    show_progress,
)

IMAGES_HELP = ("IMAGES: paths, folders (every image inside), sample:NAME, 'samples' (all skimage photos) or "
               "'digits' / 'digits:N' (scikit-learn digits).")


HELP_TOP9 = ("Strongest activations of each channel over IMAGES, projected to pixels beside the image patches "
             "(paper Fig. 2). " + IMAGES_HELP)
HELP_INVARIANCE = ("Invariance study (paper Fig. 5): feature distance and p(true class) under translation, scale "
                   "and rotation. " + IMAGES_HELP)
HELP_CORRESPOND = ("Correspondence analysis (paper Table 1): sign-change consistency of masking the same part in "
                   "IMAGES. " + IMAGES_HELP)


def read_images(args: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """Image-set arguments -> ``name -> uint8 array`` (see :data:`IMAGES_HELP`); repeated names get ``#2``..."""
    from ..images import IMAGE_SUFFIXES, sample_images

    out: dict[str, np.ndarray] = {}

    def add(name: str, arr: np.ndarray) -> None:
        key, k = name, 1
        while key in out:
            k += 1
            key = f"{name}#{k}"
        out[key] = arr

    for arg in args:
        if arg == "samples":
            for name, arr in sample_images().items():
                add(name, arr)
        elif arg == "digits" or arg.startswith("digits:"):
            from ..zf.train import digits_dataset

            ds = digits_dataset()
            n = int(arg.split(":", 1)[1]) if ":" in arg else len(ds)
            for i in range(min(n, len(ds))):
                add(f"digit{i}_{ds.labels[i]}", ds.images[i])
        elif Path(arg).is_dir():
            for p in sorted(p for p in Path(arg).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                add(str(p), read_image_arg(str(p))[1])
        else:
            add(*read_image_arg(arg))
    if not out:
        raise CnnscopeError("no images found in " + " ".join(args))
    return out


def numbers(text: str | None, cast=float) -> list | None:
    """``"0,10,20"`` -> ``[0.0, 10.0, 20.0]`` (``cast`` each item; ``None`` stays ``None``)."""
    if text is None:
        return None
    try:
        return [cast(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise CnnscopeError(f"expected comma-separated numbers like 0,10,20, got {text!r}") from None


def save_npy(folder: RunOutput, name: str, array: np.ndarray) -> Path:
    """``array`` written atomically as ``name`` in the run's folder (listed in its manifest)."""
    return folder.write(name, partial(np.save, arr=array))


def save(fig, path: Path) -> None:
    from ..plot import save_figure

    save_figure(fig, path)
    click.echo(f"wrote {path}")


IMAGE = click.argument("image")
IMAGES = click.argument("images", nargs=-1, required=True)


def model_command(name: str, *arguments, help: str | None = None):
    """Decorator: the command ``cnnscope NAME MODEL ARGUMENTS...`` with the model options (weights, device)."""

    def deco(f):
        f = model_options(f)
        for argument in reversed(arguments):
            f = argument(f)
        return cli.command(name, help=help)(click.argument("model")(f))

    return deco


#: the projection methods of ``--method`` (``cnnscope.zf.rule_projector.PROJECTION_METHODS``, spelled out here so
#: that the command line starts without importing torch)
PROJECTION_METHODS = ("auto", "deconvnet", "rule", "guided", "gradient")


def method_option(default: str = "auto", extra: tuple[str, ...] = (), more: str = ""):
    """``--method`` of the projection commands: ``auto``, ``deconvnet``, ``rule``, ``guided`` or ``gradient``
    (docs/zf.md; :mod:`cnnscope.zf.projection_choice`)."""
    return click.option("--method", type=click.Choice([*PROJECTION_METHODS, *extra]), default=default,
                        show_default=True,
                        help="auto: the true deconvnet where the path is a chain it inverts with max-pooling, else "
                             "guided backprop (the command prints which and why); deconvnet: the true deconvnet "
                             "(switches + transposed filters; chains only); rule: gradient with the deconvnet rule "
                             "for ReLUs; guided: guided backprop of the unit (rule and guided: any model with "
                             "ReLUs); gradient: the plain gradient of the unit (any model)" + more + ".")


def _named(method: str) -> str:
    """A :class:`~cnnscope.zf.deconvnet.Projection`'s method as ``--method`` spells it."""
    return "rule" if method == "backward-rule" else method


def out_option(default: str):
    return click.option("--out", type=click.Path(file_okay=False), default=default, show_default=True,
                        help="Folder for the figures and numbers.")


@model_command("deconv", IMAGE)
@click.option("--layer", required=True, help="Layer of the feature stack (see `cnnscope layers MODEL`).")
@click.option("--channel", type=click.IntRange(0), required=True, help="Feature map to project.")
@click.option("--position", type=POSITION, default="max", show_default=True,
              help="max (the strongest activation), center, ROW,COL, or all (the whole map).")
@pre_activation_option
@method_option(extra=("true",), more="; true: the same as deconvnet")
@out_option("zf-deconv")
def deconv_cmd(model: str, image: str, weights: str | None, device: str, layer: str, channel: int,
               position, pre_activation: bool, method: str, out: str) -> None:
    """Project one activation of MODEL on IMAGE back to pixels with the deconvnet (Zeiler & Fergus 2013), or, where
    it cannot apply, guided backprop of the unit (--method auto; the first line says which and why)."""
    from ..plot.zf import projection_figure
    from ..zf.projection_choice import describe, project_unit

    with run_output(out, "deconv") as folder:
        m = open_model(model, weights, device)
        name, arr = read_image_arg(image)
        p = project_unit(m, arr, layer, channel=channel, position=position, pre_activation=pre_activation,
                         method="deconvnet" if method == "true" else method)
        click.echo(describe(_named(p.method), p.reason))
        where = p.positions[0] if p.positions is not None else None
        save_npy(folder, "deconv.npy", p.values[0].cpu().numpy())
        folder.write_json("deconv.json", {"image": name, "layer": layer, "channel": channel, "position": where,
                                          "activation": float(p.activations[0]),
                                          "box": p.boxes[0] if p.boxes else None, "pre_activation": pre_activation,
                                          "method": p.method, "reason": p.reason})
        save(projection_figure(m.fit_image(arr), p), folder.path("deconv.png"))
    click.echo(f"{layer} channel {channel} at {where or 'every position'}: activation "
               f"{float(p.activations[0]):.4g} ({p.method})")


@model_command("top9", IMAGES, help=HELP_TOP9)
@click.option("--layer", required=True, help="Layer of the feature stack.")
@partial(channels_option, default="0-7")
@click.option("-k", "k", type=click.IntRange(1), default=9, show_default=True, help="Activations per channel.")
@pre_activation_option
@method_option()
@batch_size_option
@out_option("zf-top9")
def top9_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, layer: str, channels: str,
             k: int, pre_activation: bool, method: str, batch_size: int | None, out: str) -> None:
    """Strongest activations of each channel over IMAGES, projected to pixels beside the image patches."""
    from ..plot.zf import top9_figure
    from ..zf.deconvnet import DeconvNet
    from ..zf.projections import top_projections

    with run_output(out, "top9") as folder:
        m = open_model(model, weights, device)
        if method == "deconvnet":
            DeconvNet(m, layer, pre_activation=pre_activation)  # refuses a model it cannot invert before any image
        tp = top_projections(m, read_images(images), layer, channels=channels, k=k, pre_activation=pre_activation,
                             method=method, batch_size=batch_size, progress=show_progress())
        click.echo(tp.line())
        folder.write_json("top9.json", tp.to_dict())
        save(top9_figure(tp), folder.path("top9.png"))
    for c in tp.channels:
        best = tp.entries[c][0]
        click.echo(f"channel {c}: best {best.activation:.4g} in {tp.names[best.image_index]} at {best.position}")


@model_command("occlude", IMAGE)
@click.option("--layer", required=True, help="Convolutional layer for panels (b) and (c).")
@click.option("--target", default=None, help="Correct class (index or label; default the top-1 prediction).")
@click.option("--channel", type=click.IntRange(0), default=None, help="Feature map (default: the strongest).")
@click.option("--size", type=click.IntRange(1), default=48, show_default=True, help="Grey square side (pixels).")
@click.option("--stride", type=click.IntRange(1), default=16, show_default=True, help="Square step (pixels).")
@click.option("--fill", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Grey level.")
@pre_activation_option
@method_option(more=" (panel (c))")
@batch_size_option
@out_option("zf-occlusion")
def occlude_cmd(model: str, image: str, layer: str, target: str | None, channel: int | None, size: int, stride: int,
                fill: float, pre_activation: bool, method: str, batch_size: int | None, weights: str | None,
                device: str, out: str) -> None:
    """Occlusion study (paper Fig. 7): slide a grey square over IMAGE and map activity and predictions."""
    from ..plot.zf import occlusion_figure
    from ..zf.occlusion_study import occlusion_study
    from ..zf.projection_choice import describe

    with run_output(out, "occlude") as folder:
        m = open_model(model, weights, device)
        _, arr = read_image_arg(image)
        s = occlusion_study(m, arr, layer, target=target, channel=channel, size=size, stride=stride, fill=fill,
                            pre_activation=pre_activation, method=method, batch_size=batch_size,
                            progress=show_progress())
        click.echo(describe(_named(s.projection.method), s.projection.reason))
        folder.write_json("occlusion.json", s.to_dict())
        save_npy(folder, "occlusion_projection.npy", s.projection.values[0].cpu().numpy())
        save(occlusion_figure(s), folder.path("occlusion.png"))
    i = int(s.probability.argmin())
    r, c = divmod(i, len(s.lefts))
    click.echo(f"p({s.label}) = {s.base_probability:.3f} unoccluded; lowest {float(s.probability.min()):.3f} "
               f"with the square at top={s.tops[r]}, left={s.lefts[c]}")


@model_command("invariance", IMAGES, help=HELP_INVARIANCE)
@click.option("--transforms", default=None, help="Comma-separated (default: every registered transform).")
@click.option("--amounts", default=None, help="Sweep for a single transform, e.g. 0,10,20 (default: paper-like).")
@click.option("--layers", default=None, help="Comma-separated layers (default: first conv layer and penultimate).")
@pre_activation_option
@batch_size_option
@out_option("zf-invariance")
def invariance_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, transforms: str | None,
                   amounts: str | None, layers: str | None, pre_activation: bool, batch_size: int | None,
                   out: str) -> None:
    """Invariance study (paper Fig. 5): feature distance and p(true class) under translation, scale, rotation."""
    from ..plot.zf import invariance_figure
    from ..zf.invariance import TRANSFORMS, invariance_study

    names = [t.strip() for t in transforms.split(",") if t.strip()] if transforms else TRANSFORMS.names()
    if amounts and len(names) != 1:
        raise CnnscopeError("--amounts needs exactly one transform in --transforms")
    lays = [s.strip() for s in layers.split(",")] if layers else None
    with run_output(out, "invariance") as folder:
        m = open_model(model, weights, device)
        imgs = read_images(images)
        studies = [invariance_study(m, imgs, t, amounts=numbers(amounts), layers=lays, pre_activation=pre_activation,
                                    batch_size=batch_size, progress=show_progress()) for t in names]
        folder.write_json("invariance.json", [s.to_dict() for s in studies])
        save(invariance_figure(studies), folder.path("invariance.png"))
    for s in studies:
        far = s.distances.mean(0)[:, -1].tolist()
        click.echo(f"{s.transform}: mean distance at {s.amounts[-1]:g}: "
                   + ", ".join(f"{n} {v:.3g}" for n, v in zip(s.layers, far)))


@model_command("correspond", IMAGES, help=HELP_CORRESPOND)
@click.option("--box", "boxes", multiple=True, required=True,
              help="TOP,LEFT,BOTTOM,RIGHT of the part in each image, in that image's pixels (once per image).")
@click.option("--layers", default=None, help="Comma-separated layers (default: last spatial and penultimate).")
@click.option("--random", "n_random", type=click.IntRange(0), default=5, show_default=True,
              help="Repeats of the random-mask baseline.")
@click.option("--seed", type=int, default=0, show_default=True)
@pre_activation_option
@batch_size_option
@out_option("zf-correspondence")
def correspond_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, boxes: tuple[str, ...],
                   layers: str | None, n_random: int, seed: int, pre_activation: bool, batch_size: int | None,
                   out: str) -> None:
    """Correspondence analysis (paper Table 1): sign-change consistency of masking the same part in IMAGES."""
    from ..plot.zf import correspondence_figure
    from ..zf.correspondence import correspondence

    parsed = [numbers(b, int) for b in boxes]
    lays = [s.strip() for s in layers.split(",")] if layers else None
    with run_output(out, "correspond") as folder:
        m = open_model(model, weights, device)
        imgs = read_images(images)
        r = correspondence(m, imgs, parsed, layers=lays, n_random=n_random, seed=seed, pre_activation=pre_activation,
                           batch_size=batch_size, progress=show_progress())
        folder.write_json("correspondence.json", r.to_dict())
        save(correspondence_figure(r, list(imgs.values())), folder.path("correspondence.png"))
    for n in r.layers:
        line = f"{n}: part {r.part[n].mean:.4f} +- {r.part[n].std:.4f}"
        if r.random:
            line += f"; random {r.random[n].mean:.4f} +- {r.random[n].std:.4f}"
        click.echo(line)
