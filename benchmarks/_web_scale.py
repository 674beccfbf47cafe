"""A generated large atlas for bench_web.py: ``layers`` x ``units`` units with the artifacts, facts, links and whole
images a real build writes (small placeholder pictures: the viewer's cost does not depend on their pixels), then
cold and warm latencies of the pages that must stay fast at that size."""

from __future__ import annotations

import http.client
import statistics
import time
from pathlib import Path

import numpy as np


def generate_atlas(out: Path, layers: int, units: int, seed: int = 0) -> float:
    """Write the atlas; returns the seconds it took."""
    from cnnscope.atlas import Artifact, AtlasStore
    from cnnscope.atlas.encode import jpeg_bytes, png_bytes
    from cnnscope.atlas.records import AtlasImage

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    picture = png_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    thumb = jpeg_bytes(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    photo = jpeg_bytes(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    kind_info = {"featurevis": {"title": "Feature visualization (channel)", "order": 10, "thumbnail": "thumbnail",
                                "artifacts": [["image", "image/png"], ["thumbnail", "image/jpeg"]]},
                 "histogram": {"title": "Activation histogram", "order": 30, "thumbnail": None,
                               "artifacts": [["histogram", "application/json"]]},
                 "examples": {"title": "Dataset examples", "order": 20, "thumbnail": None,
                              "artifacts": [["top", "application/json"]]},
                 "circuit": {"title": "Circuit", "order": 40, "thumbnail": None,
                             "artifacts": [["weights", "application/json"]]}}
    with AtlasStore(out, writable=True) as st:
        st.set_meta(model={"name": "generated", "input_size": [224, 224]}, fingerprint="generated",
                    kinds=list(kind_info), options={}, kind_info=kind_info)
        names = [f"blocks.{i}.act" for i in range(layers)]
        for i, name in enumerate(names):
            st.put_layer(name, i, "ReLU6", (units, 14, 14), units, range(units))
        for i, name in enumerate(names):
            for u in range(units):
                mean, mx = float(rng.normal()), float(rng.exponential(3))
                links = tuple({"layer": names[i - 1], "unit": int(s), "weight": float(rng.normal()),
                               "norm": float(rng.exponential())} for s in rng.choice(units, 6, replace=False)
                              ) if i else ()
                ids = rng.choice(5000, 3, replace=False)
                examples = [{"image_id": int(k), "name": f"img{k}", "label": None, "value": float(rng.exponential()),
                             "y": 3, "x": 4, "box": [10, 20, 60, 70], "cell": [2, 2 + 130 * n, 128, 128]}
                            for n, k in enumerate(ids)]
                st.write_unit(name, u, [
                    Artifact("featurevis", "image", "image/png", picture, {"value": mean, "dead": False},
                             facts={"dead": 0.0}),
                    Artifact("featurevis", "thumbnail", "image/jpeg", thumb, {"of": "image"}),
                    Artifact("histogram", "histogram", "application/json", None, {"mean": mean, "max": mx},
                             facts={"mean": mean, "max": mx, "fraction_positive": float(rng.random())}),
                    Artifact("examples", "top", "application/json", None, {"examples": examples},
                             images=tuple(AtlasImage(int(k), f"img{k}", None, "image/jpeg", photo, 224, 224)
                                          for k in ids)),
                    Artifact("circuit", "weights", "application/json", None, {"inputs": []}, links=links),
                ], seconds=0.0)
    return time.perf_counter() - t0


def timings(port: int, paths: list[str], repeats: int) -> tuple[float, float, float]:
    """Cold (first request) and warm p50/p95 milliseconds over ``paths`` (one client, keep-alive)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat = []
    cold = None
    for _ in range(repeats):
        for path in paths:
            t0 = time.perf_counter()
            con.request("GET", path)
            r = con.getresponse()
            r.read()
            dt = 1000 * (time.perf_counter() - t0)
            if r.status not in (200, 303):
                raise SystemExit(f"{path}: HTTP {r.status}")
            if cold is None:
                cold = dt
            else:
                lat.append(dt)
    con.close()
    lat.sort()
    return cold or 0.0, statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))]


def scale_section(work: Path, layers: int, units: int, start_server) -> str:
    """Generate the atlas, serve it in its own process, and time each page kind; a markdown section."""
    atlas = work / "scale_atlas"
    gen_s = generate_atlas(atlas, layers, units)
    proc, port = start_server(atlas)
    mid = f"blocks.{layers // 2}.act"
    pages = {
        "index page (`/`)": ["/"],
        "`/api/health`": ["/api/health"],
        f"layer page 1 ({units} units)": [f"/layer/{mid}"],
        "layer page, last page": [f"/layer/{mid}?page={(units + 47) // 48}"],
        "layer page sorted by mean": [f"/layer/{mid}?sort=mean"],
        "layer page, dead filter": [f"/layer/{mid}?show=dead"],
        "unit page (circuit in and out)": [f"/layer/{mid}/unit/{u}" for u in range(0, units, max(1, units // 20))],
        "whole image page": [f"/image/{k}?layer={mid}&unit=0" for k in range(0, 50)],
        "search `blocks.3.act:7` (303 to the unit)": ["/search?q=blocks.3.act%3A7"],
    }
    rows = []
    try:
        for name, paths in pages.items():
            if "image" in name:  # only ids the generator used
                import sqlite3

                con = sqlite3.connect(atlas / "atlas.sqlite")
                ids = [r[0] for r in con.execute("SELECT id FROM images LIMIT 50")]
                con.close()
                paths = [f"/image/{k}" for k in ids]
            cold, p50, p95 = timings(port, paths, repeats=5 if len(paths) < 5 else 2)
            rows.append((name, f"{cold:.1f}", f"{p50:.1f}", f"{p95:.1f}", "yes" if p95 < 100 else "**no**"))
    finally:
        proc.terminate()
        proc.wait(30)
    from _common import markdown_table

    body = (f"Generated atlas: {layers} layers x {units} units = {layers * units:,} units (5 artifacts each, facts, "
            f"6 links per unit, whole images), written in {gen_s:.0f} s; `cnnscope serve` in its own process, one "
            "client, keep-alive; cold = the first request after start-up.\n\n")
    body += markdown_table(rows, ("page", "cold ms", "p50 ms", "p95 ms", "p95 < 100 ms"))
    return body
