"""Benchmark of the feature-visualization renderer (issue 3), side by side in one run.

EfficientNet-Lite0, layer ``blocks.4.0``, channels 0..7, 128 px, 256 steps, ``lucid`` recipe:

1. Overhead: ms per channel-step of ``render`` versus a bare forward + backward (input gradient only) of the
   truncated model (``conv_stem .. blocks.4.0`` as an ``nn.Sequential``, no hooks) on a batch of 8 images of the
   same size. Goal: <= 1.25x.
2. Lucent (``torch-lucent`` with ``kornia==0.4.1``, the ``bench`` extra): the same 8 channels with its default
   image parameterization (Fourier, decorrelated, 128 px) and standard transforms, one ``render_vis`` call per
   channel as Lucent is normally used, plus one batched call (``param.image(128, batch=8)``). Goal: >= 3x faster
   per channel at equal steps, with a mean final activation at least Lucent's. Activations of both are measured
   the same way: the channel's mean on the final 128 px image (and on it upsampled to 224 px, which is what
   Lucent's optimisation looks at). Lucent upsamples images under 224 px before the model, so cnnscope is also run
   with that protocol (standard transforms + ``Resize(224)``) for a like-for-like activation comparison.

3. Class recipe: ``render(model, class_logit(c))`` (the ``class`` recipe, chosen by default for class logits: the
   model's input size, 128 steps, strong transforms) for the 10 ImageNet classes of :data:`CLASSES`; success = the
   model's own top-1 class on the saved ``uint8`` render is the target. Goal: >= 8 of 10. Reports the time per image
   (one batch of 10). ``--class-only`` runs this part alone.

Timing: ``--repeats`` rounds, each running every method once (``--timing-steps`` steps, order rotated per
round), so all of them see the same machine load; ratios are per round, medians reported. Activations: one final
render of ``--steps`` steps per method.

    python benchmarks/bench_featurevis.py [--steps 256] [--timing-steps 64] [--repeats 3] [--threads N]
                                          [--no-lucent] [--no-class | --class-only] [--append-results]
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from _common import append_results, machine_line, median, parser, rotation

LAYER, CHANNELS, SIZE = "blocks.4.0", list(range(8)), 128
#: ImageNet classes of the class-recipe check: goldfish, flamingo, tabby, zebra, balloon, fire engine, oxygen mask,
#: banana, espresso, volcano
CLASSES = [1, 130, 281, 340, 417, 555, 691, 954, 967, 980]


def class_recipe(model) -> tuple[str, int, float]:
    """Render every class of :data:`CLASSES` with the default (``class``) recipe; the model's top-1 on each saved
    picture. Returns the table text, the number of successes and the seconds per image."""
    from cnnscope.featurevis import class_logit, render

    t0 = time.perf_counter()
    res = render(model, [class_logit(c) for c in CLASSES], batch_size=len(CLASSES), seed=0)
    per_image = (time.perf_counter() - t0) / len(CLASSES)
    with torch.no_grad():
        probs = model.module(model.batch(list(res.images))).softmax(1)
    top = probs.argmax(1).tolist()
    rows = [f"{c} {model.label(c)}: top-1 {t} {model.label(t)} (p={float(probs[i, t]):.2f})"
            for i, (c, t) in enumerate(zip(CLASSES, top))]
    hits = sum(c == t for c, t in zip(CLASSES, top))
    return "; ".join(rows), hits, per_image


def truncated(module: torch.nn.Module) -> torch.nn.Sequential:
    """EfficientNet-Lite0 up to and including ``blocks.4.0``, without hooks."""
    return torch.nn.Sequential(module.conv_stem, module.bn1, *module.blocks[:4], module.blocks[4][0])


def bare_seconds(model, steps: int, channels_last: bool = True) -> float:
    """``steps`` forward + input-gradient passes of the truncated model on 8 images (in the memory format that
    ``render`` feeds by default, channels-last; ``False``: the plain NCHW a user would write)."""
    from cnnscope.capture import evaluating

    net = truncated(model.module)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(len(CHANNELS), 3, SIZE, SIZE, generator=g)
    idx = torch.tensor(CHANNELS)
    with evaluating(model.module), torch.enable_grad():
        t0 = time.perf_counter()
        for _ in range(steps):
            xi = model.normalize(x).requires_grad_(True)
            out = net(xi.contiguous(memory_format=torch.channels_last) if channels_last else xi)
            loss = out[torch.arange(len(CHANNELS)), idx].mean(dim=(1, 2)).sum()
            torch.autograd.grad(loss, xi)
        return time.perf_counter() - t0


def ours(model, steps: int, view: int | None = None):
    """cnnscope's lucid render; with ``view`` the model sees the image resized to ``view`` px (Lucent's way)."""
    from cnnscope.featurevis import Resize, channel, render, standard

    transforms = None if view is None else [*standard().steps, Resize(view)]
    t0 = time.perf_counter()
    res = render(model, [channel(LAYER, c) for c in CHANNELS], recipe="lucid", steps=steps, size=SIZE, seed=0,
                 transforms=transforms)
    return time.perf_counter() - t0, res.images


def lucent_images(steps: int, batched: bool) -> tuple[float, np.ndarray]:
    """Lucent's render_vis on a fresh copy of the model (it writes parameter gradients); uint8 [8, H, W, 3]."""
    from lucent.optvis import objectives, param, render

    from cnnscope import load_model

    module = load_model().module
    name = LAYER.replace(".", "_")
    torch.manual_seed(0)
    np.random.seed(0)
    t0 = time.perf_counter()
    if batched:
        obj = sum((objectives.channel(name, c, batch=i) for i, c in enumerate(CHANNELS)),
                  start=objectives.channel(name, CHANNELS[0], batch=0) * 0)
        out = render.render_vis(module, obj, param_f=lambda: param.image(SIZE, batch=len(CHANNELS)),
                                thresholds=(steps,), show_image=False, progress=False)[-1]
    else:
        out = np.concatenate([render.render_vis(module, f"{name}:{c}", param_f=lambda: param.image(SIZE),
                                                thresholds=(steps,), show_image=False, progress=False)[-1]
                              for c in CHANNELS])
    seconds = time.perf_counter() - t0
    return seconds, (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def activations(model, images: np.ndarray) -> tuple[float, float]:
    """Mean over the 8 channels of each image's own channel: at 128 px and upsampled to 224 px."""
    from cnnscope.featurevis import channel, measure

    objs = [channel(LAYER, c) for c in CHANNELS]
    at128 = measure(model, images, objs)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    up = torch.nn.functional.interpolate(x, size=224, mode="bilinear", align_corners=True)
    at224 = measure(model, model.to_input(up), objs)
    return float(at128.mean()), float(at224.mean())


def lucent_available() -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import kornia  # noqa: F401
            import lucent.optvis.render  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip and say why
        return f"{type(exc).__name__}: {exc}"
    return None


def methods(model, lucent: bool) -> dict:
    """name -> ``steps -> (seconds, uint8 images or None)``."""
    table = {"bare": lambda steps: (bare_seconds(model, steps), None),
             "bare NCHW": lambda steps: (bare_seconds(model, steps, channels_last=False), None),
             "cnnscope": lambda steps: ours(model, steps),
             "cnnscope@224": lambda steps: ours(model, steps, view=224)}
    if lucent:
        table["lucent"] = lambda steps: lucent_images(steps, batched=False)
        table["lucent batched"] = lambda steps: lucent_images(steps, batched=True)
    return table


def main() -> None:
    ap = parser(__doc__.splitlines()[0], quick=False)
    ap.add_argument("--steps", type=int, default=256, help="steps of the final renders compared for activation")
    ap.add_argument("--timing-steps", type=int, default=64, help="steps of each timed run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-lucent", action="store_true")
    ap.add_argument("--no-class", action="store_true", help="skip the class-recipe check")
    ap.add_argument("--class-only", action="store_true", help="run only the class-recipe check")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from cnnscope import load_model
    from cnnscope.featurevis import get_recipe

    model = load_model()
    class_line = None
    if not args.no_class:
        rows, hits, per_image = class_recipe(model)
        class_line = (f"- class recipe (`render(model, class_logit(c))`, {model.input_size[0]} px, "
                      f"{get_recipe('class').steps} steps): "
                      f"**{hits}/{len(CLASSES)}** renders classified as their class top-1 by the model itself "
                      f"(goal >= 8); {per_image:.1f} s per image (batch of {len(CLASSES)}). {rows}")
        print(class_line, flush=True)
    if args.class_only:
        print(f"\nMachine: {machine_line()}\n")
        if args.append_results:
            append_results("bench_featurevis.py", class_line + "\n", "benchmarks/bench_featurevis.py")
        return
    n = len(CHANNELS)
    why = "skipped (--no-lucent)" if args.no_lucent else lucent_available()
    table = methods(model, lucent=why is None)
    names = list(table)
    bare_seconds(model, 2)  # warm-up
    ms: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.repeats):  # one round = every method once, in a rotated order
        for name in rotation(names, r):
            secs, _ = table[name](args.timing_steps)
            ms[name].append(1000 * secs / (args.timing_steps * n))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in ms.items()) + " ms/channel-step",
              flush=True)

    def ratio(a: str, b: str) -> str:
        per_round = [x / y for x, y in zip(ms[a], ms[b])]
        return f"**{median(per_round):.2f}x** (rounds: {', '.join(f'{v:.2f}' for v in per_round)})"

    med = {k: median(v) for k, v in ms.items()}
    lines = [f"- ms per channel-step (median of {args.repeats} rounds of {args.timing_steps}-step runs, every method "
             "once per round): " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()),
             f"- overhead of `render` over the bare truncated forward+backward in the same (channels-last) format: "
             f"{ratio('cnnscope', 'bare')} (goal <= 1.25x); over a plain NCHW one: {ratio('cnnscope', 'bare NCHW')}"]
    if why:
        lines.append(f"- Lucent comparison not run: {why}")
    else:
        lines += [f"- Lucent one call per channel / cnnscope: {ratio('lucent', 'cnnscope')} faster (goal >= 3x); "
                  f"batched Lucent / cnnscope: {ratio('lucent batched', 'cnnscope')}",
                  f"- at Lucent's protocol (the 128 px image shown to the model at 224 px): Lucent / cnnscope@224 "
                  f"{ratio('lucent', 'cnnscope@224')}, batched Lucent / cnnscope@224 "
                  f"{ratio('lucent batched', 'cnnscope@224')}"]
    acts = {}
    for name in [k for k in names if not k.startswith("bare")]:
        _, images = table[name](args.steps)
        acts[name] = activations(model, images)
        print(f"{name}: activation {acts[name][0]:.3g} at 128 px, {acts[name][1]:.3g} at 224 px", flush=True)
    lines.append(f"- mean final activation after {args.steps} steps (8 channels, each on its own image; at 128 px / "
                 "upsampled to 224 px): " + ", ".join(f"{k} {a:.3g} / {b:.3g}" for k, (a, b) in acts.items()))
    if not why:
        for lu in ("lucent", "lucent batched"):
            lines.append(f"- cnnscope / {lu} activation: **{acts['cnnscope'][0] / acts[lu][0]:.2f}x** at 128 px "
                         f"(the rendered size); with Lucent's protocol cnnscope@224 / {lu} at 224 px: "
                         f"**{acts['cnnscope@224'][1] / acts[lu][1]:.2f}x** (goal >= 1)")
    if class_line:
        lines.append(class_line)
    text = (f"EfficientNet-Lite0 `{LAYER}` channels 0-7, {SIZE} px, lucid recipe; Lucent with its default image "
            "parameterization and transforms.\n\n" + "\n".join(lines) + "\n")
    print(f"\nMachine: {machine_line()}\n")
    print(text)
    if args.append_results:
        append_results("bench_featurevis.py", text, "benchmarks/bench_featurevis.py")


if __name__ == "__main__":
    main()
