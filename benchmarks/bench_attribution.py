"""Attribution speed vs Captum and pytorch-grad-cam on EfficientNet-Lite0 at 224 px, side by side in one run.

Every comparison also checks that the maps agree: the max absolute difference of per-image min-max normalised
maps must be <= 1e-4. Goals:

1. Grad-CAM, batch 16: images/s >= Captum ``LayerGradCam`` and >= pytorch-grad-cam ``GradCAM``.
2. Occlusion, window 32, stride 16, one image, each side in its own fresh process (2 threads by default): the exact
   path >= 3x Captum ``Occlusion(perturbations_per_eval=16)`` on the first call of a fresh process (with the plan
   cache empty and warm: both are reported) and >= 5x on later calls; the approximate mode (Krypton's projective-field
   threshold) >= 10x, with its error against the exact map (Spearman correlation, max normalised difference).
3. Score-CAM over the 1280 channels of ``bn2``: >= 2x pytorch-grad-cam ``ScoreCAM``, peak memory stated (each
   run in a fresh process; peak RSS above the RSS before the call, sampled every 2 ms).
4. Integrated gradients, 50 steps: >= Captum ``IntegratedGradients`` (same quadrature and internal batch).

Contenders run interleaved (the order rotating every round); goals are judged on CPU time (`time.process_time`),
wall time is shown too, since the machine is shared. Needs the ``bench`` extra (captum, grad-cam).

    python benchmarks/bench_attribution.py [--repeats 3] [--threads 1] [--append-results] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import append_results, clocked, median, parser, side_by_side_cpu, side_by_side_user

TOL = 1e-4
NOTE = ("EfficientNet-Lite0 (pretrained), 224 px, skimage photos; max diff = max |a - b| of per-image min-max "
        f"normalised maps (tolerance {TOL:g}). Goals are judged on CPU time (time.process_time; 1 thread, occlusion "
        "2): the machine is shared, so wall time mostly measures waiting; wall-time ratios are given in parentheses.")


# -- helpers ---------------------------------------------------------------------------------------------
def norm01(m: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each image's map (any shape ``[B, ...]``)."""
    flat = m.detach().float().flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return (flat - lo) / (hi - lo).clamp(min=1e-12)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((norm01(a) - norm01(b)).abs().max())


def load():
    from cnnscope import load_model, sample_images

    model = load_model("efficientnet_lite0")
    photos = sample_images()
    return model, photos


# -- 1. Grad-CAM -----------------------------------------------------------------------------------------
def bench_gradcam(model, photos, repeats: int, quick: bool) -> dict:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cnnscope.attribution import attribute

    imgs = list(photos.values())
    batch = 4 if quick else 16
    x = model.preprocess([imgs[i % len(imgs)] for i in range(batch)])
    with torch.no_grad():
        target = model.module(x).argmax(1).tolist()
    theirs = copy.deepcopy(model.module)  # pytorch-grad-cam sets eval mode and writes parameter .grad
    cam = GradCAM(model=theirs, target_layers=[theirs.bn2])
    targets = [ClassifierOutputTarget(t) for t in target]
    lgc = LayerGradCam(model.module, model.module.bn2)
    out: dict = {}
    runs = {
        "cnnscope gradcam": lambda: out.__setitem__("ours", attribute(model, x, "gradcam", target=target).values),
        "captum LayerGradCam": lambda: out.__setitem__("captum", lgc.attribute(x, target=target,
                                                                               relu_attributions=True)),
        "pytorch-grad-cam GradCAM": lambda: out.__setitem__("gc", torch.from_numpy(cam(input_tensor=x,
                                                                                       targets=targets))),
    }
    times, wall = side_by_side_cpu(runs, repeats)
    cam.activations_and_grads.release()
    up = F.interpolate(out["ours"], size=(224, 224), mode="bilinear", align_corners=False)
    return {"name": "gradcam", "batch": batch, "times": times, "wall": wall, "images": batch, "repeats": repeats,
            "diffs": {"captum LayerGradCam": max_diff(out["ours"], out["captum"]),
                      "pytorch-grad-cam GradCAM": max_diff(up, out["gc"])},
            "goal": {"captum LayerGradCam": 1.0, "pytorch-grad-cam GradCAM": 1.0}}


