"""Robustness of the live server: path traversal, bad uploads, default bind address, concurrent load while a
build writes to the same atlas."""

from __future__ import annotations

import http.client
import io
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from cnnscope.atlas import AtlasStore
from tests.atlas import helpers

TRAVERSALS = [
    "/static/../atlas.sqlite", "/static/..%2fatlas.sqlite", "/static/..%2Fatlas.sqlite", "/static/%2e%2e/atlas.sqlite",
    "/static/%2e%2e%2fatlas.sqlite", "/static/....//atlas.sqlite", "/static/..\\atlas.sqlite",
    "/static/%252e%252e%252fatlas.sqlite", "/static//etc/passwd", "/static/%2Fetc%2Fpasswd", "/static/etc/passwd",
    "/../../etc/passwd", "/..%2f..%2fetc%2fpasswd", "//etc/passwd", "/artifact/../atlas.sqlite",
    "/artifact/..%2F..%2Fatlas.sqlite", "/artifact/%2Fetc%2Fpasswd", "/artifact/-1", "/artifact/1e3",
    "/layer/..%2F..%2Fatlas.sqlite", "/layer/../../etc/passwd", "/layer/%2Fetc%2Fpasswd/unit/0",
    "/layer/features.2/unit/..%2F..%2Fatlas.sqlite", "/api/layers/..%2Fatlas.sqlite",
    "/api/artifacts/..%2F1", "/blobs/00/atlas.sqlite", "/atlas.sqlite", "/static/atlas.sqlite",
]


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (http.client does not normalise dot segments or escapes)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        con.putrequest("GET", path, skip_accept_encoding=True)
        con.endheaders()
        r = con.getresponse()
        return r.status, r.read()
    finally:
        con.close()


def test_path_traversal_gets_404(live, tiny_atlas):
    secret = (tiny_atlas / "atlas.sqlite").read_bytes()[:16]
    assert secret.startswith(b"SQLite format 3")
    for path in TRAVERSALS:
        status, body = _raw_get(live.port, path)
        assert status == 404, (path, status)
        assert b"SQLite format 3" not in body and b"root:" not in body, path


def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("route", ["/explain", "/api/explain"])
def test_bad_uploads_get_clear_4xx(tiny_atlas, route):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(tiny_atlas, max_upload_bytes=20_000, max_pixels=100_000)) as c:
        def post(files=None, data=None):
            return c.post(route, files=files, data=data)

        cases = [
            (post(files={"image": ("big.png", b"\x89PNG" + b"0" * 30_000, "image/png")}), 413, "over the limit"),
            (post(files={"image": ("notes.txt", b"hello, not an image", "text/plain")}), 415, "not an image"),
            (post(files={"image": ("empty.png", b"", "image/png")}), 400, "empty"),
            (post(data={"methods": "saliency"}), 400, "no image in the upload"),
            (post(files={"image": ("huge.png", _png((400, 300)), "image/png")}), 413,
             "400x300 pixels is over the limit of 100,000"),
            (post(files={"image": ("x.pdf", b"%PDF-1.4\n" + b"1" * 100, "application/pdf")}), 415, "not an image"),
        ]
        for resp, status, text in cases:
            assert resp.status_code == status, (resp.status_code, resp.text[:300])
            assert text in resp.text, resp.text[-600:]
        head = b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        r = c.post(route, content=head + b"0" * 100_000, headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413 and "over the limit of 20,000 bytes" in r.text
        chunked = (part for part in [head] + [b"0" * 10_000] * 10)  # no Content-Length: read until the cap
        r = c.post(route, content=chunked, headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
        r = c.post(route, content=head + b"0" * 100, headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 400  # truncated multipart: a clear 400, not a crash


def test_server_binds_localhost_by_default(monkeypatch, tiny_atlas):
    import inspect

    from cnnscope import web
    from cnnscope.cli import main

    assert inspect.signature(web.serve).parameters["host"].default == "127.0.0.1"
    srv = web.start_server(tiny_atlas)
    try:
        assert srv.host == "127.0.0.1" and srv.server.servers[0].sockets[0].getsockname()[0] == "127.0.0.1"
    finally:
        srv.stop()
    seen = {}
    monkeypatch.setattr(web, "serve", lambda app, host, port: seen.update(host=host, port=port))
    assert main(["serve", str(tiny_atlas)]) == 0
    assert seen == {"host": "127.0.0.1", "port": 8000}


def test_concurrent_requests_while_a_build_writes(tmp_path):
    """200 requests from 8 threads, all answered 200, while a build process commits units to the same atlas."""
    from cnnscope.web import start_server

    helpers.build_tiny(tmp_path, max_units=6)
    env = {**os.environ, "CNNSCOPE_TEST_KIND_SLEEP": "0.05", "PYTHONPATH": str(helpers.ROOT)}
    proc = subprocess.Popen([sys.executable, str(helpers.ROOT / "tests" / "atlas" / "helpers.py"), str(tmp_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    srv = start_server(tmp_path)
    try:
        with AtlasStore(tmp_path) as st:
            deadline = time.monotonic() + 120
            while st.summary()["units"] == 6:  # wait until the build process is writing
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.01)
            start_units = st.summary()["units"]
            art = st.artifacts("features.2", 0)[0].id
        paths = ["/", "/layer/features.2", "/layer/features.2/unit/3", "/api/layers/features.2/units/1",
                 f"/artifact/{art}", "/api/model", "/layer/features.5", "/search?q=features.2:2"]
        local = threading.local()

        def get(k: int) -> tuple[str, int]:
            if not hasattr(local, "con"):
                local.con = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            path = paths[k % len(paths)]
            local.con.request("GET", path)
            r = local.con.getresponse()
            r.read()
            return path, r.status

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(get, range(200)))
        with AtlasStore(tmp_path) as st:
            end_units = st.summary()["units"]
    finally:
        srv.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert [r for r in results if r[1] not in (200, 303)] == []
    assert sum(1 for _, s in results if s == 200) >= 175
    assert end_units > start_units or proc.returncode == 0  # the build really wrote during the load
    with AtlasStore(tmp_path) as st:
        assert st.integrity_check() == []
