"""Atlases and servers for the web tests (built once per session; the tiny one takes about a second)."""

from __future__ import annotations

import pytest

from tests.atlas import helpers


@pytest.fixture(scope="session")
def tiny_atlas(tmp_path_factory):
    """The tiny net's atlas: features.2 (8 units) and features.5 (16 units), test kind ``unit_mean``."""
    out = tmp_path_factory.mktemp("tiny_atlas")
    helpers.build_tiny(out)
    return out


@pytest.fixture()
def client(tiny_atlas):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(tiny_atlas)) as c:
        yield c


@pytest.fixture()
def live(tiny_atlas):
    """The tiny atlas served by uvicorn on 127.0.0.1 and a free port."""
    from cnnscope.web import start_server

    srv = start_server(tiny_atlas)
    try:
        yield srv
    finally:
        srv.stop()


# -- browser (Playwright + Debian's Chromium) -------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _browser_missing(reason: str) -> None:
    import os

    if os.environ.get("CNNSCOPE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (CNNSCOPE_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; skipped when either is missing (a failure in CI)."""
    from pathlib import Path

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("playwright is not installed (pip install playwright; its browsers are not needed)")
    if not Path(CHROMIUM).exists():
        _browser_missing("Debian's Chromium is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser):
    """A fresh browser page; console errors and page errors (CSP violations included) fail the test."""
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    try:
        yield pg
    finally:
        ctx.close()
    assert errors == [], errors


def all_images_loaded(pg) -> tuple[int, list[str]]:
    """``(number of <img>, sources of those that failed)`` once every image of the page has settled."""
    import time

    pg.wait_for_load_state("load")
    # lazy images below the fold load only when asked; polled from Python (a string predicate would be eval'd in
    # the page, which the viewer's CSP forbids)
    pg.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
    deadline = time.monotonic() + 60
    while not pg.evaluate("Array.from(document.images).every(i => i.complete)"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    broken = pg.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    return pg.evaluate("document.images.length"), broken


RICH_LAYERS = ["features.3", "features.5"]


@pytest.fixture(scope="session")
def rich_atlas(tmp_path_factory):
    """The tiny net with the real kinds: channel and four diversity renders, examples with whole images,
    histograms (facts) and circuits; ``features.5``'s circuits read ``features.3`` (the max-pool), so they link."""
    from cnnscope.atlas import BuildOptions, build_atlas

    out = tmp_path_factory.mktemp("rich_atlas")
    build_atlas(helpers.tiny_model(), out, RICH_LAYERS, channels=list(range(8)), source=helpers.tiny_images(6),
                kinds=["featurevis", "featurevis_diversity", "examples", "histogram", "circuit"],
                options=BuildOptions(steps=4, size=32, top_k=3, units_per_chunk=8, batch_size=6, circuit_k=3,
                                     diversity=4, seed=2))
    return out
