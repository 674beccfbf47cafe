"""``cnnscope prefer-curve`` (the spline curve a unit prefers), ``cnnscope trace`` (curves traced with a curve family,
compared with Canny edges), ``cnnscope curvenet`` (the hand-built curve network's tuning beside a learned
family's) and ``cnnscope equivariance`` (weight-level equivariance of a family).

``MODEL`` may be ``curvenet``: the hand-built curve network (:mod:`cnnscope.stimuli.curvenet`; white curves on
black, its curve units are the channels of layer ``conv``).
"""

from __future__ import annotations

from functools import partial

import click
import numpy as np

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import (
    PositionType,
    channels_option,
    cli,
    model_options,
    open_model,
    pre_activation_option,
    print_table,
    read_image_arg,
    show_progress,
)
from .stimuli import _number_list

HAND_BUILT = "curvenet"
#: stimuli the hand-built network sees: white strokes on black
WHITE_ON_BLACK = {"color": (1.0, 1.0, 1.0), "background": (0.0, 0.0, 0.0), "width": 2.0}


def _open(model: str, weights: str | None, device: str):
    """``curvenet`` (the hand-built network) or any model :func:`open_model` loads."""
    if model == HAND_BUILT:
        from ..stimuli.curvenet import curve_network

        return curve_network()
    return open_model(model, weights, device)


def _stimulus(model: str) -> dict:
    return dict(WHITE_ON_BLACK) if model == HAND_BUILT else {}


def _min_selectivity(model: str, channels: str | None) -> float:
    """Every given channel counts; the hand-built units' raw tuning (no dataset z-scores) scores about 0.2."""
    return 0.0 if channels else (0.1 if model == HAND_BUILT else 0.3)


def _family(m, model: str, layer: str, channels: str | None, k: int, pre_activation: bool, size: int | None):
    """``(channels, preferred orientations)`` of the family measured with synthetic curves on ``layer``."""
    from ..stimuli import discover_family

    every = channels or model == HAND_BUILT  # the hand-built units are all curve detectors
    fam, _ = discover_family(m, layer, k=None if every else k, channels=channels,
                             min_selectivity=_min_selectivity(model, channels), pre_activation=pre_activation,
                             size=size, progress=show_progress(), **_stimulus(model))
    if len(fam) < 2:
        raise CnnscopeError(f"layer {layer!r} has fewer than 2 orientation-tuned channels; pass --channels")
    return fam.channels, fam.stats.preferred.tolist()


@cli.command("prefer-curve")
@click.argument("model")
@click.argument("layer")
@click.argument("channel", type=click.IntRange(0))
@model_options
@pre_activation_option
@click.option("--position", type=PositionType(), default="center", show_default=True,
              help="The neuron: center, ROW,COL, max or all (the channel's mean).")
@click.option("--size", type=click.IntRange(8), default=None, help="Image size (default: the model's input size).")
@click.option("--starts", type=click.IntRange(1), default=12, show_default=True, help="Curves optimised together.")
@click.option("--steps", type=click.IntRange(1), default=150, show_default=True, help="Adam steps.")
@click.option("--width", "width_range", default="1,4", show_default=True, help="Smallest,largest stroke width (px).")
@click.option("--background", type=click.FloatRange(0, 1), default=None,
              help="Background grey level (default 0.5; 0 for curvenet).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the figure and numbers.")
def prefer_curve_cmd(model: str, layer: str, channel: int, weights: str | None, device: str, pre_activation: bool,
                     position, size: int | None, starts: int, steps: int, width_range: str,
                     background: float | None, seed: int, out: str) -> None:
    """The spline curve (control points, width, contrast) that maximises CHANNEL of LAYER at --position."""
    from ..plot import save_figure
    from ..plot.curves import preferred_curve_figure
    from ..stimuli.spline import prefer_curve
    from ..units import unit

    width = _number_list(width_range, "--width") or []
    if len(width) != 2:
        raise CnnscopeError(f"--width takes MIN,MAX pixels, got {width_range!r}")
    bg = background if background is not None else (0.0 if model == HAND_BUILT else 0.5)
    with run_output(out, "prefer-curve") as output:
        m = _open(model, weights, device)
        pc = prefer_curve(m, unit(layer, channel, position), size=size, starts=starts, steps=steps,
                          width=(width[0], width[1]), background=bg, pre_activation=pre_activation, seed=seed,
                          progress=show_progress())
        fig = output.write("prefer_curve.png", partial(save_figure, preferred_curve_figure(pc)))
        output.write("prefer_curve_picture.png", lambda p: save_picture(pc.picture, p))
        output.write_json("prefer_curve.json", pc.to_dict())
    g = pc.geometry
    click.echo(f"{pc.unit}: activation {pc.value:.4g}; the curve passes {g['distance']:.2g} px from the unit's centre "
               f"facing {g['orientation']:.1f} deg (radius {g['radius']:.3g} px) -> {fig}")


