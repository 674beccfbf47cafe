"""``cnnscope stimuli`` (draw synthetic curves/angles/lines/combs), ``cnnscope tuning`` (heatmaps, radial and joint
tuning curves, orientation families; :func:`cnnscope.stimuli.tuning_report`), ``cnnscope unit-classes`` (curve,
double, echo, concentric units) and the Curve Detectors demo section (order 65)."""

from __future__ import annotations

import math
import os
import re
import tempfile
from functools import partial
from pathlib import Path

import click
import numpy as np

from ..errors import CnnscopeError
from ..outputs import RunOutput, run_output
from .app import (
    batch_size_option,
    channels_option,
    cli,
    model_options,
    open_model,
    pre_activation_option,
    print_table,
    show_progress,
)
from .demo import DemoContext, demo_section
from .study import layers_or_study

#: the demo's layer: expansion activations of EfficientNet-Lite0's 4th stage hold a clear curve family
DEMO_LAYER = "blocks.3.1.bn1.act"


def _safe(text: str) -> str:
    """A layer name as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


class KindType(click.ParamType):
    """``--kind``: a name in the stimulus registry, read when the command runs (new kinds appear by themselves)."""

    name = "kind"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from ..stimuli import STIMULI

        return "[" + "|".join(STIMULI.names()) + "]"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        from ..stimuli import stimulus_class

        stimulus_class(value)  # unknown kinds: one line with close matches
        return value


def _number_list(text: str | None, what: str) -> list[float] | None:
    if text is None or not text.strip():
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CnnscopeError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _stimulus_params(width: float | None, color: str | None, background: str | None, sets: tuple[str, ...]
                     ) -> dict:
    """Fixed stimulus parameters from ``--width/--color/--background`` and ``--set name=value``."""
    params: dict = {}
    if width is not None:
        params["width"] = width
    for name, text in (("color", color), ("background", background)):
        if text is not None:
            rgb = _number_list(text, f"--{name}")
            params[name] = tuple(rgb or ())
    for item in sets:
        if "=" not in item:
            raise CnnscopeError(f"--set takes name=value (e.g. span=120, filled=true), got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        low = value.lower()
        if low in ("true", "false", "yes", "no"):
            params[name] = low in ("true", "yes")
        else:
            try:
                params[name] = float(value)
            except ValueError:
                raise CnnscopeError(f"--set {name}: expected a number or true/false, got {value!r}") from None
    return params


def stimulus_options(f):
    """Options shared by ``stimuli`` and ``tuning``: kind, sweep and stimulus parameters."""
    for opt in reversed([
        click.option("--kind", type=KindType(), default="curve", show_default=True,
                     help="Stimulus kind (every registered kind)."),
        click.option("--levels", default=None,
                     help="Comma-separated values of the swept parameter (default: 8 values suited to the size)."),
        click.option("--param", default=None,
                     help="Swept parameter besides orientation (default: radius / arm / length)."),
        click.option("--width", type=float, default=None, help="Stroke width in pixels (default 3)."),
        click.option("--color", default=None, help="Stroke colour R,G,B in [0, 1] (default black)."),
        click.option("--background", default=None, help="Background R,G,B in [0, 1] (default white)."),
        click.option("--set", "sets", multiple=True,
                     help="Other stimulus parameters, name=value (span=120, filled=true, opening=60, "
                          "corner_radius=4, arm=30, length=40); repeatable."),
    ]):
        f = opt(f)
    return f


@cli.command("stimuli")
@stimulus_options
@click.option("--orientations", "n_orient", type=click.IntRange(1), default=12, show_default=True,
              help="Orientations, evenly over the kind's period (360 degrees; 180 for lines).")
@click.option("--size", type=click.IntRange(8), default=64, show_default=True, help="Image size in pixels.")
@click.option("--supersample", type=click.IntRange(1), default=3, show_default=True,
              help="Anti-aliasing samples per pixel side.")
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the sheet and numbers.")
def stimuli_cmd(kind: str, levels: str | None, param: str | None, width: float | None, color: str | None,
                background: str | None, sets: tuple[str, ...], n_orient: int, size: int, supersample: int,
                out: str) -> None:
    """Draw a grid of synthetic stimuli (orientation x radius/arm/length) as a sheet plus the numbers."""
    from ..plot import save_figure
    from ..plot.stimuli import stimulus_sheet
    from ..stimuli import grid, render, stimulus_class
    from ..stimuli.tuning import default_levels

    cls = stimulus_class(kind)
    params = _stimulus_params(width, color, background, sets)
    orientations = np.arange(n_orient) * (cls.period / n_orient)
    lev = _number_list(levels, "--levels") or default_levels(kind, (size, size)).round(decimals=2).tolist()
    param = param or cls.sweep_param
    with run_output(out, "stimuli") as output:
        stims = grid(kind, orientations, lev, param=param, **params)
        images = render(stims, size, supersample=supersample)
        sheet = output.write("stimuli.png", partial(save_figure, stimulus_sheet(images, orientations, lev,
                                                                                  param=param)))
        output.write("stimuli.npz", lambda p: np.savez_compressed(p, images=images, orientations=orientations,
                                                                  levels=np.asarray(lev)))
        output.write_json("stimuli.json", {"kind": kind, "param": param, "size": size, "supersample": supersample,
                                           "orientations": orientations.tolist(), "levels": list(lev),
                                           "stimuli": [s.to_dict() for s in stims]})
    click.echo(f"{len(stims)} {kind} stimuli ({len(lev)} {param} x {n_orient} orientations, {size}px) -> {sheet}")


def _write(report, out: Path, output: RunOutput | None = None, sub: str = "") -> list[Path]:
    """Save the report's figures and numbers into ``out`` (each file atomically), listed in ``output``'s
    manifest when given (under ``sub/``: ``out`` is that subfolder of the run's folder)."""
    from ..plot import save_figure
    from ..plot.stimuli import tuning_report_figures

    files = [save_figure(fig, out / f"{name}.png") for name, fig in tuning_report_figures(report).items()]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tuning-", dir=out) as tmp:  # renamed into place when complete
        for p in report.save(tmp):
            os.replace(p, out / p.name)
            files.append(out / p.name)
    if output is not None:
        for f in files:
            output.path(f"{sub}/{f.name}" if sub else f.name)
    return files


def _print_family(report) -> None:
    st = report.family.stats
    print_table([(c, f"{p:g}", f"{lv:.3g}", f"{pk:.2f}", f"{s:.2f}")
                 for c, p, lv, pk, s in zip(st.channels.tolist(), st.preferred.tolist(), st.level.tolist(),
                                            st.peak.tolist(), st.selectivity.tolist())],
                ("channel", "orientation", "best level", "peak", "selectivity"))


@cli.command("tuning")
@click.argument("model")
@click.argument("layer", required=False)
@model_options
@stimulus_options
@channels_option
@pre_activation_option
@batch_size_option
@click.option("--family", "family_k", type=click.IntRange(1), default=8, show_default=True,
              help="Size of the orientation family to discover when no --channels are given.")
@click.option("--min-selectivity", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Family members need at least this orientation selectivity (vector strength).")
@click.option("--step", type=click.FloatRange(0.5, 90), default=10.0, show_default=True,
              help="Orientation step of the heatmaps in degrees.")
@click.option("--size", type=click.IntRange(16), default=None,
              help="Stimulus size in pixels (default: 1.5 x the receptive field, at most the input size).")
@click.option("--images", default="samples", show_default=True,
              help="Images for the dataset mean/std and top examples (folder, glob, samples, samples:N); "
                   "'none' for raw activations and no joint tuning.")
@click.option("--examples", type=click.IntRange(0), default=6, show_default=True,
              help="Top dataset examples per channel rotated for the joint tuning curves (0 = none).")
@click.option("--joint-step", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Rotation step of the joint tuning curves in degrees (the article uses 1; 0 = skip).")
@click.option("--double", is_flag=True, help="Keep double-curve units (two orientation peaks) in the discovered "
                                           "family instead of dropping them for their low selectivity.")
@click.option("--out", required=True, metavar="FOLDER", help="Folder for figures and numbers.")
def tuning_cmd(model: str, layer: str | None, weights: str | None, device: str, kind: str, levels: str | None,
               param: str | None, width: float | None, color: str | None, background: str | None,
               sets: tuple[str, ...], channels: str | None, pre_activation: bool, batch_size: int | None,
               family_k: int, min_selectivity: float, step: float, size: int | None, images: str, examples: int,
               joint_step: float, double: bool, out: str) -> None:
    """Tuning of LAYER's channels to synthetic stimuli: heatmaps in std above the dataset mean, radial tuning,
    the orientation family and joint tuning curves from rotated dataset examples.

    LAYER is a layer name or alias; without it, each of the model's study layers (a preset's, marked * by
    `cnnscope layers`) is measured into OUT/<layer>/."""
    from ..dataset.sources import skipped_lines
    from ..stimuli import tuning_report

    stimulus = _stimulus_params(width, color, background, sets)
    levels_list = _number_list(levels, "--levels")
    with run_output(out, "tuning") as output:  # an unwritable --out fails before the model loads
        m = open_model(model, weights, device)
        layers = layers_or_study(m, [layer] if layer else [], "LAYER")
        done = []
        for name in layers:
            report = tuning_report(m, name, channels=channels, family=family_k, min_selectivity=min_selectivity,
                                   kind=kind, step=step, levels=levels_list, param=param, size=size,
                                   source=None if images.lower() == "none" else images,
                                   pre_activation=pre_activation, examples=examples, joint_step=joint_step,
                                   double=double, batch_size=batch_size, progress=show_progress(), **stimulus)
            sub = "" if layer else _safe(name)  # one subfolder per study layer
            done.append((name, report, _write(report, output.folder / sub if sub else output.folder, output, sub)))
    for name, report, files in done:
        dataset = report.dataset or {}
        for line in skipped_lines(dataset.get("skipped", []), dataset.get("n_skipped")):  # unreadable --images
            click.echo(line, err=True)
        if len(done) > 1:
            click.echo(f"{name}:")
        _print_family(report)
        where = f"{out}/{files[0].parent.name}" if len(done) > 1 else out
        click.echo(f"figures and numbers in {where}/ ({', '.join(f.name for f in files)})")


@cli.command("unit-classes")
@click.argument("model")
@click.argument("layer")
@model_options
@channels_option
@pre_activation_option
@batch_size_option
@click.option("--step", type=click.FloatRange(0.5, 90), default=10.0, show_default=True,
              help="Orientation step in degrees.")
@click.option("--levels", default=None, help="Comma-separated radii (default: 8 values suited to the size).")
@click.option("--size", type=click.IntRange(16), default=None, help="Stimulus size (default: the model's input).")
@click.option("--width", type=float, default=None, help="Stroke width in pixels (default 3).")
@click.option("--min-selectivity", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Vector strength a curve (or concentric) unit needs.")
@click.option("--double-ratio", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Second peak over the first that makes a double-curve unit.")
@click.option("--echo-ratio", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
              help="Smallest second peak, about half a period away, that makes an echo unit.")
@click.option("--concentric/--no-concentric", default=True, show_default=True,
              help="Also test concentric arcs at each unit's preferred orientation and radius.")
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the figure and numbers.")
def unit_classes_cmd(model: str, layer: str, weights: str | None, device: str, channels: str | None,
                     pre_activation: bool, batch_size: int | None, step: float, levels: str | None,
                     size: int | None, width: float | None, min_selectivity: float, double_ratio: float,
                     echo_ratio: float, concentric: bool, out: str) -> None:
    """Classify LAYER's channels by their curve tuning: curve, double (two orientations), echo (a weak second
    response half a turn away), concentric (prefers concentric arcs) or unselective, instead of dropping what the
    family's selectivity filter rejects."""
    from ..plot import save_figure
    from ..plot.stimuli import unit_classes_figure
    from ..stimuli.families import classify_units, concentric_ratios
    from ..stimuli.tuning import default_orientations, tuning_map

    if echo_ratio > double_ratio:
        raise CnnscopeError(f"--echo-ratio {echo_ratio} must not exceed --double-ratio {double_ratio}")
    stimulus = {} if width is None else {"width": width}
    with run_output(out, "unit-classes") as output:
        m = open_model(model, weights, device)
        tmap = tuning_map(m, layer, channels=channels, orientations=default_orientations(step),
                          levels=_number_list(levels, "--levels"), size=size, pre_activation=pre_activation,
                          batch_size=batch_size, progress=show_progress(), **stimulus)
        ratios = concentric_ratios(m, tmap, size=size, batch_size=batch_size) if concentric else None
        classes = classify_units(tmap, min_selectivity=min_selectivity, double_ratio=double_ratio,
                                 echo_ratio=echo_ratio, concentric_ratio=ratios)
        stem = f"classes_{_safe(layer)}"
        png = output.write(f"{stem}.png", partial(save_figure, unit_classes_figure(tmap, classes)))
        output.write_json(f"{stem}.json", {"model": m.name, **classes.to_dict(), "tuning": tmap.to_dict()})
    print_table([(c, lab, f"{p:g}", "" if math.isnan(s) else f"{s:g}", f"{r:.2f}")
                 for c, lab, p, s, r in zip(classes.channels.tolist(), classes.labels, classes.preferred.tolist(),
                                            classes.second.tolist(), classes.second_ratio.tolist())
                 if lab != "unselective"], ("channel", "class", "orientation", "second", "second/first"))
    click.echo(", ".join(f"{n} {lab}" for lab, n in classes.counts().items()) + f" -> {png}")


@demo_section(65, "Curve detectors: synthetic stimuli and tuning")
def _demo(ctx: DemoContext) -> None:
    from ..stimuli import tuning_report

    report = tuning_report(ctx.model, DEMO_LAYER, family=10, step=30.0 if ctx.quick else 10.0,
                           levels=[8.0, 16.0, 32.0] if ctx.quick else None, examples=3 if ctx.quick else 6,
                           joint_step=30.0 if ctx.quick else 5.0, source="samples",
                           size=96 if ctx.quick else None, pre_activation=True)
    files = _write(report, ctx.out / "stimuli")
    click.echo(f"  {DEMO_LAYER} (pre-activation): {len(report.family)} orientation-tuned channels; at "
               f"{report.family.coverage():.0%} of the orientations one of them gives at least half its peak response")
    _print_family(report)
    click.echo(f"  figures: {', '.join(str(f) for f in files if f.suffix == '.png')}")