# -- 2. Occlusion (fresh processes) -------------------------------------------------------------------------
OCCLUSION = {"window": 32, "stride": 16, "baseline": 0.0}


def occlusion_child(impl: str, threads: int, calls: int, out_path: str) -> None:
    """In this (fresh) process: ``calls`` occlusion maps of chelsea by ``impl`` (``captum``, ``exact`` or
    ``approx:TAU``); write each call's CPU/wall/user seconds, the first map and the plan. ``$CNNSCOPE_CACHE`` is set
    by the parent (an empty folder for a cold plan cache, a planned one for a warm cache)."""
    torch.set_num_threads(threads)
    model, photos = load()
    x = model.preprocess(photos["chelsea"])
    with torch.no_grad():
        target = int(model.module(x).argmax(1))
    if impl == "captum":
        from captum.attr import Occlusion

        occ = Occlusion(model.module)

        def run():
            return occ.attribute(x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0,
                                 target=target, perturbations_per_eval=16), {}
    else:
        from cnnscope.attribution import attribute

        opts = {} if impl == "exact" else {"approximate": float(impl.split(":")[1])}

        def run():
            a = attribute(model, x, "occlusion", target=target, **OCCLUSION, **opts)
            return a.values, {"incremental": a.spec["incremental"], "fold_bn": a.spec["fold_bn"]}

    rec, first = [], None
    for _ in range(calls):
        u0 = os.times()
        cpu, wall, got = clocked(run)
        u1 = os.times()
        rec.append({"cpu": cpu, "wall": wall, "user": u1.user - u0.user, "system": u1.system - u0.system})
        first = first or got
    floor = tail_floor(model, x, first[1]["incremental"]) if impl == "exact" else None
    torch.save({"calls": rec, "map": first[0], "spec": first[1], "floor": floor}, out_path)