def save_picture(picture: np.ndarray, path) -> None:
    from ..images import save_image

    save_image(picture, path)


@cli.command("trace")
@click.argument("model")
@click.argument("image")
@click.argument("layer")
@model_options
@channels_option
@pre_activation_option
@click.option("--orientations", default=None,
              help="Preferred orientation of each of --channels (degrees, comma-separated); measured with synthetic "
                   "curves when not given.")
@click.option("--family", "family_k", type=click.IntRange(2), default=8, show_default=True,
              help="Family size to discover when no --channels are given.")
@click.option("--normalize", type=click.Choice(["image", "none"]), default="image", show_default=True,
              help="Compare members in standard deviations over the image's positions, or raw.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Seeds respond with at least this fraction of the strongest response.")
@click.option("--stop", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="A walk ends where the response falls below this fraction of its seed's.")
@click.option("--canny-sigma", type=click.FloatRange(0, min_open=True), default=2.0, show_default=True,
              help="Gaussian scale of the Canny edges.")
@click.option("--distance", type=click.FloatRange(0), default=3.0, show_default=True,
              help="Traced points and edges agree within this many pixels.")
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the figure and numbers.")
def trace_cmd(model: str, image: str, layer: str, weights: str | None, device: str, channels: str | None,
              pre_activation: bool, orientations: str | None, family_k: int, normalize: str, threshold: float,
              stop: float,
              canny_sigma: float, distance: float, out: str) -> None:
    """Trace the curves of IMAGE with LAYER's curve family and compare them with Canny edges."""
    from ..plot import save_figure
    from ..plot.curves import traces_figure
    from ..stimuli.tracing import compare_with_canny, trace_curves

    given = _number_list(orientations, "--orientations")
    if given is not None and not channels:
        raise CnnscopeError("--orientations needs --channels (one orientation per channel)")
    with run_output(out, "trace") as output:
        m = _open(model, weights, device)
        name, picture = read_image_arg(image)
        if given is not None:
            chans, orient = channels, given  # parsed against the layer by trace_curves
        else:
            chans, orient = _family(m, model, layer, channels, family_k, pre_activation, None)
        traces = trace_curves(m, picture, layer, channels=chans, orientations=orient, pre_activation=pre_activation,
                              normalize=None if normalize == "none" else normalize, threshold=threshold, stop=stop)
        scores = compare_with_canny(traces, picture, sigma=canny_sigma, distance=distance)
        edges = scores.pop("edges")
        fig = output.write("trace.png", partial(save_figure, traces_figure(picture, traces, edges, scores)))
        output.write_json("trace.json", {"image": name, "canny": scores, **traces.to_dict()})
    click.echo(f"{len(traces.polylines)} curves traced in {name}; {scores['traced_near_edge']:.0%} of the traced "
               f"points lie within {distance:g} px of a Canny edge, {scores['edge_near_trace']:.0%} of the edge pixels "
               f"within {distance:g} px of a traced curve -> {fig}")


@cli.command("curvenet")
@click.argument("model", required=False)
@click.argument("layer", required=False)
@model_options
@channels_option
@pre_activation_option
@click.option("--family", "family_k", type=click.IntRange(2), default=8, show_default=True,
              help="Learned family size to discover when no --channels are given.")
