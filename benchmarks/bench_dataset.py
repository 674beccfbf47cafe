"""Benchmark of the dataset statistics pass: overhead over a bare forward, and memory vs dataset size.

1. Images/s of ``collect_statistics`` for 3 layers of EfficientNet-Lite0 versus a bare forward over the same
   batches (both read and resize the images through the same loader; receptive fields are measured once before and
   timed separately). The pass hands its batches to the model in channels-last memory format, so the bare forward
   is timed in that format (the overhead of the statistics, judged against the goal <= 1.3x) and as the contiguous
   NCHW forward a user would write (shown too). Runs alternate and repeat after one warm-up each; medians are
   reported, in wall-clock and process CPU time.
2. Peak memory (max RSS of a fresh process) of the pass over N and 4N images: it should not grow with N.
3. Sources: images/s of the statistics pass over JPEGs at Lite0's input size (224 px) read from a folder and from
   WebDataset tar shards with ``--workers`` DataLoader workers (default: the cores), against a bare forward over the
   same images already decoded into tensors; the pass is limited by the model, not by decoding, when its rate is
   close to the bare forward's. Decoding alone (the loader without a model) is shown too.

    python benchmarks/bench_dataset.py [--images 96] [--repeats 3] [--threads N] [--workers N] [--append-results]
    python benchmarks/bench_dataset.py --quick     # a few images, one repeat: checks that the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from _common import append_results

LAYERS = ["blocks.2.1.bn1.act", "blocks.4.0.bn1.act", "blocks.5"]


def bare_pass(model, source, batch_size: int, channels_last: bool = True) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of a plain forward over the source's batches (channels-last or
    contiguous NCHW batches)."""
    from cnnscope.capture import evaluating
    from cnnscope.dataset.sources import iterate_batches

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad(), evaluating(model.module):
        for batch in iterate_batches(model, source, batch_size=batch_size):
            model.module(batch.tensor(model).contiguous(memory_format=fmt))
    return time.perf_counter() - t0, time.process_time() - c0


def stats_pass(model, source, batch_size: int) -> tuple[float, float]:
    """The same for the statistics pass (receptive fields already cached; channels-last batches)."""
    from cnnscope.dataset import collect_statistics

    t0, c0 = time.perf_counter(), time.process_time()
    collect_statistics(model, source, LAYERS, batch_size=batch_size)
    return time.perf_counter() - t0, time.process_time() - c0


