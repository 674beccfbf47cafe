"""A running explanation stops when its client disconnects: the flag is checked within every forward pass, the
lock and the queue slot are freed long before the job would have ended, and the model is left as it was."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.atlas import helpers
from tests.conformance import assert_unchanged

STEPS, STEP = 200, 0.05  # the slow method: 200 forward passes, 50 ms apart (at least 10 s if nothing stops it)
PHOTO = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(PHOTO).save(buf, format="PNG")
    return buf.getvalue()


def _multipart(methods: str) -> bytes:
    return (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png"
            b"\r\n\r\n" + _png() + b"\r\n--x\r\nContent-Disposition: form-data; name=\"methods\"\r\n\r\n"
            + methods.encode() + b"\r\n--x--\r\n")


def _post(port: int, methods: str) -> http.client.HTTPConnection:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    con.request("POST", "/api/explain", body=_multipart(methods),
                headers={"Content-Type": "multipart/form-data; boundary=x"})
    return con


@pytest.fixture()
def slow_method():
    """A registered method that runs ``STEPS`` forward passes ``STEP`` seconds apart; yields the list of passes it
    started, an event set at the first one and a list of callbacks called with the number of each pass before it
    runs."""
    from cnnscope.attribution import METHODS, Method, register_method

    passes: list[float] = []
    started = threading.Event()
    callbacks: list = []
    with METHODS.scoped():

        @register_method
        class SlowForwards(Method):
            """Many slow forward passes (a test method)."""

            name = "slow_forwards"
            title = "Slow forwards"
            reference = "test"

            def compute(self, x, scorer, layer):
                for _ in range(STEPS):
                    passes.append(time.perf_counter())
                    started.set()
                    for call in callbacks:
                        call(len(passes))
                    time.sleep(STEP)
                    with torch.no_grad():
                        self.module(x)
                return torch.zeros_like(x)

        yield passes, started, callbacks


def _wait(cond, seconds: float) -> float:
    """Seconds until ``cond()`` held (fails after ``seconds``)."""
    t0 = time.perf_counter()
    while not cond():
        assert time.perf_counter() - t0 < seconds, "timed out"
        time.sleep(0.01)
    return time.perf_counter() - t0


def test_a_disconnected_clients_running_job_is_cancelled(tiny_atlas, slow_method):
    from cnnscope.web import create_app, start_server

    passes, started, _ = slow_method
    app = create_app(tiny_atlas, model=helpers.tiny_model(), explain_queue=2)
    explainer = app.state.explainer
    srv = start_server(app)
    try:
        gone = _post(srv.port, "slow_forwards")
        assert started.wait(20)
        _wait(lambda: len(passes) >= 3, 5)  # running, holding the lock
        assert explainer.queue_state() | {"max_queue": 2} == {"queued": 1, "max_queue": 2, "running": True,
                                                              "skipped": 0, "cancelled": 0}
        t0 = time.perf_counter()
        gone.sock.shutdown(socket.SHUT_RDWR)
        gone.close()
        freed = _wait(lambda: explainer.queue_state()["queued"] == 0, 5)
        assert freed < 3.0 < STEPS * STEP  # well under the job's full time: the next poll (0.2 s), the next pass
        assert explainer.queue_state() == {"queued": 0, "max_queue": 2, "running": False, "skipped": 0,
                                           "cancelled": 1}
        ran = len(passes)
        assert ran < STEPS / 2
        nxt = _post(srv.port, "saliency")  # the next request gets the lock at once
        r = nxt.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and body["methods"] == ["saliency"] and body["units"]
        assert time.perf_counter() - t0 < 5.0 < STEPS * STEP
        time.sleep(3 * STEP)
        assert len(passes) == ran  # the cancelled job does not run on in the background
    finally:
        srv.stop()


def test_explain_panel_stops_within_a_forward_pass_and_leaves_the_model(slow_method):
    from cnnscope.web.explain_panel import Cancelled, explain_panel

    passes, _, callbacks = slow_method
    model = helpers.tiny_model()
    flag = threading.Event()
    flag.set()
    err = assert_unchanged(model.module, lambda: explain_panel(model, PHOTO, ["slow_forwards"], cancelled=flag))
    assert isinstance(err, Cancelled) and passes == []  # set before it started: nothing ran

    flag.clear()
    callbacks.append(lambda n: flag.set() if n == 3 else None)  # the client leaves during the third pass
    err = assert_unchanged(model.module, lambda: explain_panel(model, PHOTO, ["slow_forwards"], cancelled=flag))
    assert isinstance(err, Cancelled) and len(passes) == 3  # that pass's forward stopped the method
    callbacks.clear()

    passes.clear()
    out = explain_panel(model, PHOTO, ["saliency"], cancelled=threading.Event())  # a flag never set: a result
    assert out["methods"] == ["saliency"] and out["panel_png"] and passes == []
