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
