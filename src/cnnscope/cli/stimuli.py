"""``cnnscope stimuli`` (draw synthetic curves/angles/lines), ``cnnscope tuning`` (heatmaps, radial and joint
tuning curves, orientation families) and the Curve Detectors demo section (order 65).

``tuning`` wires the stimuli area to the dataset area: the per-channel mean/std that turn activations into
"standard deviations above the dataset mean" and the top dataset examples whose rotations give the joint tuning
curves come from one :func:`cnnscope.dataset.collect_statistics` pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ..errors import CnnscopeError
from .app import cli, model_options, open_model, print_table, write_json
from .demo import DemoContext, demo_section

#: the demo's layer: expansion activations of EfficientNet-Lite0's 4th stage hold a clear curve family
DEMO_LAYER = "blocks.3.1.bn1.act"
VALUES = ("auto", "pre", "post")


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
        click.option("--kind", default="curve", show_default=True, help="Stimulus kind: curve, angle or line."),
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
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the sheet and numbers.")
def stimuli_cmd(kind: str, levels: str | None, param: str | None, width: float | None, color: str | None,
                background: str | None, sets: tuple[str, ...], n_orient: int, size: int, supersample: int,
                out: str) -> None:
    """Draw a grid of synthetic stimuli (orientation x radius/arm/length) as a sheet plus the numbers."""
    from ..images import to_uint8
    from ..plot import save_figure
    from ..plot.stimuli import stimulus_sheet
    from ..stimuli import grid, render, stimulus_class
    from ..stimuli.tuning import default_levels

    cls = stimulus_class(kind)
    params = _stimulus_params(width, color, background, sets)
    orientations = np.arange(n_orient) * (cls.period / n_orient)
    lev = _number_list(levels, "--levels") or default_levels(kind, (size, size)).round(2).tolist()
    param = param or cls.sweep_param
    stims = grid(kind, orientations, lev, param=param, **params)
    images = to_uint8(render(stims, size, supersample=supersample))
    root = Path(out)
    sheet = save_figure(stimulus_sheet(images, orientations, lev, param=param), root / "stimuli.png")
    np.savez_compressed(root / "stimuli.npz", images=images, orientations=orientations, levels=np.asarray(lev))
    write_json(root / "stimuli.json", {"kind": kind, "param": param, "size": size, "supersample": supersample,
                                       "orientations": orientations.tolist(), "levels": list(lev),
                                       "stimuli": [s.to_dict() for s in stims]})
    click.echo(f"{len(stims)} {kind} stimuli ({len(lev)} {param} x {n_orient} orientations, {size}px) -> {sheet}")


@dataclass
class TuningOptions:
    """Settings of one tuning report (``cnnscope tuning`` and the demo)."""

    units: list[int] | None = None
    family: int = 8
    min_selectivity: float = 0.3
    kind: str = "curve"
    step: float = 10.0
    levels: list[float] | None = None
    param: str | None = None
    size: int | None = None
    images: str | None = "samples"
    values: str = "auto"
    examples: int = 6
    joint_step: float = 5.0
    batch_size: int = 64
    stimulus: dict | None = None


def tuning_report(m, layer: str, opts: TuningOptions, out: Path, progress: bool = True) -> dict:
    """Measure and write the tuning figures and numbers of ``layer`` into ``out``; returns the JSON summary."""
    from ..capture import is_activation, resolve_layers
    from ..capture.receptive_field import receptive_fields
    from ..plot import save_figure
    from ..plot import stimuli as figs
    from ..stimuli import discover_family, find_family, joint_tuning, rf_offset, stimulus_class, tuning_map
    from ..stimuli.joint import centered_crop
    from ..stimuli.responses import rf_centers
    from ..stimuli.tuning import default_orientations

    if opts.values not in VALUES:
        raise CnnscopeError(f"--values must be one of {VALUES}, got {opts.values!r}")
    module = resolve_layers(m.module, layer)[layer]
    pre = opts.values == "pre" or (opts.values == "auto" and is_activation(module))
    mean = std = stats = rf_full = None
    if opts.images:
        from ..dataset import collect_statistics, open_source

        source = open_source(opts.images)
        stats = collect_statistics(m, source, [layer], k=max(1, opts.examples), progress=progress)
        ls = stats[layer]
        moments = ls.moments_post if (ls.pre_activation and not pre) else ls.moments_pre
        mean, std, rf_full = moments.mean, moments.std, ls.rf
    if rf_full is None and (opts.size is None or stats is not None):
        rf_full = receptive_fields(m.module, layer, m.input_size)[layer]
    rf_side = max(rf_full.size) if rf_full is not None else None
    size = opts.size or min(min(m.input_size), max(32, math.ceil(1.5 * rf_side / 16) * 16))
    common = dict(kind=opts.kind, orientations=default_orientations(opts.step, stimulus_class(opts.kind).period),
                  levels=opts.levels, param=opts.param, mean=mean, std=std, size=size,
                  offset=rf_offset(m, layer, size, rf=rf_full), pre_activation=pre, batch_size=opts.batch_size,
                  progress=progress, **(opts.stimulus or {}))
    if opts.units:
        tmap = tuning_map(m, layer, opts.units, **common)
        family = find_family(tmap, None, min_selectivity=0.0, min_peak=-np.inf)  # every named unit
    else:
        family, tmap = discover_family(m, layer, opts.family, min_selectivity=opts.min_selectivity, **common)
        if not len(family):
            raise CnnscopeError(f"no unit of {layer!r} has orientation selectivity >= {opts.min_selectivity}; "
                                "lower --min-selectivity or name --units")
    units = family.units
    rows = [tmap.index(u) for u in units]
    shown = tmap.values[rows]
    out.mkdir(parents=True, exist_ok=True)
    files = [save_figure(figs.tuning_heatmaps(shown, tmap.orientations, tmap.levels, units, param=tmap.param,
                                              in_std=tmap.in_std, layer=layer), out / "heatmaps.png"),
             save_figure(figs.radial_tuning_figure(family.radial, family.orientations, units,
                                                   preferred=family.stats.preferred, period=family.period),
                         out / "radial.png"),
             save_figure(figs.family_figure(units, family.stats.preferred, family.stats.strength,
                                            family.stats.selectivity, family.radial, family.orientations,
                                            layer=layer, period=family.period), out / "family.png")]
    joint = None
    if stats is not None and rf_full is not None and opts.joint_step > 0 and opts.examples > 0:
        cy, cx = rf_centers(rf_full)
        side = math.ceil(rf_side * math.sqrt(2))
        cache: dict[int, np.ndarray] = {}
        crops: dict[int, list[np.ndarray]] = {}
        for u in units:
            for ex in stats.examples(layer, u, "top"):
                if ex.image_id < 0 or not np.isfinite(ex.value):
                    continue
                if ex.image_id not in cache:
                    cache[ex.image_id] = m.fit_image(source.load(ex.image_id))
                crops.setdefault(u, []).append(centered_crop(cache[ex.image_id], (cy[ex.y], cx[ex.x]), side))
        if crops:
            joint = joint_tuning(m, layer, crops, units=units, step=opts.joint_step, out_size=rf_side, mean=mean,
                                 std=std, pre_activation=pre, batch_size=opts.batch_size, progress=progress)
            files.append(save_figure(figs.joint_tuning_figure(joint.angles, joint.curves, joint.sources.tolist(),
                                                              joint.units.tolist(),
                                                              unit_orientations=family.stats.preferred,
                                                              in_std=joint.in_std), out / "joint.png"))
    summary = {"model": m.name, "layer": layer, "values": "pre-activation" if pre else "output", "size": size,
               "offset": list(common["offset"]), "receptive_field": rf_side,
               "dataset": None if stats is None else {"images": stats.images, "source": stats.source},
               "family": family.to_dict(), "tuning": tmap.to_dict() if opts.units else None,
               "joint": None if joint is None else joint.to_dict(), "figures": [str(f) for f in files]}
    np.savez_compressed(out / "tuning.npz", units=tmap.units, orientations=tmap.orientations, levels=tmap.levels,
                        raw=tmap.raw, values=tmap.values, family=np.asarray(units),
                        joint_curves=np.zeros(0) if joint is None else joint.curves)
    write_json(out / "tuning.json", summary)
    return summary


def _print_family(summary: dict) -> None:
    fam = summary["family"]
    print_table([(u, f"{p:g}", f"{lv:.3g}", f"{pk:.2f}", f"{s:.2f}")
                 for u, p, lv, pk, s in zip(fam["units"], fam["preferred"], fam["level"], fam["peak"],
                                            fam["selectivity"])],
                ("unit", "orientation", "best level", "peak", "selectivity"))


@cli.command("tuning")
@click.argument("model")
@click.argument("layer")
@model_options
@stimulus_options
@click.option("--units", default=None, help="Comma-separated channels (default: discover the --family).")
@click.option("--family", "family_k", type=click.IntRange(1), default=8, show_default=True,
              help="Size of the orientation family to discover when no --units are given.")
@click.option("--min-selectivity", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Family members need at least this orientation selectivity (vector strength).")
@click.option("--step", type=click.FloatRange(0.5, 90), default=10.0, show_default=True,
              help="Orientation step of the heatmaps in degrees.")
@click.option("--size", type=click.IntRange(16), default=None,
              help="Stimulus size in pixels (default: 1.5 x the receptive field, at most the input size).")
@click.option("--images", default="samples", show_default=True,
              help="Images for the dataset mean/std and top examples (folder, glob, samples, samples:N); "
                   "'none' for raw activations and no joint tuning.")
@click.option("--values", type=click.Choice(VALUES), default="auto", show_default=True,
              help="pre-activation or output values (auto: pre-activation for activation layers, as the article).")
@click.option("--examples", type=click.IntRange(0), default=6, show_default=True,
              help="Top dataset examples per unit rotated for the joint tuning curves (0 = none).")
@click.option("--joint-step", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Rotation step of the joint tuning curves in degrees (the article uses 1; 0 = skip).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
              help="Images per forward pass (memory bound).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for figures and numbers.")
def tuning_cmd(model: str, layer: str, weights: str | None, device: str, kind: str, levels: str | None,
               param: str | None, width: float | None, color: str | None, background: str | None,
               sets: tuple[str, ...], units: str | None, family_k: int, min_selectivity: float, step: float,
               size: int | None, images: str, values: str, examples: int, joint_step: float, batch_size: int,
               out: str) -> None:
    """Tuning of LAYER's units to synthetic stimuli: heatmaps in std above the dataset mean, radial tuning,
    the orientation family and joint tuning curves from rotated dataset examples."""
    m = open_model(model, weights, device)
    unit_list = [int(u) for u in _number_list(units, "--units") or []] or None
    opts = TuningOptions(units=unit_list, family=family_k, min_selectivity=min_selectivity, kind=kind, step=step,
                         levels=_number_list(levels, "--levels"), param=param, size=size,
                         images=None if images.lower() == "none" else images, values=values, examples=examples,
                         joint_step=joint_step, batch_size=batch_size,
                         stimulus=_stimulus_params(width, color, background, sets))
    summary = tuning_report(m, layer, opts, Path(out))
    _print_family(summary)
    click.echo(f"figures and numbers in {out}/ ({', '.join(Path(f).name for f in summary['figures'])}, "
               "tuning.json, tuning.npz)")


@demo_section(65, "Curve detectors: synthetic stimuli and tuning")
def _demo(ctx: DemoContext) -> None:
    out = ctx.out / "stimuli"
    opts = TuningOptions(family=10, step=30.0 if ctx.quick else 10.0,
                         levels=[8.0, 16.0, 32.0] if ctx.quick else None, examples=3 if ctx.quick else 6,
                         joint_step=30.0 if ctx.quick else 5.0, images="samples", size=96 if ctx.quick else None)
    summary = tuning_report(ctx.model, DEMO_LAYER, opts, out, progress=False)
    fam = summary["family"]
    click.echo(f"  {DEMO_LAYER}: {len(fam['units'])} orientation-tuned units; at {fam['coverage']:.0%} of the "
               "orientations one of them gives at least half its peak response")
    _print_family(summary)
    click.echo(f"  figures: {', '.join(str(Path(f)) for f in summary['figures'])}")
