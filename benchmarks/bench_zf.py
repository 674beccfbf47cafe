"""Benchmark of the Zeiler & Fergus toolkit: batched projections and batched occlusion.

1. Projections of single activations of AlexNet's conv5 (``features.10``, random weights, 224 px): the top-9 of
   several channels over a few images. Time per projection of
   - ours, batched: :func:`cnnscope.zf.top_projections` (one forward per image batch, many projections per
     deconvnet pass; includes finding the top activations);
   - ours, one at a time: the same projections, one :class:`~cnnscope.zf.DeconvNet` forward + backward each;
   - backward rule: :func:`cnnscope.zf.rule_projection` (relu_rule + autograd), one full forward/backward each;
   - captum ``NeuronDeconvolution`` (the peer library), one per projection.
   The projections of all four are compared (max difference relative to the largest value).
2. The occlusion study on EfficientNet-Lite0 (``chelsea``, 16 square positions): ``batch_size=16`` vs 1.

Runs alternate and repeat; medians are reported.

    python benchmarks/bench_zf.py [--images 16] [--channels 6] [--repeats 3] [--append-results]
"""

from __future__ import annotations

import warnings

import torch

from _common import append_results, median, parser, timed_call

LAYER = "features.10"


def projections(args) -> tuple[list[str], dict[str, list[float]]]:
    import torchvision
    from captum.attr import NeuronDeconvolution

    from cnnscope.images import sample_images
    from cnnscope.models import wrap
    from cnnscope.zf import DeconvNet, rule_projection, top_projections

    torch.manual_seed(0)
    net = torchvision.models.alexnet().eval()
    model = wrap(net, 224)
    photos = sample_images()
    imgs = {**photos, **{f"{n}-mirrored": a[:, ::-1].copy() for n, a in photos.items()}}  # 16 images
    imgs = dict(list(imgs.items())[:args.images])
    chans = list(range(args.channels))
    deconv = DeconvNet(model, LAYER)
    xs = {n: model.batch(a) for n, a in imgs.items()}

    def ours_batched():
        return top_projections(model, imgs, LAYER, channels=chans, k=9, batch_size=16)

    tp = ours_batched()  # warm-up, and the list of projections everyone computes
    jobs = [(tp.names[e.image_index], c, e.position) for c in chans for e in tp.entries[c]]

    def one_at_a_time():
        out = []
        for name, c, pos in jobs:
            trace = deconv.forward(xs[name])
            out.append(deconv.backward(trace, torch.zeros(1, dtype=torch.long), torch.tensor([c]),
                                       torch.tensor([pos]))[0])
        return out

    def backward_rule():
        return [rule_projection(net, xs[name], LAYER, channel=c, position=pos).values[0] for name, c, pos in jobs]

    nd = NeuronDeconvolution(net, net.features[10])
    acts: list[float] = []

    def captum():
        out = []
        acts.clear()
        for name, c, pos in jobs:
            with torch.no_grad():
                acts.append(float(net.features[:11](xs[name])[0, c, pos[0], pos[1]]))
            out.append(acts[-1] * nd.attribute(xs[name], neuron_selector=(c, *pos))[0])
        return out

    times: dict[str, list[float]] = {"batched": [], "one": [], "rule": [], "captum": []}
    results = {}
    for _ in range(args.repeats):
        for key, fn in (("batched", ours_batched), ("one", one_at_a_time), ("rule", backward_rule),
                        ("captum", captum)):
            dt, results[key] = timed_call(fn)
            times[key].append(dt / len(jobs))
    full = results["one"]  # the true deconvnet, one projection at a time: the reference
    # captum explains the unit with seed 1; scaled by the activation it is the deconvnet's reconstruction only when
    # the activation is positive (the rectifications are not odd functions), so only those are compared
    positive = [k for k, a in enumerate(acts) if a > 0]
    diffs = {}
    for key, keep in (("rule", range(len(jobs))), ("captum", positive)):
        diffs[key] = max(float((results[key][k] - full[k]).abs().max() / full[k].abs().max().clamp_min(1e-30))
                         for k in keep)
    crop = max(float((e.values - full[k][:, e.box[0]:e.box[2], e.box[1]:e.box[3]]).abs().max())
               for k, e in enumerate(e for c in chans for e in results["batched"].entries[c]))
    med = {k: median(v) for k, v in times.items()}
    lines = [
        f"AlexNet (random weights) {LAYER} at 224 px: {len(jobs)} projections (top-9 of {len(chans)} channels over "
        f"{len(imgs)} photos), {args.repeats} alternating repeats (medians, ms per projection)",
        f"- ours batched (top_projections, incl. the search): {1e3 * med['batched']:.1f} ms",
        f"- ours one at a time (DeconvNet forward+backward each): {1e3 * med['one']:.1f} ms "
        f"({med['one'] / med['batched']:.1f}x the batched time)",
        f"- backward-rule deconvnet (relu_rule + autograd): {1e3 * med['rule']:.1f} ms "
        f"({med['rule'] / med['batched']:.1f}x)",
        f"- captum NeuronDeconvolution: {1e3 * med['captum']:.1f} ms ({med['captum'] / med['batched']:.1f}x)",
        f"- agreement with the true deconvnet (max |diff| / max): backward rule {diffs['rule']:.1e} (all "
        f"{len(jobs)}), captum {diffs['captum']:.1e} ({len(positive)} with a positive activation); batched vs "
        f"one-at-a-time {crop:.1e} (absolute)",
    ]
    return lines, times


def occlusion(args) -> list[str]:
    from cnnscope import load_model
    from cnnscope.images import sample_images
    from cnnscope.zf import occlusion_study

    model = load_model()
    img = sample_images(["chelsea"])["chelsea"]
    run = {b: (lambda b=b: occlusion_study(model, img, "blocks.5", size=56, stride=56, batch_size=b))
           for b in (16, 1)}
    run[16]()  # warm-up
    times: dict[int, list[float]] = {16: [], 1: []}
    maps = {}
    for _ in range(args.repeats):
        for b in (16, 1):
            dt, maps[b] = timed_call(run[b])
            times[b].append(dt)
    same = float((maps[16].probability - maps[1].probability).abs().max())
    t16, t1 = median(times[16]), median(times[1])
    return [f"occlusion study, EfficientNet-Lite0, chelsea, 16 square positions (+ the projection), "
            f"{args.repeats} alternating repeats (medians)",
            f"- batch_size=16: {t16:.2f} s; batch_size=1: {t1:.2f} s; speed-up {t1 / t16:.2f}x "
            f"(probability maps agree to {same:.1e})"]


def main() -> None:
    ap = parser(__doc__.splitlines()[0], quick=False)
    ap.add_argument("--images", type=int, default=16, help="photos searched (at most 16: 8 samples, mirrored)")
    ap.add_argument("--channels", type=int, default=6)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", module="captum")  # it announces its own ReLU hooks on every call
    lines, _ = projections(args)
    lines += occlusion(args)
    print("\n".join(lines))
    if args.append_results:
        append_results("bench_zf.py: batched deconvnet projections and occlusion", "\n".join(lines),
                       "benchmarks/bench_zf.py")


if __name__ == "__main__":
    main()
