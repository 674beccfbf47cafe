"""Benchmark of the stimuli area: rendering, tuning maps and joint tuning on EfficientNet-Lite0.

1. Rendering an orientation x radius grid of anti-aliased curves: ours (only each shape's bounding box is
   evaluated) versus evaluating the same coverage over the whole canvas, at 3x3 and 1 sample per pixel.
   Goal: the bounding box makes a 224 px grid >= 5x cheaper.
2. A tuning map of every channel of ``blocks.3.1.bn1.act`` (render + forward that stops at the layer + read the
   centre unit) versus a bare full forward of the same, already rendered, images. Goal: <= 1.0x (stopping early
   pays for rendering and capture).
3. Joint tuning (rotate crops on the fly + forward to the layer) versus a bare full forward of the same number of
   already rotated crops. Goal: <= 1.0x.

Contenders are timed interleaved (round-robin) and medians reported.

    python benchmarks/bench_stimuli.py [--repeats 3] [--quick] [--append-results]
"""

from __future__ import annotations

import numpy as np
import torch

from _common import append_results, machine_line, median, parser, side_by_side, timing_table

LAYER = "blocks.3.1.bn1.act"


def bare_forward(model, images: torch.Tensor, batch: int = 64) -> None:
    """A bare full forward of ready-made images in batches of ``batch`` (what the contenders are compared with)."""
    from cnnscope.capture import evaluating

    with torch.no_grad(), evaluating(model.module):
        for k in range(0, len(images), batch):
            model.module(model.normalize(images[k:k + batch]))


def bench_render(size: int, n_orient: int, n_levels: int, repeats: int) -> tuple[str, dict]:
    from cnnscope.stimuli import draw, grid
    from cnnscope.stimuli.curves import _coverage_map

    stims = grid("curve", np.arange(n_orient) * (360.0 / n_orient), np.geomspace(4, 64, n_levels))

    def full_canvas(ss: int) -> None:  # the same analytic coverage, evaluated on every pixel of the canvas
        for s in stims:
            _coverage_map(s, (size, size), ss, (0.0, 0.0), (0, size, 0, size))

    times = side_by_side({"ours ss=3": lambda: draw(stims, size, supersample=3),
                          "ours ss=1": lambda: draw(stims, size, supersample=1),
                          "full canvas ss=3": lambda: full_canvas(3),
                          "full canvas ss=1": lambda: full_canvas(1)}, repeats=repeats)
    n = len(stims)
    body = (f"Rendering {n} curves ({n_orient} orientations x {n_levels} radii 4-64 px) at {size} px; "
            f"{n / median(times['ours ss=3']):.0f} stimuli/s at 3x3 samples per pixel.\n\n"
            + timing_table(times, "full canvas ss=3"))
    return body, {k: median(v) for k, v in times.items()}


def bench_tuning(model, size: int, n_orient: int, n_levels: int, repeats: int) -> tuple[str, dict]:
    from cnnscope.stimuli import draw, grid, tuning_map

    orient = np.arange(n_orient) * (360.0 / n_orient)
    levels = np.geomspace(4, 64, n_levels)
    images = torch.from_numpy(draw(grid("curve", orient, levels), size)).permute(0, 3, 1, 2)

    times = side_by_side({
        "tuning_map (render + forward to layer, 480 units)": lambda: tuning_map(
            model, LAYER, orientations=orient, levels=levels, size=size, pre_activation=True),
        "bare full forward (pre-rendered)": lambda: bare_forward(model, images),
    }, repeats=repeats)
    body = (f"Tuning map of all 480 channels of `{LAYER}` over {len(images)} curve stimuli at {size} px "
            "(batch 64).\n\n" + timing_table(times, "bare full forward (pre-rendered)"))
    return body, {k: median(v) for k, v in times.items()}


def bench_joint(model, n_units: int, n_examples: int, step: float, repeats: int) -> tuple[str, dict]:
    from cnnscope.stimuli import joint_tuning, rotate_images

    gen = torch.Generator().manual_seed(0)
    side = 118  # sqrt(2) x the 83 px receptive field of the layer
    crops = {u: list((torch.rand(n_examples, side, side, 3, generator=gen) * 255).to(torch.uint8).numpy())
             for u in range(n_units)}
    angles = torch.arange(0.0, 360.0, step)
    n = n_units * n_examples * len(angles)
    stack = torch.cat([torch.from_numpy(np.stack(c)).permute(0, 3, 1, 2).float() / 255 for c in crops.values()])
    rotated = torch.cat([rotate_images(stack, float(a), out_size=83) for a in angles])

    times = side_by_side({
        "joint_tuning (rotate on the fly + forward to layer)": lambda: joint_tuning(
            model, crops, LAYER, step=step, out_size=83, pre_activation=True, batch_size=64),
        "bare full forward (pre-rotated)": lambda: bare_forward(model, rotated),
    }, repeats=repeats)
    body = (f"Joint tuning: {n_units} units x {n_examples} crops x {len(angles)} rotations = {n} images of 83 px.\n\n"
            + timing_table(times, "bare full forward (pre-rotated)"))
    return body, {k: median(v) for k, v in times.items()}


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    args = ap.parse_args()
    from cnnscope import load_model

    model = load_model()
    q = args.quick
    sections = []
    body, r = bench_render(224, 12 if q else 36, 4 if q else 8, args.repeats)
    sections.append(body)
    speedup = r["full canvas ss=3"] / r["ours ss=3"]
    body, t = bench_tuning(model, 224, 8 if q else 24, 2 if q else 4, args.repeats)
    sections.append(body)
    tuning_ratio = t["tuning_map (render + forward to layer, 480 units)"] / t["bare full forward (pre-rendered)"]
    body, j = bench_joint(model, 2 if q else 4, 2 if q else 4, 30.0 if q else 10.0, args.repeats)
    sections.append(body)
    joint_ratio = j["joint_tuning (rotate on the fly + forward to layer)"] / j["bare full forward (pre-rotated)"]
    summary = (f"Goals: bounding-box rendering >= 5x cheaper than the full canvas: {speedup:.1f}x "
               f"({'met' if speedup >= 5 else 'NOT met'}); tuning map <= 1.0x a bare full forward: "
               f"{tuning_ratio:.2f}x ({'met' if tuning_ratio <= 1.0 else 'NOT met'}); joint tuning <= 1.0x: "
               f"{joint_ratio:.2f}x ({'met' if joint_ratio <= 1.0 else 'NOT met'}).")
    text = "\n".join(sections) + "\n" + summary + "\n"
    print(f"Machine: {machine_line()}\n")
    print(text)
    if args.append_results:
        path = append_results("Stimuli: rendering, tuning maps, joint tuning" + (" (quick)" if q else ""), text,
                              "benchmarks/bench_stimuli.py")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