def overhead(ours: list[tuple[float, float]], base: list[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """Median ratios of paired ``(wall, CPU)`` timings: ``(wall, CPU, per-repeat wall ratios)``."""
    ratios = [o[0] / b[0] for o, b in zip(ours, base)]
    return statistics.median(ratios), statistics.median(o[1] / b[1] for o, b in zip(ours, base)), ratios


def memory_child(n_images: int, batch_size: int) -> None:
    """Run in a fresh process: one statistics pass over ``n_images``; print the peak RSS in MiB."""
    from cnnscope import load_model
    from cnnscope.dataset import collect_statistics
    from cnnscope.dataset.sources import SampleSource

    model = load_model()
    source = SampleSource(crops=max(1, n_images // 8))
    source = source.subset(range(n_images))
    collect_statistics(model, source, LAYERS, batch_size=batch_size, receptive_field=None)
    print(json.dumps({"images": n_images, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_memory(n_images: int, batch_size: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n_images), "--batch-size", str(batch_size)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def write_jpegs(n_images: int, root: Path, n_shards: int = 2) -> tuple[str, str]:
    """``n_images`` 224x224 JPEGs (crops of the sample photos) as a folder and as ``n_shards`` tar shards; returns
    the folder and the shards' brace pattern."""
    from PIL import Image

    from cnnscope.dataset.sources import SampleSource
    from cnnscope.images import resize

    src = SampleSource(crops=max(1, -(-n_images // 8))).subset(range(n_images))
    folder = root / "jpegs"
    folder.mkdir(parents=True)
    paths = []
    for i in src.ids():
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(resize(src.load(i), (224, 224))).save(path, quality=90)
        paths.append(path)
    per = -(-len(paths) // n_shards)
    for s in range(n_shards):
        with tarfile.open(root / f"shard-{s:04d}.tar", "w") as tf:
            for path in paths[s * per:(s + 1) * per]:
                tf.add(path, arcname=path.name)
    return str(folder), str(root / f"shard-{{0000..{n_shards - 1:04d}}}.tar")


def decode_pass(model, source, batch_size: int, workers: int) -> tuple[float, float]:
    """``(wall, CPU)`` seconds of reading and fitting every image (the loader alone, no model)."""
    from cnnscope.dataset.sources import iterate_batches

    t0, c0 = time.perf_counter(), time.process_time()
    for _ in iterate_batches(model, source, batch_size=batch_size, num_workers=workers):
        pass
    return time.perf_counter() - t0, time.process_time() - c0


def sources_section(model, n_images: int, batch_size: int, workers: int, repeats: int) -> list[str]:
    """Images/s of the statistics pass over a JPEG folder and tar shards vs a bare forward over decoded tensors."""
    from cnnscope.capture import evaluating
    from cnnscope.dataset import collect_statistics
    from cnnscope.dataset.sources import iterate_batches, open_source

    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = write_jpegs(n_images, Path(tmp))
        sources = {"folder": open_source(folder), "tar shards": open_source(shards)}
        decoded = [b.tensor(model).contiguous(memory_format=torch.channels_last)
                   for b in iterate_batches(model, sources["folder"], batch_size=batch_size)]

        def bare() -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad(), evaluating(model.module):
                for x in decoded:
                    model.module(x)
            return time.perf_counter() - t0, time.process_time() - c0

        def stats(src) -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            collect_statistics(model, src, LAYERS, batch_size=batch_size, num_workers=workers)
            return time.perf_counter() - t0, time.process_time() - c0

        runs: dict[str, list[tuple[float, float]]] = {"bare": []}
        for name in sources:
            runs[f"stats {name}"], runs[f"decode {name}"] = [], []
        bare()
        for _ in range(repeats):
            runs["bare"].append(bare())
            for name, src in sources.items():
                runs[f"stats {name}"].append(stats(src))
                runs[f"decode {name}"].append(decode_pass(model, src, batch_size, workers))
    rate = {k: n_images / statistics.median(r[0] for r in v) for k, v in runs.items()}
    lines = [f"sources: {n_images} JPEGs of 224x224, batch {batch_size}, {workers} DataLoader workers, "
             f"{torch.get_num_threads()} torch threads, {repeats} repeats (medians)",
             f"- bare forward over decoded channels-last tensors: {rate['bare']:.2f} images/s"]
    for name in sources:
        lines.append(f"- statistics pass over the {name}: {rate['stats ' + name]:.2f} images/s "
                     f"({rate['stats ' + name] / rate['bare']:.2f}x the bare forward's rate); reading and fitting "
                     f"alone {rate['decode ' + name]:.1f} images/s")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-images", type=int, default=16, help="N of the memory check (also runs 4N)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="DataLoader workers of the sources section (default: the cores)")
    ap.add_argument("--quick", action="store_true", help="a few images, one repeat: check that the script runs")
    ap.add_argument("--append-results", action="store_true")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch_size)
        return
    if args.quick:
        args.images, args.repeats, args.memory_images, args.batch_size = 8, 1, 4, 4

    from cnnscope import load_model
    from cnnscope.capture.receptive_field import receptive_fields
    from cnnscope.dataset.sources import SampleSource

    model = load_model()
    source = SampleSource(crops=max(1, args.images // 8)).subset(range(args.images))
    t0 = time.perf_counter()
    receptive_fields(model.module, LAYERS, model.input_size)  # cached for the timed passes
    rf_seconds = time.perf_counter() - t0
    warm = source.subset(range(min(4, args.images)))
    for channels_last in (True, False):
        bare_pass(model, warm, args.batch_size, channels_last)  # warm-ups
    stats_pass(model, warm, args.batch_size)
    default_threads = torch.get_num_threads()
    settings = [default_threads] + ([1] if default_threads > 1 and not args.threads else [])
    lines = [f"layers: {', '.join(LAYERS)}; {args.images} images of 224x224, batch {args.batch_size}, "
             f"{args.repeats} alternating repeats (medians)"]
    for threads in settings:
        torch.set_num_threads(threads)
        bare, nchw, ours = [], [], []
        for _ in range(args.repeats):
            bare.append(bare_pass(model, source, args.batch_size, channels_last=True))
            nchw.append(bare_pass(model, source, args.batch_size, channels_last=False))
            ours.append(stats_pass(model, source, args.batch_size))
        ratio, cpu, ratios = overhead(ours, bare)
        ratio_nchw, cpu_nchw, _ = overhead(ours, nchw)
        rate = {name: args.images / statistics.median(r[0] for r in runs)
                for name, runs in (("bare", bare), ("nchw", nchw), ("ours", ours))}
        lines += [
            f"- {threads} torch thread{'s' if threads > 1 else ''}: bare forward {rate['bare']:.2f} images/s "
            f"channels-last (the pass's format), {rate['nchw']:.2f} images/s NCHW; statistics pass "
            f"{rate['ours']:.2f} images/s; overhead over the channels-last forward {ratio:.2f}x wall clock "
            f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}), {cpu:.2f}x process CPU time; "
            f"goal <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'}; over the NCHW forward {ratio_nchw:.2f}x wall "
            f"clock, {cpu_nchw:.2f}x process CPU time"]
    torch.set_num_threads(default_threads)
    mem_small = peak_memory(args.memory_images, args.batch_size)
    mem_large = peak_memory(4 * args.memory_images, args.batch_size)
    lines += [
        f"- receptive fields of the 3 layers (once per model, cached): {rf_seconds:.1f} s",
        f"- peak RSS of a fresh process: {mem_small:.0f} MiB for {args.memory_images} images, {mem_large:.0f} MiB "
        f"for {4 * args.memory_images} images (ratio {mem_large / mem_small:.2f})",
    ]
    source_lines = sources_section(model, args.images, args.batch_size, args.workers, args.repeats)
    print("\n".join(lines + source_lines))
    if args.append_results:
        append_results("Dataset statistics (#6): bench_dataset.py", "\n".join(lines), "benchmarks/bench_dataset.py")
        append_results("Dataset sources: bench_dataset.py", "\n".join(source_lines), "benchmarks/bench_dataset.py")

if __name__ == "__main__":
    main()
