"""Benchmark of the engines: in-process vs Ray with one and two workers, side by side in one run.

EfficientNet-Lite0, one torch thread per process on both sides (the driver's in-process run uses one thread, each
Ray actor uses one), a local Ray with the actors of both Ray engines started and warmed before timing (the model
is loaded once per worker; that start-up is reported separately):

1. Rendering 16 units (``blocks.4.0`` channels 0..15, 128 px, ``--steps`` steps, ``lucid``, ``batch_size=8``: two
   chunks, two pieces). Goals: Ray with one worker within 1.15x of in-process; two workers >= 1.7x faster than one.
2. A statistics pass (``collect_statistics`` with a fresh ``workdir`` per call, ``samples:N`` random crops, shards
   of ``--shard`` images, three layers), when the dataset pass takes ``engine=``. Goals: as above, two workers
   >= 1.5x faster than one.

    python benchmarks/bench_scale.py [--steps 64] [--crops 8] [--repeats 3] [--quick] [--append-results]
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time

import torch

from _common import append_results, machine_line, parser, ratios, side_by_side, timing_table

LAYER, UNITS, SIZE = "blocks.4.0", 16, 128
STAT_LAYERS = ["blocks.2.0", "blocks.4.0", "blocks.5.0"]


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=64, help="render steps")
    ap.add_argument("--crops", type=int, default=8, help="random crops per sample photo (statistics pass)")
    ap.add_argument("--shard", type=int, default=16, help="images per shard (statistics pass)")
    args = ap.parse_args()
    steps, size, units, crops, shard, repeats = args.steps, SIZE, UNITS, args.crops, args.shard, args.repeats
    if args.quick:
        steps, size, units, crops, shard, repeats = 2, 64, 4, 1, 4, 1

    import ray

    from cnnscope import load_model
    from cnnscope.dataset import collect_statistics
    from cnnscope.engine.ray_engine import RayEngine
    from cnnscope.featurevis import channel, render

    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    m = load_model("efficientnet_lite0")
    t0 = time.perf_counter()
    engines = {"ray x1": RayEngine(workers=1), "ray x2": RayEngine(workers=2)}
    for eng in engines.values():
        list(eng.map_with_model(m, _noop, list(range(eng.workers))))
    startup = time.perf_counter() - t0

    objs = [channel(LAYER, c) for c in range(units)]
    kw = {"recipe": "lucid", "steps": steps, "size": size, "batch_size": max(1, units // 2)}
    contenders = {"in-process": lambda: render(m, objs, **kw)}
    contenders.update({name: (lambda e=eng: render(m, objs, engine=e, **kw)) for name, eng in engines.items()})
    times = side_by_side(contenders, repeats=repeats, warmup=1)
    lines = [f"Machine: {machine_line()}", "",
             f"Ray start-up (actors of both engines loading the model): {startup:.1f} s", "",
             f"### Render {units} units of {LAYER} ({size} px, {steps} steps, 2 pieces)", "",
             timing_table(times, "in-process"), ""]
    r = ratios(times, "in-process")
    lines.append(f"ray x1 / in-process: {r['ray x1']:.2f}x (goal <= 1.15x); ray x1 / ray x2: "
                 f"{r['ray x1'] / r['ray x2']:.2f}x faster (goal >= 1.7x)")

    if "engine" in inspect.signature(collect_statistics).parameters:
        source = f"samples:{crops}"

        def stats(engine):
            with tempfile.TemporaryDirectory() as work:
                return collect_statistics(m, source, STAT_LAYERS, workdir=work, shard_size=shard, engine=engine,
                                          batch_size=4)

        times = side_by_side({"in-process": lambda: stats(None),
                              **{name: (lambda e=eng: stats(e)) for name, eng in engines.items()}},
                             repeats=repeats, warmup=1)
        r = ratios(times, "in-process")
        lines += ["", f"### Statistics pass, {source}, layers {', '.join(STAT_LAYERS)}, shards of {shard}", "",
                  timing_table(times, "in-process"), "",
                  f"ray x1 / in-process: {r['ray x1']:.2f}x (goal <= 1.15x); ray x1 / ray x2: "
                  f"{r['ray x1'] / r['ray x2']:.2f}x faster (goal >= 1.5x)"]
    else:
        lines += ["", "statistics pass: collect_statistics takes no engine= yet; not measured"]
    for eng in engines.values():
        eng.close()
    ray.shutdown()
    body = "\n".join(lines)
    print(body)
    if args.append_results and not args.quick:
        append_results("Engines: in-process vs Ray (bench_scale)", body, "benchmarks/bench_scale.py")


def _noop(model, item):
    return item


if __name__ == "__main__":
    main()