def tail_floor(model, x: torch.Tensor, plan: dict, copies: int = 169, batch: int = 17) -> dict | None:
    """What no exact incremental plan ending at the plan's last split layer can beat: the layers after it (where a
    32-px window changes every position) run on every copy. Timed directly: full forwards of ``copies`` copies of
    the folded model in the plan's batches, counting the CPU and wall time from the last split layer's exit to the
    end of each forward."""
    if not plan.get("used"):
        return None
    from cnnscope.fastforward import fast_forward

    module = fast_forward(model, x).module
    last = dict(module.named_modules())[plan["layers"][-1]]
    marks: list[tuple[float, float]] = []
    handle = last.register_forward_hook(lambda *_: marks.append((time.process_time(), time.perf_counter())))
    xb = x.repeat(batch, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    cpu = wall = 0.0
    try:
        with torch.no_grad():
            module(xb)
            for k in range(0, copies, batch):
                marks.clear()
                module(xb[:min(batch, copies - k)])
                cpu += time.process_time() - marks[-1][0]
                wall += time.perf_counter() - marks[-1][1]
    finally:
        handle.remove()
    return {"layer": plan["layers"][-1], "cpu": cpu, "wall": wall}


def bench_occlusion(repeats: int, quick: bool, threads: int, tmp: Path, taus: list[float]) -> dict:
    """Fresh processes, interleaved rounds: Captum, our exact path with the plan cache empty (``cold``) and planned
    (``warm``), and the approximate mode likewise. Every figure is the best of the rounds (the machine is shared)."""
    calls = 2 if quick else 3
    impls = ["captum", "exact", *[f"approx:{t:g}" for t in taus]]
    warm = {i: tmp / f"warm-{i.replace(':', '-')}" for i in impls[1:]}

    def child(impl: str, cache: Path, tag: str) -> dict:
        path = tmp / f"occ-{tag}.pt"
        env = {**os.environ, "CNNSCOPE_CACHE": str(cache)}
        proc = subprocess.run([sys.executable, __file__, "--occlusion-child", impl, str(threads), str(calls),
                               str(path)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"occlusion run ({impl}) failed:\n{proc.stderr[-4000:]}")
        return torch.load(path, weights_only=False)

    for impl, folder in warm.items():  # plan once, so that the warm runs find a plan on disk
        child(impl, folder, f"plan-{impl}")
    runs: dict[str, list[dict]] = {}
    contenders = [("captum", "captum", None)] + [
        (f"{impl} {state}", impl, state) for impl in impls[1:] for state in ("cold", "warm")]
    for r in range(repeats):
        for k in range(len(contenders)):
            name, impl, state = contenders[(k + r) % len(contenders)]
            cache = warm.get(impl) if state == "warm" else tmp / f"cold-{r}-{k}"
            runs.setdefault(name, []).append(child(impl, cache or tmp / "none", f"{r}-{k}"))
    exact_map = runs["exact warm"][0]["map"]
    floors = [c["floor"] for name in ("exact cold", "exact warm") for c in runs[name] if c.get("floor")]
    from cnnscope.fastforward import map_error

    out = {"name": "occlusion", "repeats": repeats, "threads": threads, "rows": {}, "errors": {}, "plans": {},
           "floor": min(floors, key=lambda f: f["cpu"]) if floors else None}
    for name, rec in runs.items():
        first = {k: min(c["calls"][0][k] for c in rec) for k in ("cpu", "wall", "user", "system")}
        later = {k: min(min(x[k] for x in c["calls"][1:]) for c in rec) for k in ("cpu", "wall", "user", "system")}
        out["rows"][name] = {"first": first, "later": later}
        if name != "captum":
            out["plans"][name] = rec[0]["spec"]["incremental"]
            out["errors"][name] = map_error(rec[0]["map"], exact_map)
        else:
            out["errors"][name] = {"max_diff": max_diff(rec[0]["map"], exact_map)}
    return out


def occlusion_report(res: dict) -> str:
    rows = res["rows"]
    cap = rows["captum"]
    lines = [f"**Occlusion**, window 32, stride 16, one image (chelsea), {res['threads']} threads; every contender in "
             f"its own fresh process, {res['repeats']} interleaved rounds, best of the rounds. *First* = the first "
             "call in a fresh process (model loaded, nothing run yet); *later* = the best later call in that "
             "process. *cold*: the plan cache empty (the first call plans); *warm*: a plan on disk from an earlier "
             "process.", "",
             "| contender | first CPU s | first wall s | later CPU s | later wall s | vs Captum first CPU (wall) | "
             "vs Captum later CPU (wall) | goal | map vs exact |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        f, lt = r["first"], r["later"]
        sf, sfw = cap["first"]["cpu"] / f["cpu"], cap["first"]["wall"] / f["wall"]
        sl, slw = cap["later"]["cpu"] / lt["cpu"], cap["later"]["wall"] / lt["wall"]
        goal = ""
        if name.startswith("exact"):
            goal = f"first ≥3x: {'met' if sf >= 3 else 'NOT met'}; later ≥5x: {'met' if sl >= 5 else 'NOT met'}"
        elif name.startswith("approx"):
            goal = f"≥10x: first {'met' if sf >= 10 else 'NOT met'}, later {'met' if sl >= 10 else 'NOT met'}"
        err = res["errors"][name]
        err_s = (f"max diff {err['max_diff']:.1e}" if "spearman" not in err else
                 f"Spearman {err['spearman']:.4f}, max diff {err['max_diff']:.3f}")
        lines.append(f"| {name} | {f['cpu']:.2f} | {f['wall']:.2f} | {lt['cpu']:.2f} | {lt['wall']:.2f} | "
                     f"{sf:.2f}x ({sfw:.2f}x) | {sl:.2f}x ({slw:.2f}x) | {goal} | {err_s} |")
    lines += ["", "User and system CPU seconds (best of the rounds): " + "; ".join(
        f"{name} first {r['first']['user']:.2f} + {r['first']['system']:.2f}, later {r['later']['user']:.2f} + "
        f"{r['later']['system']:.2f}" for name, r in rows.items()) + ".", ""]
    if res.get("floor"):
        fl, cl = res["floor"], cap["later"]
        lines += [f"Floor of the exact path: the layers after `{fl['layer']}` on all 169 copies take {fl['cpu']:.2f} "
                  f"CPU s ({fl['wall']:.2f} wall) in full forwards of the folded model, so no exact plan ending "
                  f"there can beat {cl['cpu'] / fl['cpu']:.1f}x ({cl['wall'] / fl['wall']:.1f}x wall) Captum's "
                  "later call, even with a free prefix.", ""]
    for name, info in res["plans"].items():
        if name.endswith("warm"):
            lines.append(f"- {name}: split layers {' -> '.join(info.get('layers', []))} (estimated "
                         f"{info.get('estimated_cost', 0):.2f} of a full forward; plan from {info.get('plan')})"
                         if info.get("used") else f"- {name}: incremental inference not used: {info.get('reason')}")
    return "\n".join(lines) + "\n"


# -- 3. Score-CAM (fresh processes) ------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def scorecam_child(impl: str, image: str, threads: int, out_path: str) -> None:
    """Run one Score-CAM in this (fresh) process; write seconds, peak RSS increase and the map."""
    torch.set_num_threads(threads)
    model, photos = load()
    x = model.preprocess(photos[image])
    with torch.no_grad():
        target = int(model.module(x).argmax(1))
    if impl == "ours":
        from cnnscope.attribution import attribute

        def run():
            a = attribute(model, x, "scorecam", target=target, align_corners=True)
            return F.interpolate(a.values, size=(224, 224), mode="bilinear", align_corners=False)[:, 0], a.spec
    else:
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = ScoreCAM(model=model.module, target_layers=[model.module.bn2])
        cam.batch_size = 16  # its default

        def run():
            return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])), {}

    peak = [_rss()]
    before = peak[0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    cpu, seconds, (cam_map, spec) = clocked(run)
    done.set()
    th.join()
    torch.save({"seconds": seconds, "cpu": cpu, "peak_mb": (max(peak[0], _rss()) - before) / 2**20, "map": cam_map,
                "forwards": spec.get("scorecam_forwards")}, out_path)


def bench_scorecam(repeats: int, quick: bool, threads: int, tmp: Path) -> dict:
    images = ["chelsea"] if quick else ["chelsea", "astronaut"]
    impls = {"ours": "cnnscope scorecam", "theirs": "pytorch-grad-cam ScoreCAM"}
    per_image = {}
    for image in images:
        rec: dict[str, list[dict]] = {k: [] for k in impls}
        for r in range(repeats):
            for impl in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
                path = tmp / f"scorecam_{impl}_{image}_{r}.pt"
                proc = subprocess.run([sys.executable, __file__, "--scorecam-child", impl, image, str(threads),
                                       str(path)], capture_output=True, text=True)
                if proc.returncode != 0:  # pytorch-grad-cam prints progress bars on stderr: only show on failure
                    sys.exit(f"Score-CAM run ({impl}, {image}) failed:\n{proc.stderr[-4000:]}")
                rec[impl].append(torch.load(path, weights_only=False))
        diff = max_diff(rec["ours"][0]["map"], rec["theirs"][0]["map"])
        per_image[image] = {
            "times": {impls[k]: [v["cpu"] for v in rec[k]] for k in impls},
            "wall": {impls[k]: [v["seconds"] for v in rec[k]] for k in impls},
            "peak_mb": {impls[k]: max(v["peak_mb"] for v in rec[k]) for k in impls},
            "forwards": {impls["ours"]: rec["ours"][0]["forwards"], impls["theirs"]: 1280},
            "diff": diff,
        }
    return {"name": "scorecam", "images": images, "per_image": per_image, "repeats": repeats,
            "goal": {"pytorch-grad-cam ScoreCAM": 2.0}}


# -- 4. Integrated gradients -------------------------------------------------------------------------------
def bench_ig(model, photos, repeats: int, quick: bool) -> dict:
    from captum.attr import IntegratedGradients

    from cnnscope.attribution import attribute

    names = ["chelsea"] if quick else ["chelsea", "coffee"]
    x = model.preprocess([photos[n] for n in names])
    with torch.no_grad():
        target = model.module(x).argmax(1).tolist()
    steps, ibs = (8, 8) if quick else (50, 25)
    ig = IntegratedGradients(model.module)
    out: dict = {}
    runs = {
        "cnnscope integrated_gradients": lambda: out.__setitem__("ours", attribute(
            model, x, "integrated_gradients", target=target, n_steps=steps, batch_size=ibs).values),
        "captum IntegratedGradients": lambda: out.__setitem__("captum", ig.attribute(
            x, baselines=0.0, target=target, n_steps=steps, method="gausslegendre", internal_batch_size=ibs)),
        # ours also returns the completeness check f(x) - f(x') vs sum(attributions); this is Captum doing the same
        "captum IntegratedGradients + delta": lambda: ig.attribute(
            x, baselines=0.0, target=target, n_steps=steps, method="gausslegendre", internal_batch_size=ibs,
            return_convergence_delta=True),
    }
    times, wall, user = side_by_side_user(runs, repeats)
    return {"name": "integrated_gradients", "batch": len(names), "times": times, "wall": wall, "user": user,
            "images": len(names), "repeats": repeats,
            "steps": steps, "diffs": {"captum IntegratedGradients": max_diff(out["ours"], out["captum"])},
            "goal": {"captum IntegratedGradients": 1.0, "captum IntegratedGradients + delta": 1.0}}


# -- report ------------------------------------------------------------------------------------------------
def _goal(goal: float | None, speedup: float) -> str:
    return "" if goal is None else f"≥{goal:g}x: {'met' if speedup >= goal else 'NOT met'}"


def _diff(diff: float | None) -> str:
    return "" if diff is None else f"{diff:.1e} ({'ok' if diff <= TOL else 'DIFFERENT'})"


def report(results: list[dict]) -> str:
    """Markdown tables: CPU seconds (goals judged on these), wall seconds, speed-ups, map agreement."""
    lines = []
    for res in results:
        reps = res["repeats"]
        if res["name"] == "scorecam":
            lines += [f"**Score-CAM**, bn2 (1280 channels), one image per run, each run in a fresh process, {reps} "
                      "alternating runs (medians; peak = RSS above the RSS before the call):", "",
                      "| image | contender | CPU s | wall s | forwards | peak RSS | speed-up CPU (wall) | goal | "
                      "max diff |", "|---|---|---|---|---|---|---|---|---|"]
            for image, r in res["per_image"].items():
                ours, ours_w = median(r["times"]["cnnscope scorecam"]), median(r["wall"]["cnnscope scorecam"])
                for name, ts in r["times"].items():
                    sp, spw = median(ts) / ours, median(r["wall"][name]) / ours_w
                    diff = None if name.startswith("cnnscope") else r["diff"]
                    lines.append(f"| {image} | {name} | {median(ts):.1f} | {median(r['wall'][name]):.1f} | "
                                 f"{r['forwards'][name]} | {r['peak_mb'][name]:.0f} MB | {sp:.2f}x ({spw:.2f}x) | "
                                 f"{_goal(res['goal'].get(name), sp)} | {_diff(diff)} |")
            lines.append("")
            continue
        ours_name = next(n for n in res["times"] if n.startswith("cnnscope"))
        ours, ours_w = median(res["times"][ours_name]), median(res["wall"][ours_name])
        extra = f", {res['steps']} steps" if "steps" in res else ""
        lines += [f"**{res['name']}**, batch {res['batch']}{extra}, {reps} interleaved rounds (medians):", "",
                  "| contender | CPU s | wall s | images per CPU s | speed-up CPU (wall) | goal | max diff |",
                  "|---|---|---|---|---|---|---|"]
        for name, ts in res["times"].items():
            sp, spw = median(ts) / ours, median(res["wall"][name]) / ours_w
            lines.append(f"| {name} | {median(ts):.2f} | {median(res['wall'][name]):.2f} | "
                         f"{res['images'] / median(ts):.2f} | "
                         f"{sp:.2f}x ({spw:.2f}x) | {_goal(res['goal'].get(name), sp)} | "
                         f"{_diff(res['diffs'].get(name))} |")
        lines.append("")
        if "user" in res:
            ours_u = median(res["user"][ours_name])
            lines += ["User-mode CPU time alone (the compute, without page faults):", "",
                      "| contender | user s | system s | speed-up user |", "|---|---|---|---|"]
            for name, us in res["user"].items():
                sys_s = max(0.0, median([c - u for c, u in zip(res["times"][name], us)]))
                lines.append(f"| {name} | {median(us):.2f} | {sys_s:.2f} | {median(us) / ours_u:.2f}x |")
            lines.append("")
        if res.get("note"):
            lines += [res["note"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the Grad-CAM, IG and Score-CAM sections (1 by default: on a shared 2-core "
                         "machine 2 threads stall under load)")
    ap.add_argument("--occlusion-threads", type=int, default=2,
                    help="torch threads of the occlusion processes (the occlusion goals were set with 2)")
    ap.add_argument("--taus", default="0.5", help="projective-field thresholds of the approximate occlusion runs")
    ap.add_argument("--only", default="gradcam,occlusion,scorecam,ig", help="comma-separated sections")
    ap.add_argument("--scorecam-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--occlusion-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scorecam_child:
        impl, image, threads, path = args.scorecam_child
        scorecam_child(impl, image, int(threads), path)
        return
    if args.occlusion_child:
        impl, threads, calls, path = args.occlusion_child
        occlusion_child(impl, int(threads), int(calls), path)
        return
    torch.set_num_threads(args.threads)
    try:
        import captum  # noqa: F401
        import pytorch_grad_cam  # noqa: F401
    except ImportError as exc:
        sys.exit(f"bench_attribution needs the bench extra (pip install -e '.[bench]'): {exc}")
    import tempfile

    only = set(args.only.split(","))
    results, bodies = [], []
    if "occlusion" in only:
        print("== occlusion", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            occ = bench_occlusion(args.repeats, args.quick, args.occlusion_threads, Path(tmp),
                                  [float(t) for t in args.taus.split(",") if t])
        bodies.append(occlusion_report(occ))
        print(bodies[-1], flush=True)
    model, photos = load()
    for key, fn in (("gradcam", bench_gradcam), ("ig", bench_ig)):
        if key in only:
            print(f"== {key}", flush=True)
            results.append(fn(model, photos, args.repeats, args.quick))
            print(report(results[-1:]), flush=True)
    if "scorecam" in only:
        print("== scorecam", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            results.append(bench_scorecam(max(2, args.repeats - 1), args.quick, args.threads, Path(tmp)))
        print(report(results[-1:]), flush=True)
    body = "\n".join([*bodies, report(results)])
    summary = {r["name"]: {n: median(t) for n, t in r.get("times", {}).items()} for r in results}
    print(json.dumps(summary, indent=1))
    if args.append_results and not args.quick:
        path = append_results("bench_attribution.py: Grad-CAM, occlusion, Score-CAM, IG vs Captum and "
                              "pytorch-grad-cam", f"{NOTE}\n\n{body}", "benchmarks/bench_attribution.py")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
