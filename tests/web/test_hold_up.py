"""The server holds up: ASCII-only numbers, read-only storage, safe artifact types, a bounded explain queue that
decodes off the event loop, Host and Origin checks, a clear port-in-use line, cached counts and fast pages on a
20,000-unit atlas."""

from __future__ import annotations

import http.client
import io
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cnnscope.atlas import AtlasStore
from cnnscope.atlas.records import Artifact
from tests.atlas import helpers


def _png(size=(40, 30), value=128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _client(atlas, **options):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    return TestClient(create_app(atlas, **options))


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- numbers are ASCII digits ---------------------------------------------------------------------------------
NOT_NUMBERS = ["%C2%B2", "%D9%A3", "%EF%BC%93", "3%C2%B2", "1e3", "-1", "0x3", "1234567890123"]


def test_numeric_parts_are_ascii_digits_only(client):
    assert client.get("/layer/features.2/unit/3").status_code == 200  # unit 3 exists ...
    for bad in NOT_NUMBERS:  # ... but '٣' and '３' are not 3, and '²' is no number at all
        for path in (f"/layer/features.2/unit/{bad}", f"/layer/features.2?page={bad}", f"/artifact/{bad}",
                     f"/api/artifacts/{bad}", f"/api/layers/features.2/units/{bad}",
                     f"/api/layers/features.2?page={bad}"):
            r = client.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "must be a number" in r.text, path
    for q in ("%C2%B2", "features.2:%D9%A3", "features.2:%EF%BC%93", "%D9%A3", "features.2%20%C2%B2"):
        for route in ("/search", "/api/search"):
            r = client.get(f"{route}?q={q}", follow_redirects=False)
            assert r.status_code == 404, (route, q, r.status_code)
    assert client.get("/search?q=features.2:3", follow_redirects=False).headers["location"].endswith("/unit/3")


def test_explain_target_is_ascii_digits_only(tiny_atlas):
    calls = []
    with _client(tiny_atlas, model=helpers.tiny_model()) as c:
        explainer = c.app.state.explainer
        explainer._run = lambda image, methods, target, filename: calls.append(target) or {"panel_png": b"x"}
        r = c.post("/api/explain", files={"image": ("a.png", _png(), "image/png")}, data={"target": "3"})
        assert r.status_code == 200 and calls == ["3"]
    with _client(tiny_atlas, model=helpers.tiny_model()) as c:
        model = c.app.state.explainer._get_model()
        assert c.app.state.explainer._target(model, "3") == 3
        for bad in ("²", "٣", "３"):
            with pytest.raises(Exception) as info:
                c.app.state.explainer._target(model, bad)
            assert getattr(info.value, "status", None) == 400, bad
            r = c.post("/api/explain", files={"image": ("a.png", _png(), "image/png")},
                       data={"target": bad, "methods": "saliency"})
            assert r.status_code == 400, (bad, r.status_code, r.text[:200])


# -- read-only storage ----------------------------------------------------------------------------------------
def test_serving_creates_no_files_and_sees_a_later_build(tmp_path):
    helpers.build_tiny(tmp_path, max_units=6)
    before = _listing(tmp_path)
    assert "atlas.sqlite-wal" not in before
    store = AtlasStore(tmp_path)
    with _client(store) as c:
        for path in ("/", "/layer/features.2", "/layer/features.2/unit/0", "/api/health", "/api/model"):
            assert c.get(path).status_code == 200, path
        assert c.get("/api/health").json()["units"] == 6
        assert _listing(tmp_path) == before  # no -wal, no -shm, nothing else
        assert store.integrity_check() == []
        assert _listing(tmp_path) == before
        helpers.build_tiny(tmp_path)  # a build finishes the atlas while the server runs
        assert c.get("/api/health").json()["units"] == 24
        assert c.get("/layer/features.5/unit/15").status_code == 200
    store.close()


_READ_ONLY_SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[2])
from fastapi.testclient import TestClient
from cnnscope.web import create_app
with TestClient(create_app(sys.argv[1])) as c:
    codes = [c.get(p).status_code for p in ("/", "/layer/features.2", "/layer/features.2/unit/1", "/api/health")]
    print(codes, c.get("/api/health").json()["units"])