@click.option("--size", type=click.IntRange(16), default=None,
              help="Stimulus size for MODEL (default: its input size).")
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the figure and numbers.")
def curvenet_cmd(model: str | None, layer: str | None, weights: str | None, device: str, channels: str | None,
                 pre_activation: bool, family_k: int, size: int | None, out: str) -> None:
    """Tuning of the hand-built curve network; with MODEL LAYER, beside that layer's learned curve family."""
    from ..plot import save_figure
    from ..plot.curves import tuning_comparison_figure
    from ..stimuli import find_family, tuning_map
    from ..stimuli.curvenet import LAYER, curve_network

    if (model is None) != (layer is None):
        raise CnnscopeError("give both MODEL and LAYER to compare with learned units, or neither")
    with run_output(out, "curvenet") as output:
        net = curve_network()
        tm = tuning_map(net, LAYER, size=31, orientations=np.arange(0.0, 360.0, 5.0),
                        levels=[4.0, 6.0, 8.0, 12.0, 16.0], **WHITE_ON_BLACK)
        fam = find_family(tm, k=None, min_selectivity=0.0)
        built = list(net.module.orientations)
        panels = [("hand-built curve network", fam.radial.numpy(), tm.orientations.numpy(), fam.channels,
                   fam.stats.preferred.tolist())]
        data = {"hand_built": {"layer": LAYER, "build_orientations": built, "radius": net.module.radius,
                               "family": fam.to_dict()}}
        if model is not None:
            from ..stimuli import discover_family

            m = _open(model, weights, device)
            every = channels or model == HAND_BUILT
            learned, _ = discover_family(m, layer, k=None if every else family_k, channels=channels,
                                         min_selectivity=_min_selectivity(model, channels),
                                         pre_activation=pre_activation,
                                         size=size, progress=show_progress(), **_stimulus(model))
            panels.append((f"{model} {layer}", learned.radial.numpy(), learned.orientations.numpy(),
                           learned.channels, learned.stats.preferred.tolist()))
            data["learned"] = {"model": model, **learned.to_dict()}
        fig = output.write("curvenet.png", partial(save_figure, tuning_comparison_figure(panels)))
        output.write_json("curvenet.json", data)
    print_table([(c, f"{b:g}", f"{p:g}", f"{s:.2f}") for c, b, p, s in
                 zip(fam.channels, built, fam.stats.preferred.tolist(), fam.stats.selectivity.tolist())],
                ("unit", "built", "preferred", "selectivity"))
    click.echo(f"figure and numbers -> {fig}")


@cli.command("equivariance")
@click.argument("model")
@click.argument("layer")
@model_options
@channels_option
@pre_activation_option
@click.option("--orientations", default=None,
              help="Preferred orientation of each of --channels (degrees); measured when not given.")
@click.option("--tuning-layer", default=None,
              help="Layer whose tuning gives the orientations (default LAYER; e.g. the activation after it).")
@click.option("--family", "family_k", type=click.IntRange(2), default=8, show_default=True,
              help="Family size to discover when no --channels are given.")
@click.option("--upsample", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Resample kernels this many times finer before rotating.")
@click.option("--blur", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Gaussian blur of both kernels (sigma, kernel pixels) before comparing.")
@click.option("--sum-inputs", is_flag=True, help="Compare kernels summed over input channels (deeper layers).")
@click.option("--size", type=click.IntRange(16), default=None, help="Stimulus size for measuring orientations.")
@click.option("--out", required=True, metavar="FOLDER", help="Folder for the figure and numbers.")
def equivariance_cmd(model: str, layer: str, weights: str | None, device: str, channels: str | None,
                     pre_activation: bool, orientations: str | None, tuning_layer: str | None, family_k: int,
                     upsample: int, blur: float, sum_inputs: bool, size: int | None, out: str) -> None:
    """Weight-level equivariance: each family member's kernels rotated by the orientation step, correlated with its
    neighbour's. LAYER is the convolution holding the weights."""
    from ..capture import module_of
    from ..capture.state import resolve_layers
    from ..plot import save_figure
    from ..plot.curves import equivariance_figure
    from ..stimuli.equivariance import weight_equivariance

    given = _number_list(orientations, "--orientations")
    if given is not None and not channels:
        raise CnnscopeError("--orientations needs --channels (one orientation per channel)")
    with run_output(out, "equivariance") as output:
        m = _open(model, weights, device)
        if given is not None:
            chans, orient = channels, given  # parsed against the layer by weight_equivariance
        else:
            chans, orient = _family(m, model, tuning_layer or layer, channels, family_k, pre_activation, size)
        eq = weight_equivariance(m, layer, channels=chans, orientations=orient, upsample=upsample, blur=blur,
                                 sum_inputs=sum_inputs)
        weight = resolve_layers(module_of(m), layer)[layer].weight.detach().float().cpu()
        kernels = weight[eq.channels].sum(1).numpy()
        fig = output.write("equivariance.png", partial(save_figure, equivariance_figure(eq, kernels)))
        output.write_json("equivariance.json", eq.to_dict())
    print_table([(f"{a}->{b}", f"{s:+g}", f"{c:.3f}", f"{u:.3f}") for (a, b), s, c, u in
                 zip(eq.pairs(), eq.steps.tolist(), eq.correlation.tolist(), eq.unrotated.tolist())],
                ("pair", "step", "rotated", "not rotated"))
    click.echo(f"mean equivariance {eq.mean:.3f} -> {fig}")
