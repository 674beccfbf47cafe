"""The viewer's pages and JSON API over a real (tiny) atlas, through FastAPI's test client."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cnnscope.atlas import AtlasStore
from cnnscope.atlas.encode import decode_png


def _links(html: str, pattern: str) -> list[str]:
    return re.findall(rf'href="({pattern})"', html)


def test_model_page_lists_layers(client, tiny_atlas):
    r = client.get("/")
    assert r.status_code == 200 and "tiny_inplace" in r.text
    assert _links(r.text, "/layer/[^\"]+") == ["/layer/features.2", "/layer/features.5"]
    api = client.get("/api/model").json()
    assert [(ly["name"], ly["shape"], ly["built"]) for ly in api["layers"]] == [
        ("features.2", [8, 32, 32], 8), ("features.5", [16, 16, 16], 16)]
    assert api["kinds"] == [{"name": "unit_mean", "title": "Mean activation (test kind)"}]
    assert api["summary"]["units"] == 24


def test_layer_grid_thumbnails_are_the_stored_pictures(client, tiny_atlas):
    r = client.get("/layer/features.2")
    assert r.status_code == 200
    units = _links(r.text, r"/layer/features\.2/unit/\d+")
    assert units == [f"/layer/features.2/unit/{u}" for u in range(8)]
    thumbs = re.findall(r'<img src="(/artifact/\d+)" loading="lazy"', r.text)
    assert len(thumbs) == 8
    with AtlasStore(tiny_atlas) as st:
        for u, url in enumerate(thumbs):
            served = client.get(url)
            assert served.status_code == 200 and served.headers["content-type"] == "image/png"
            rec, data = st.artifact_bytes(int(url.rsplit("/", 1)[1]))
            assert (rec.layer, rec.unit, rec.name) == ("features.2", u, "map")
            np.testing.assert_array_equal(decode_png(served.content), decode_png(data))


def test_pagination(tiny_atlas):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(tiny_atlas, page_size=5)) as c:
        pages = [c.get("/api/layers/features.5", params={"page": p}).json() for p in (1, 2, 3, 4)]
        assert [[u["unit"] for u in p["units"]] for p in pages] == [
            [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15]]
        assert pages[0]["pages"] == 4 and pages[0]["prev_page"] is None and pages[3]["next_page"] is None
        html = c.get("/layer/features.5?page=2").text
        assert 'rel="prev" id="prev-page" href="?page=1"' in html and 'href="?page=3"' in html
        for bad in ("5", "0", "abc", "-1"):
            r = c.get(f"/layer/features.5?page={bad}")
            assert r.status_code == 404, bad


def test_unit_page_and_navigation(client, tiny_atlas):
    r = client.get("/layer/features.2/unit/7")
    assert r.status_code == 200
    assert 'rel="prev" id="prev" href="/layer/features.2/unit/6"' in r.text
    assert 'rel="next" id="next" href="/layer/features.5/unit/0"' in r.text  # crosses into the next layer
    first = client.get("/layer/features.2/unit/0").text
    assert 'rel="prev"' not in first and 'href="/layer/features.2/unit/1"' in first
    assert 'rel="next"' not in client.get("/layer/features.5/unit/15").text
    v = client.get("/api/layers/features.2/units/7").json()
    assert v["prev"]["url"] == "/layer/features.2/unit/6" and v["next"]["url"] == "/layer/features.5/unit/0"
    [section] = v["sections"]
    assert section["kind"] == "unit_mean" and [a["name"] for a in section["artifacts"]] == ["map", "means"]
    with AtlasStore(tiny_atlas) as st:
        stored = {a.name: a for a in st.artifacts("features.2", 7)}
    assert section["artifacts"][1]["numbers"] == stored["means"].numbers
    assert section["artifacts"][0]["url"] == f"/artifact/{stored['map'].id}"
    assert section["artifacts"][1]["url"] is None
    for a in section["artifacts"]:
        assert f'id="artifact-{a["id"]}"' in r.text


@pytest.mark.parametrize("query,where", [
    ("features.5:3", "/layer/features.5/unit/3"), ("features.5 3", "/layer/features.5/unit/3"),
    ("features.5/3", "/layer/features.5/unit/3"), ("features.5#3", "/layer/features.5/unit/3"),
    ("features.5", "/layer/features.5"), ("features.2:0", "/layer/features.2/unit/0"),
    ("12", "/layer/features.5/unit/12"),  # only features.5 has a unit 12
])
def test_search_redirects(client, query, where):
    r = client.get("/search", params={"q": query}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == where
    assert client.get("/api/search", params={"q": query}).json()["redirect"] == where


def test_search_without_a_single_answer(client):
    r = client.get("/search", params={"q": "features"})
    assert r.status_code == 200 and "2 layers match" in r.text
    assert _links(r.text, "/layer/features\\.[25]") == ["/layer/features.2", "/layer/features.5"]
    r = client.get("/search", params={"q": "featurs.5"})
    assert r.status_code == 404 and "did you mean" in r.text and 'href="/layer/features.5"' in r.text
    r = client.get("/search", params={"q": "features.5:99"})
    assert r.status_code == 404 and "built: 0-15" in r.text
    assert client.get("/api/search", params={"q": "3"}).json()["matches"] == [
        {"label": "features.2:3", "url": "/layer/features.2/unit/3"},
        {"label": "features.5:3", "url": "/layer/features.5/unit/3"}]


def test_unknown_pages_are_helpful_404s(client):
    r = client.get("/layer/features.6")
    assert r.status_code == 404 and "did you mean" in r.text and 'href="/layer/features.5"' in r.text
    r = client.get("/layer/features.2/unit/12")
    assert r.status_code == 404 and "unit 12 of layer" in r.text and "has 8 channels" in r.text
    r = client.get("/layer/features.2/unit/x1")
    assert r.status_code == 404 and "must be a number" in r.text
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "start from the model page" in r.text and 'href="/"' in r.text
    r = client.get("/api/layers/nope/units/0")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "unknown layer 'nope'" in r.json()["detail"]
    numbers_only = client.get("/api/layers/features.2/units/0").json()["sections"][0]["artifacts"][1]["id"]
    r = client.get(f"/artifact/{numbers_only}")
    assert r.status_code == 404 and f"/api/artifacts/{numbers_only}" in r.text
    assert client.get(f"/api/artifacts/{numbers_only}").json()["numbers"]["per_image"]


def test_read_only_and_headers(client):
    assert client.post("/layer/features.2").status_code == 405
    assert client.delete("/api/artifacts/1").status_code == 405
    r = client.get("/")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    art = client.get("/artifact/1")
    again = client.get("/artifact/1", headers={"If-None-Match": art.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_circuit_links_and_not_applicable_kinds(tmp_path):
    from fastapi.testclient import TestClient

    from cnnscope.atlas import BuildOptions, build_atlas, list_kinds
    from cnnscope.web import create_app
    from tests.atlas import helpers

    if "circuit" not in {k.name for k in list_kinds() if k.unavailable() is None}:
        pytest.skip("cnnscope.dataset.circuits is not installed")
    build_atlas(helpers.tiny_model(), tmp_path, ["features.3", "features.5"], channels="0-7",
                kinds=["circuit", "featurevis"], options=BuildOptions(steps=1, size=16, circuit_k=3))
    with TestClient(create_app(tmp_path)) as c:
        v = c.get("/api/layers/features.5/units/2").json()
        circuit = next(s for s in v["sections"] if s["kind"] == "circuit")
        inputs = [it["unit"] for it in circuit["artifacts"][0]["numbers"]["inputs"]]
        assert [ln["url"] for ln in v["links"]] == [f"/layer/features.3/unit/{u}" for u in inputs]
        html = c.get("/layer/features.5/unit/2").text
        assert 'id="circuit-links"' in html and f'href="/layer/features.3/unit/{inputs[0]}"' in html
        html = c.get("/layer/features.3/unit/0").text
        assert "Not available for this layer" in html and "MaxPool2d" in html
