"""Benchmark of the feature-visualization renderer (issue 3), side by side in one run.

EfficientNet-Lite0, layer ``blocks.4.0``, channels 0..7, 128 px, 256 steps, ``lucid`` recipe:

1. Overhead: ms per channel-step of ``render`` versus a bare forward + backward (input gradient only) of the
   truncated model (``conv_stem .. blocks.4.0`` as an ``nn.Sequential``, no hooks) on a batch of 8 images of the
   same size. Runs alternate and repeat; the median of the paired ratios is reported. Goal: <= 1.25x.
2. Lucent (``torch-lucent`` with ``kornia==0.4.1``, the ``bench`` extra): the same 8 channels with its default
   image parameterization (Fourier, decorrelated, 128 px) and standard transforms, one ``render_vis`` call per
   channel as Lucent is normally used, plus one batched call (``param.image(128, batch=8)``). Goal: >= 3x faster
   per channel at equal steps, with a mean final activation at least Lucent's. Activations of both are measured
   the same way: the channel's mean on the final 128 px image (and on it upsampled to 224 px, which is what
   Lucent's optimisation looks at). Lucent upsamples images under 224 px before the model, so cnnscope is also run
   with that protocol (standard transforms + ``Resize(224)``) for a like-for-like activation comparison.

    python benchmarks/bench_featurevis.py [--steps 256] [--repeats 3] [--threads N] [--no-lucent] [--append-results]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
LAYER, CHANNELS, SIZE = "blocks.4.0", list(range(8)), 128


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def truncated(module: torch.nn.Module) -> torch.nn.Sequential:
    """EfficientNet-Lite0 up to and including ``blocks.4.0``, without hooks."""
    return torch.nn.Sequential(module.conv_stem, module.bn1, *module.blocks[:4], module.blocks[4][0])


def bare_seconds(model, steps: int) -> float:
    """``steps`` forward + input-gradient passes of the truncated model on 8 images."""
    from cnnscope.capture import evaluating

    net = truncated(model.module)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(len(CHANNELS), 3, SIZE, SIZE, generator=g)
    idx = torch.tensor(CHANNELS)
    with evaluating(model.module), torch.enable_grad():
        t0 = time.perf_counter()
        for _ in range(steps):
            xi = model.normalize(x).requires_grad_(True)
            out = net(xi)
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
    at128 = measure(model, objs, images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    up = torch.nn.functional.interpolate(x, size=224, mode="bilinear", align_corners=True)
    at224 = measure(model, objs, up)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="alternating render/bare pairs for the overhead")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-lucent", action="store_true")
    ap.add_argument("--append-results", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from cnnscope import load_model

    model = load_model()
    n, steps = len(CHANNELS), args.steps
    bare_seconds(model, 2)  # warm-up
    ratios, ours_ms, bare_ms, our_images = [], [], [], None
    for _ in range(args.repeats):
        b = bare_seconds(model, steps)
        o, our_images = ours(model, steps)
        ratios.append(o / b)
        ours_ms.append(1000 * o / (steps * n))
        bare_ms.append(1000 * b / (steps * n))
        print(f"render {ours_ms[-1]:.2f} ms/channel-step, bare {bare_ms[-1]:.2f}, ratio {ratios[-1]:.3f}", flush=True)
    lines = [f"- overhead: `render` {statistics.median(ours_ms):.2f} ms per channel-step vs bare truncated "
             f"forward+backward {statistics.median(bare_ms):.2f} ms: **{statistics.median(ratios):.3f}x** "
             f"(median of {args.repeats} paired runs: {', '.join(f'{r:.2f}' for r in ratios)}; ratio of the best "
             f"times {min(ours_ms) / min(bare_ms):.3f}x; goal <= 1.25x)"]
    a128, a224 = activations(model, our_images)
    lines.append(f"- cnnscope final activation (mean of 8 channels): {a128:.3g} at 128 px, {a224:.3g} upsampled to "
                 f"224 px")
    secs224, imgs224 = ours(model, steps, view=224)
    ms224 = 1000 * secs224 / (steps * n)
    b128, b224 = activations(model, imgs224)
    lines.append(f"- cnnscope with Lucent's protocol (128 px image shown to the model at 224 px): {ms224:.2f} ms per "
                 f"channel-step, activation {b128:.3g} at 128 px, {b224:.3g} at 224 px")
    print(lines[-1], flush=True)
    why = None if not args.no_lucent else "skipped (--no-lucent)"
    why = why or lucent_available()
    if why:
        lines.append(f"- Lucent comparison not run: {why}")
    else:
        per_channel = statistics.median(ours_ms)
        for batched in (False, True):
            secs, imgs = lucent_images(steps, batched)
            ms = 1000 * secs / (steps * n)
            l128, l224 = activations(model, imgs)
            how = "one batched call of 8" if batched else "one call per channel"
            lines.append(f"- Lucent ({how}): {ms:.2f} ms per channel-step -> cnnscope is **{ms / per_channel:.2f}x** "
                         f"faster (goal >= 3x; {ms / ms224:.2f}x with Lucent's 224 px protocol); Lucent activation "
                         f"{l128:.3g} at 128 px, {l224:.3g} at 224 px (cnnscope/Lucent: **{a128 / l128:.2f}x** at "
                         f"128 px; with Lucent's protocol **{b224 / l224:.2f}x** at 224 px)")
            print(lines[-1], flush=True)
    header = (f"\n## bench_featurevis.py — {datetime.date.today().isoformat()}\n\n"
              f"Machine: {cpu_name()}, {torch.get_num_threads()} torch threads of {__import__('os').cpu_count()} "
              f"cores, torch {torch.__version__}. EfficientNet-Lite0 `{LAYER}` channels 0-7, {SIZE} px, "
              f"{steps} steps, lucid recipe.\n\n")
    text = header + "\n".join(lines) + "\n"
    print(text)
    if args.append_results:
        existing = RESULTS.read_text() if RESULTS.exists() else "# Measured benchmark figures\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n" + text)


if __name__ == "__main__":
    main()
