"""Benchmark of the atlas viewer: unit pages served per second and p95 latency under a bounded local load.

A small real atlas of EfficientNet-Lite0 is built first (feature visualizations of two layers, few steps), then
``cnnscope serve`` runs in its own process (uvicorn, one worker) and a fixed number of requests is sent from 1, 4
and 8 client threads with keep-alive connections. Measured side by side in one run, repeated, medians reported:

1. unit pages (HTML) per second and p50/p95 latency for 1, 4 and 8 clients (ratio 8 clients / 1 client);
2. the same load on the JSON unit API, the artifact PNGs and the layer pages (ratio to the HTML unit page);
3. unit pages while a build process writes new units into the same atlas (ratio to the idle server); every
   response must be 200;
4. on a generated atlas of ``--scale-units`` units (default 20,000 in 20 layers; 0 skips it): cold and warm latency
   of the index page, ``/api/health``, layer pages (first, last, sorted, filtered), unit pages with circuits, whole
   image pages and search. Goal: every p95 under 100 ms.

    python benchmarks/bench_web.py [--units 16] [--requests 400] [--repeats 3] [--scale-units 20000] [--quick]
                                   [--append-results]
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import append_results, machine_line, markdown_table, parser

LAYERS = ["blocks.3.2", "blocks.5.3"]
EXTRA_LAYER = "blocks.4.0"  # what the concurrent build adds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_cmd(out: Path, layers: list[str], units: int, steps: int) -> list[str]:
    return [sys.executable, "-m", "cnnscope", "atlas", "build", "efficientnet_lite0", "--layers", ",".join(layers),
            "--channels", f"0-{units - 1}", "--kinds", "featurevis", "--steps", str(steps), "--size", "64",
            "--units-per-chunk", "8", "--out", str(out), "--device", "cpu"]


def start_server(atlas: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnscope", "serve", str(atlas), "--port", str(port),
                             "--no-explain"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            con = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            con.request("GET", "/api/health")
            if con.getresponse().status == 200:
                con.close()
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read().decode()[-2000:]}")


def load(port: int, paths: list[str], requests: int, clients: int) -> dict:
    """Send ``requests`` GETs (paths round-robin) from ``clients`` threads; throughput and latency percentiles."""
    local = threading.local()
    lat: list[float] = []
    bad: list[tuple[str, int]] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        if not hasattr(local, "con"):
            local.con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        path = paths[k % len(paths)]
        t0 = time.perf_counter()
        local.con.request("GET", path)
        r = local.con.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        with lock:
            lat.append(dt)
            if r.status != 200:
                bad.append((path, r.status))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"rps": requests / wall, "p50_ms": 1000 * lat[len(lat) // 2],
            "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], "errors": len(bad)}


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=16, help="units per layer in the atlas")
    ap.add_argument("--requests", type=int, default=400, help="requests per measurement")
    ap.add_argument("--steps", type=int, default=2, help="feature-vis steps of the atlas (content, not speed)")
    ap.add_argument("--scale-units", type=int, default=20000, help="units of the generated atlas (0: skip)")
    args = ap.parse_args()
    if args.quick:
        args.units, args.requests, args.repeats, args.scale_units = 4, 60, 1, 400

    work = Path(tempfile.mkdtemp(prefix="bench_web_"))
    atlas = work / "atlas"
    t0 = time.perf_counter()
    subprocess.run(build_cmd(atlas, LAYERS, args.units, args.steps), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    build_s = time.perf_counter() - t0
    units = [f"/layer/{ly}/unit/{u}" for ly in LAYERS for u in range(args.units)]
    api = [f"/api/layers/{ly}/units/{u}" for ly in LAYERS for u in range(args.units)]
    import sqlite3

    con = sqlite3.connect(atlas / "atlas.sqlite")
    arts = [f"/artifact/{r[0]}" for r in con.execute("SELECT id FROM artifacts WHERE size > 0")]
    con.close()
    layers = [f"/layer/{ly}" for ly in LAYERS]

    proc, port = start_server(atlas)
    results: dict[str, list[dict]] = {}
    try:
        load(port, units, 50, 4)  # warm-up
        for _ in range(args.repeats):
            for clients in (1, 4, 8):
                results.setdefault(f"unit pages, {clients} client{'s' if clients > 1 else ''}", []).append(
                    load(port, units, args.requests, clients))
            for name, paths in (("JSON unit API", api), ("artifact PNGs", arts), ("layer pages", layers)):
                results.setdefault(f"{name}, 8 clients", []).append(load(port, paths, args.requests, 8))
            # a build process writing into the same atlas during the load (a new layer, so it is never done)
            extra = work / f"extra_{len(results['unit pages, 1 client'])}"
            builder = subprocess.Popen(build_cmd(atlas, LAYERS + [EXTRA_LAYER], args.units, args.steps),
                                       stdout=subprocess.DEVNULL, stderr=open(extra, "w"))
            time.sleep(8.0)  # let it load the model and start committing
            results.setdefault("unit pages, 8 clients, build writing", []).append(
                load(port, units, args.requests, 8))
            builder.kill()
            builder.wait()
    finally:
        proc.terminate()
        proc.wait(30)
    med = {k: median_of(v) for k, v in results.items()}
    base = med["unit pages, 8 clients"]
    ratios = {
        "8 clients / 1 client (unit pages/s)": base["rps"] / med["unit pages, 1 client"]["rps"],
        "JSON unit API / HTML unit page (req/s)": med["JSON unit API, 8 clients"]["rps"] / base["rps"],
        "artifact PNG / HTML unit page (req/s)": med["artifact PNGs, 8 clients"]["rps"] / base["rps"],
        "build writing / idle (unit pages/s)": med["unit pages, 8 clients, build writing"]["rps"] / base["rps"],
    }
    errors = sum(r["errors"] for v in results.values() for r in v)
    body = (f"Atlas of {2 * args.units} units ({', '.join(LAYERS)}; feature visualizations), built in {build_s:.1f}s; "
            f"`cnnscope serve` in its own process (uvicorn, one worker); {args.requests} GET requests per "
            f"measurement over keep-alive connections, every configuration once per round, median of {args.repeats} "
            "rounds.\n\n")
    body += markdown_table([(k, f"{v['rps']:.0f}", f"{v['p50_ms']:.1f}", f"{v['p95_ms']:.1f}", int(v["errors"]))
                            for k, v in med.items()], ("load", "req/s", "p50 ms", "p95 ms", "non-200"))
    body += "\n" + markdown_table([(k, f"{v:.2f}") for k, v in ratios.items()], ("ratio (same run)", "value"))
    body += (f"\nNon-200 responses in all runs: {errors}. The build-writing load shares the machine's cores with "
             "a feature-visualization build; SQLite WAL readers never wait for its commits.\n")
    if args.scale_units:
        from _web_scale import scale_section

        body += "\n" + scale_section(work, 20, max(1, args.scale_units // 20), start_server) + "\n"
    print(f"machine: {machine_line()}\n")
    print(body)
    print(json.dumps({"medians": med, "ratios": ratios}, indent=1))
    if args.append_results:
        path = append_results("Web viewer: unit pages per second and latency", body, "benchmarks/bench_web.py")
        print(f"appended to {path}")
    if errors:
        raise SystemExit(f"{errors} requests did not answer 200")


if __name__ == "__main__":
    main()