"""


def test_read_only_atlas_opens_and_serves(tmp_path):
    atlas = tmp_path / "atlas"
    helpers.build_tiny(atlas)
    cmd = [sys.executable, "-c", _READ_ONLY_SCRIPT, str(atlas), str(helpers.ROOT)]
    if os.geteuid() == 0:  # root writes through file modes: mount the folder read-only in a private namespace
        if not shutil.which("unshare"):
            pytest.skip("running as root without unshare: read-only storage cannot be made here")
        a = shlex.quote(str(atlas))
        cmd = ["unshare", "-m", "sh", "-c", f"mount --bind {a} {a} && mount -o remount,bind,ro {a} {a} && exec "
               + " ".join(shlex.quote(c) for c in cmd)]
    else:
        os.chmod(atlas / "atlas.sqlite", 0o444)
        os.chmod(atlas, 0o555)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(atlas, 0o755)
    if os.geteuid() == 0 and "mount" in out.stderr and out.returncode != 0 and "Traceback" not in out.stderr:
        pytest.skip(f"cannot mount read-only here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "[200, 200, 200, 200] 24", out.stdout
    assert sorted(os.listdir(atlas)) == ["atlas.sqlite"]


# -- artifacts: images and JSON only, sandboxed, checked ------------------------------------------------------
def _crafted(tmp_path):
    """A tiny atlas plus one unit whose artifacts are a PNG, JSON and an HTML page with script."""
    helpers.build_tiny(tmp_path, channels=[0])
    with AtlasStore(tmp_path, writable=True) as st:
        st.put_layer("extra", 9, "Conv2d", [4, 8, 8], 4, [0])
        st.write_unit("extra", 0, [Artifact("evil", "page", "text/html", b"<script>alert(1)</script>"),
                                   Artifact("evil", "pic", "image/png", _png()),
                                   Artifact("evil", "data", "application/json", b'{"a": 1}')], seconds=0.0)
        return {a.name: a.id for a in st.artifacts("extra", 0)}


def test_artifacts_only_as_images_or_json_with_nosniff_and_sandbox(tmp_path):
    ids = _crafted(tmp_path)
    with _client(tmp_path) as c:
        r = c.get(f"/artifact/{ids['page']}")
        assert r.status_code == 415 and "text/html" in r.text and "<script>alert" not in r.text
        assert r.headers["content-type"].startswith("text/html")  # the error page, not the artifact
        for name, mime in (("pic", "image/png"), ("data", "application/json")):
            r = c.get(f"/artifact/{ids[name]}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(mime)
            assert r.headers["x-content-type-options"] == "nosniff"
            csp = r.headers.get_list("content-security-policy")
            assert csp and all("sandbox" in v and "default-src 'none'" in v for v in csp), csp


def test_check_verifies_inline_artifacts(tmp_path):
    from cnnscope.cli import main

    helpers.build_tiny(tmp_path, channels=[0, 1])
    with AtlasStore(tmp_path) as st:
        assert st.integrity_check() == []
        art = st.artifacts("features.2", 1)[0]
        assert art.file is None and art.size > 0  # stored inside the database
    con = sqlite3.connect(tmp_path / "atlas.sqlite")
    with con:
        data = bytearray(con.execute("SELECT data FROM artifacts WHERE id=?", (art.id,)).fetchone()[0])
        data[-20] ^= 0xFF
        con.execute("UPDATE artifacts SET data=? WHERE id=?", (bytes(data), art.id))
        con.execute("UPDATE artifacts SET mime='text/html' WHERE id=(SELECT MIN(id) FROM artifacts WHERE size>0 "
                    "AND id != ?)", (art.id,))
    con.close()
    with AtlasStore(tmp_path) as st:
        problems = st.integrity_check()
    assert any(f"artifact {art.id}: its bytes" in p for p in problems), problems
    assert any("'text/html' is not served" in p for p in problems), problems
    assert len(problems) == 2
    assert main(["atlas", "info", str(tmp_path), "--check"]) == 1


# -- explain: off the event loop, bounded, cancelled with its client ------------------------------------------
def _big_png(w=6000, h=6000) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_pixel_limit_is_checked_before_decoding(tiny_atlas, monkeypatch):
    data = _big_png()
    assert len(data) < 200_000  # a small file that would decode to 36 megapixels
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    with _client(tiny_atlas, model=helpers.tiny_model(), max_pixels=1_000_000) as c:
        t0 = time.perf_counter()
        r = c.post("/api/explain", files={"image": ("bomb.png", data, "image/png")})
        assert r.status_code == 413 and "6000x6000 pixels is over the limit" in r.text
        assert time.perf_counter() - t0 < 2.0
    assert (6000, 6000) not in decoded


def _post_raw(port: int, body: bytes) -> http.client.HTTPConnection:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    con.request("POST", "/api/explain", body=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
    return con


def _multipart(png: bytes) -> bytes:
    return (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png"
            b"\r\n\r\n" + png + b"\r\n--x--\r\n")


def test_explain_queue_is_bounded_and_skips_gone_clients(tiny_atlas):
    from cnnscope.web import create_app, start_server

    app = create_app(tiny_atlas, model=helpers.tiny_model(), explain_queue=2)
    explainer = app.state.explainer
    release, runs = threading.Event(), []

    def slow_run(image, methods, target, filename):
        runs.append(filename)
        release.wait(30)
        return {"panel_png": b"png", "filename": filename}

    explainer._run = slow_run
    srv = start_server(app)
    try:
        first = _post_raw(srv.port, _multipart(_png()))
        deadline = time.monotonic() + 20
        while not runs:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.perf_counter()  # the event loop answers while an explanation runs
        health = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        health.request("GET", "/api/health")
        state = json.loads(health.getresponse().read())["explain"]
        assert time.perf_counter() - t0 < 1.0
        assert state["running"] and state["queued"] == 1 and state["max_queue"] == 2
        gone = _post_raw(srv.port, _multipart(_png()))  # waits behind the first, then its client leaves
        while explainer.queue_state()["queued"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        third = _post_raw(srv.port, _multipart(_png()))
        r = third.getresponse()
        assert r.status == 429 and r.getheader("Retry-After") == "10", r.status
        assert "try again" in r.read().decode()
        gone.sock.shutdown(socket.SHUT_RDWR)
        gone.close()
        while explainer.skipped == 0:  # noticed while it waits for the lock
            assert time.monotonic() < deadline
            time.sleep(0.02)
        release.set()
        r = first.getresponse()
        assert r.status == 200 and json.loads(r.read())["panel_png_base64"]
        while explainer.queue_state()["queued"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert len(runs) == 1  # the disconnected client's job never ran
    finally:
        release.set()
        srv.stop()


# -- Host and Origin ------------------------------------------------------------------------------------------
def test_host_allow_list_and_cross_origin_posts(tiny_atlas):
    from cnnscope.web import create_app, start_server

    srv = start_server(create_app(tiny_atlas, allowed_hosts=("atlas.lab",)))
    try:
        def get(host: str, path: str = "/api/health", method: str = "GET", headers=None, body=None) -> int:
            con = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            con.putrequest(method, path, skip_host=True)
            con.putheader("Host", host)
            for k, v in (headers or {}).items():
                con.putheader(k, v)
            con.putheader("Content-Length", "0")
            con.endheaders()
            r = con.getresponse()
            text = r.read().decode()
            con.close()
            if body is not None:
                body.append(text)
            return r.status

        port = srv.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "atlas.lab", f"ATLAS.lab:{port}"):
            assert get(host) == 200, host
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.2:{port}", "", "atlas.lab.evil.example"):
            assert get(host) == 400, host
        own = f"127.0.0.1:{port}"
        assert get(own, "/api/explain", "POST", {"Origin": "http://evil.example"}) == 403
        assert get(own, "/explain", "POST", {"Origin": "null"}) == 403
        assert get(own, "/api/explain", "POST", {"Sec-Fetch-Site": "cross-site"}) == 403
        said: list[str] = []
        assert get(own, "/api/explain", "POST", {"Origin": f"http://{own}"}, said) == 400
        assert "no image in the upload" in said[0]  # same origin: the explainer reads the (empty) upload
    finally:
        srv.stop()


# -- serve on a port in use -----------------------------------------------------------------------------------
def test_serve_on_a_port_in_use_says_so_first(tiny_atlas, capsys):
    from cnnscope.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_atlas), "--port", str(port)]) == 1
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert lines == [f"error: port {port} on 127.0.0.1 is in use; choose another with --port (--port 0 picks a "
                     "free one)"], lines


# -- cached counts, fast pages at scale -----------------------------------------------------------------------
def _traced(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = AtlasStore._connect

    def connect(self):
        con, immutable = real(self)
        con.set_trace_callback(seen.append)
        return con, immutable

    monkeypatch.setattr(AtlasStore, "_connect", connect)
    return seen


def test_index_and_health_answer_from_cached_counts(tmp_path, monkeypatch):
    helpers.build_tiny(tmp_path)
    con = sqlite3.connect(tmp_path / "atlas.sqlite")
    expected = con.execute("SELECT COUNT(*), SUM(size) FROM artifacts").fetchone()
    con.close()
    sql = _traced(monkeypatch)
    with _client(tmp_path) as c:
        assert c.get("/api/health").json()["units"] == 24
        summary = c.get("/api/model").json()["summary"]
        assert (summary["artifacts"], summary["artifact_bytes"]) == expected
        assert summary["kinds"] == [helpers.KIND]
        assert c.get("/").status_code == 200
    scans = [s for s in sql if "FROM artifacts" in s and "WHERE" not in s]  # a whole-table scan
    assert scans == [], scans


def test_atlas_without_counts_table_still_counts(tmp_path):
    helpers.build_tiny(tmp_path)
    with AtlasStore(tmp_path) as st:
        want = st.summary()
    con = sqlite3.connect(tmp_path / "atlas.sqlite")
    con.execute("DROP TABLE artifact_counts")
    con.commit()
    con.close()
    with AtlasStore(tmp_path) as st:  # read-only: one scan, cached
        assert st.summary() == want and st.integrity_check() == []
    with AtlasStore(tmp_path, writable=True) as st:  # a writer fills the table again
        assert st.summary() == want and st.integrity_check() == []
    con = sqlite3.connect(tmp_path / "atlas.sqlite")
    assert con.execute("SELECT SUM(n) FROM artifact_counts").fetchone()[0] == want["artifacts"]
    con.close()


def test_pages_of_a_20000_unit_atlas_stay_fast(tmp_path):
    thumb = _png((16, 16), 90)
    n = 20_000
    with AtlasStore(tmp_path, writable=True) as st:
        st.put_layer("big", 0, "Conv2d", [n, 4, 4], n, range(n))
        for u in range(n):
            st.write_unit("big", u, [Artifact(helpers.KIND, "map", "image/png", thumb),
                                     Artifact(helpers.KIND, "means", "application/json", None, numbers=[u])], 0.0)
    with _client(tmp_path) as c:
        for path in ("/", "/api/health", "/layer/big", "/layer/big?page=200", "/api/layers/big?page=417"):
            assert c.get(path).status_code == 200, path
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                r = c.get(path)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200
            assert sorted(times)[2] < 0.1, (path, times)
        assert c.get("/api/health").json()["units"] == n


# -- skipped images -------------------------------------------------------------------------------------------
def test_skipped_images_on_the_index_page(tmp_path, client):
    assert 'id="skipped-images"' not in client.get("/").text  # nothing skipped, nothing shown
    helpers.build_tiny(tmp_path, channels=[0])
    with AtlasStore(tmp_path, writable=True) as st:
        st.set_meta(skipped_images=[{"path": "photos/broken.jpg", "reason": "truncated JPEG"}], n_skipped_images=3)
    with _client(tmp_path) as c:
        html = c.get("/").text
    assert 'id="skipped-images"' in html and "3 image(s) could not be read" in html
    assert "photos/broken.jpg" in html and "truncated JPEG" in html and "2 more" in html
