"""Benchmark of cnnscope.evaluate, measured side by side in one run on EfficientNet-Lite0.

1. RISE deletion curve (225 points at 224x224): ours (perturbed images generated on the fly, evaluated in
   batches) vs the bare batched forward of the same number of images (the floor) vs a one-image-at-a-time loop
   (how Quantus-style metrics run).
2. ROAD noisy linear imputation at 10..90 %: ours (one sparse system, vectorised assembly, SuperLU/COLAMD) vs
   pytorch-grad-cam's ``NoisyLinearImputer`` (bench extra), with the largest pixel difference (noise off).
3. ROAD end to end (MoRF + LeRF, 9 percentages): ours vs pytorch-grad-cam's ``ROADCombined`` on the same maps.
4. Sanity check (cascading, 12 units, saliency): ours vs the bare cost of the 13 saliency calls it needs.
5. The method x metric table of every attribution method on the sample photos (deletion, insertion, ROAD; the
   sanity check for the methods that cost a few passes per map).

    python benchmarks/bench_evaluate.py [--quick] [--repeats 3] [--table full|quick|none] [--append-results]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from _common import append_results, parser, side_by_side, timing_table

CHEAP_FOR_SANITY = ("saliency", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients",
                    "smoothgrad", "gradcam", "gradcam_pp", "layercam", "hirescam", "guided_gradcam", "random",
                    "center")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_deletion(m, x, maps, step: int, repeats: int, batch_size: int) -> str:
    from cnnscope.capture import evaluating
    from cnnscope.evaluate import deletion, pixel_ranks

    module = m.module
    b, _, h, w = x.shape
    n_points = -(-h * w // step) + 1
    total = b * n_points
    ranks = pixel_ranks(torch.as_tensor(maps).float())

    def ours() -> None:
        deletion(m, x, maps, step=step, batch_size=batch_size)

    def bare() -> None:
        with torch.no_grad(), evaluating(module):
            for s in range(0, total, batch_size):
                module(x[:1].expand(min(batch_size, total - s), -1, -1, -1).contiguous())

    def one_at_a_time() -> None:
        with torch.no_grad(), evaluating(module):
            for i in range(b):
                for t in range(n_points):
                    keep = (ranks[i] >= t * step).view(1, 1, h, w)
                    module(torch.where(keep, x[i:i + 1], torch.zeros_like(x[i:i + 1]))).softmax(1)

    times = side_by_side({"bare forward": bare, "cnnscope deletion": ours, "one image at a time": one_at_a_time},
                         repeats=repeats, warmup=0)
    return (f"{b} image(s) x {n_points} points = {total} forwards, batch_size {batch_size}, per curve point:\n\n"
            + timing_table(times, "bare forward", unit=total / 1000, unit_name="ms"))


def bench_imputation(repeats: int, size: int) -> str:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from cnnscope.evaluate import noisy_linear_impute, pixel_ranks

    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, size, size, generator=g)
    ranks = pixel_ranks(torch.rand(1, size, size, generator=g))[0]
    pcts = range(10, 100, 10)
    masks = [(ranks < round(p / 100 * size * size)).view(size, size) for p in pcts]
    peer = NoisyLinearImputer(noise=0.0)
    diff = max(float((noisy_linear_impute(img, mk, noise=0.0) - peer(img, (~mk).float())).abs().max())
               for mk in masks)
    times = side_by_side({"pytorch-grad-cam": lambda: [peer(img, (~mk).float()) for mk in masks],
                          "cnnscope": lambda: [noisy_linear_impute(img, mk, noise=0.0) for mk in masks]},
                         repeats=repeats, warmup=0)
    return (f"one {size}x{size} image, 9 masks (10..90 % removed), noise off; largest pixel difference between "
            f"the two: {diff:.1e}\n\n" + timing_table(times, "pytorch-grad-cam"))


def bench_road(m, x, maps, repeats: int) -> str:
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from cnnscope.evaluate import road

    module = m.module
    with torch.no_grad():
        targets = module(x).argmax(1)
    cams = np.stack([np.asarray(torch.as_tensor(mp).float()) for mp in maps])
    peer_targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    out: dict[str, float] = {}

    def ours() -> None:
        out["ours"] = float(road(m, x, maps, target=targets).combined.mean())

    def peer() -> None:
        with torch.no_grad():
            out["peer"] = float(np.mean(ROADCombined()(x, cams, peer_targets, module)))

    times = side_by_side({"pytorch-grad-cam ROADCombined": peer, "cnnscope road": ours}, repeats=repeats,
                         warmup=0)
    return (f"{x.shape[0]} image(s), MoRF + LeRF at 10..90 % (18 imputations and forwards per image); combined "
            f"score ours {out['ours']:.4f} vs theirs {out['peer']:.4f} (imputation noise differs)\n\n"
            + timing_table(times, "pytorch-grad-cam ROADCombined"))


def bench_sanity(m, x, repeats: int) -> str:
    from cnnscope.evaluate import explainer, randomization_units, sanity_check

    sal = explainer("saliency")
    targets = torch.zeros(x.shape[0], dtype=torch.long)
    n_steps = len(randomization_units(m, x)) + 1

    def bare() -> None:
        for _ in range(n_steps):
            sal(m, x, targets)

    def ours() -> None:
        sanity_check(m, x, {"saliency": sal}, target=targets)

    times = side_by_side({f"{n_steps} bare saliency calls": bare, "cnnscope sanity_check": ours}, repeats=repeats,
                         warmup=0)
    return (f"{x.shape[0]} image(s), cascading randomization of {n_steps - 1} units, 4 similarity measures\n\n"
            + timing_table(times, f"{n_steps} bare saliency calls"))


def method_table(m, images: dict, sanity_images: int, quick: bool, methods: list[str] | None,
                 resume: bool = False) -> tuple[str, str]:
    """Evaluate every method (one at a time, the rows saved to a temporary JSON after each, so a long run that is
    interrupted keeps what it measured; ``resume`` starts from those rows and skips the methods they hold)."""
    import json
    import tempfile
    from pathlib import Path

    from cnnscope.evaluate import MetricTable, available_methods, evaluate

    names = list(images)
    x = m.batch(list(images.values()))
    methods = methods or list(available_methods())
    opts = dict(step=224 * 8 if quick else 224, road_percentages=(20, 50, 80) if quick else tuple(range(10, 100, 10)))
    partial = Path(tempfile.gettempdir()) / "cnnscope_bench_evaluate_rows.json"
    table = MetricTable()
    if resume and partial.exists():
        table.rows = [tuple(r) for r in json.loads(partial.read_text()) if r[2] in names]
    t0 = time.perf_counter()
    k = min(sanity_images, len(names))
    for method in methods:
        if method in table.methods:
            continue
        ev = evaluate(m, x, [method], metrics=["deletion", "insertion", "road"], image_names=names,
                      batch_size=64, **opts)
        table.rows += ev.table.rows
        if k and method in CHEAP_FOR_SANITY:
            sv = evaluate(m, x[:k], [method], metrics=["sanity"], image_names=names[:k], batch_size=16)
            table.rows += [r for r in sv.table.rows if r[1] != "seconds"]
        partial.write_text(json.dumps(table.rows))
        log(f"   {method}: {(time.perf_counter() - t0) / 60:.1f} min so far (rows in {partial})")
    minutes = (time.perf_counter() - t0) / 60
    protocol = ("step 1792 (quick, NOT the RISE protocol)" if quick
                else "RISE protocol (step 224, 225 points, zero / blur 11x5 substrates)")
    note = (f"EfficientNet-Lite0 (embedded, pretrained), {len(names)} sample photos ({', '.join(names)}); classes: "
            f"each photo's top-1. Deletion/insertion: {protocol}; "
            f"ROAD at {list(opts['road_percentages'])} %, noise 0.01. Sanity (cascading, 12 units, value after full "
            f"randomization) on the first {k} photos, for the methods that need a few passes per map. "
            f"Mean ± std over photos; seconds / image is the map's cost on this (shared) machine; "
            f"{minutes:.0f} min in all.")
    return table.to_markdown(), note


def timing_sections(m, x, maps, args) -> list[tuple[str, str]]:
    """Sections 1-4: the side-by-side timings."""
    log("1/5 deletion curve")
    out = [("RISE deletion curve: ours vs bare forward vs one at a time",
            bench_deletion(m, x[:1], maps[:1], 896 if args.quick else 224, args.repeats, 64))]
    log("2/5 ROAD imputation")
    out.append(("ROAD imputation: ours vs pytorch-grad-cam", bench_imputation(args.repeats,
                                                                            112 if args.quick else 224)))
    log("3/5 ROAD end to end")
    out.append(("ROAD end to end: ours vs pytorch-grad-cam", bench_road(m, x[:1], maps[:1], args.repeats)))
    log("4/5 sanity check")
    out.append(("Sanity check: ours vs the bare explainer calls", bench_sanity(m, x[:1], args.repeats)))
    return out


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--table", choices=("full", "quick", "none"), default="full",
                    help="the method x metric table: full protocol on all sample photos, quick, or skip it")
    ap.add_argument("--sanity-images", type=int, default=3)
    ap.add_argument("--methods", default=None, help="comma-separated methods for the table (default: all)")
    ap.add_argument("--skip-timing", action="store_true", help="only the table")
    ap.add_argument("--resume", action="store_true", help="reuse the table rows an interrupted run saved")
    args = ap.parse_args()
    torch.manual_seed(0)

    from cnnscope import load_model, sample_images
    from cnnscope.evaluate import explainer

    m = load_model()
    photos = sample_images()
    x = m.batch([photos["chelsea"]] if args.quick else [photos["chelsea"], photos["coffee"]])
    sections: list[tuple[str, str]] = []
    if not args.skip_timing:
        with torch.no_grad():
            targets = m.module(x).argmax(1)
        cam = explainer("gradcam")(m, x, targets)[:, 0]
        maps = torch.nn.functional.interpolate(cam[:, None], size=(224, 224), mode="bilinear")[:, 0]
        sections = timing_sections(m, x, maps, args)
    body = "\n".join(f"### {t}\n\n{b}" for t, b in sections)
    if args.table != "none":
        log("5/5 method x metric table")
        names = ("chelsea", "coffee") if args.table == "quick" else None
        chosen = args.methods.split(",") if args.methods else None
        md, note = method_table(m, sample_images(names), 1 if args.table == "quick" else args.sanity_images,
                                args.table == "quick", chosen, args.resume)
        body += f"\n### Method x metric table\n\n{note}\n\n{md}"
    print(body)
    if args.append_results:
        path = append_results("Evaluation (bench_evaluate.py)" + (" — quick run" if args.quick else ""), body,
                              "benchmarks/bench_evaluate.py")
        log(f"appended to {path}")


if __name__ == "__main__":
    main()
