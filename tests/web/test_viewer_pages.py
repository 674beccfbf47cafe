"""The Microscope-grade pages on a tiny atlas with the real kinds: sorting and filtering a layer, circuits in and
out, whole images with the receptive-field box, the model overview and annotate mode; values checked against the
atlas's own records."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from cnnscope.atlas import AtlasStore
from cnnscope.web import create_app


@pytest.fixture()
def rich(rich_atlas):
    with TestClient(create_app(rich_atlas, explain=False)) as c:
        yield c


def _hist(atlas, layer: str) -> dict[int, dict]:
    with AtlasStore(atlas) as st:
        return {u: next(a.numbers for a in st.artifacts(layer, u) if a.kind == "histogram")
                for u in st.units(layer)}


def _grid_units(html: str) -> list[int]:
    return [int(u) for u in re.findall(r'class="tile" href="[^"]*" data-unit="(\d+)"', html)]


def test_layer_sorted_by_mean_and_max(rich, rich_atlas):
    hist = _hist(rich_atlas, "features.5")
    for fact in ("mean", "max", "fraction_positive"):
        r = rich.get(f"/layer/features.5?sort={fact}")
        assert r.status_code == 200
        want = sorted(hist, key=lambda u: (-hist[u][fact], u))
        assert _grid_units(r.text) == want
        asc = rich.get(f"/api/layers/features.5?sort={fact}&order=asc").json()
        assert [t["unit"] for t in asc["units"]] == sorted(hist, key=lambda u: (hist[u][fact], u))
        assert [t["value"] for t in asc["units"]] == pytest.approx([hist[u][fact] for u in
                                                                   sorted(hist, key=lambda u: (hist[u][fact], u))])
    assert _grid_units(rich.get("/layer/features.5?order=desc").text) == list(range(7, -1, -1))


def test_layer_filters_dead_and_alive_units(rich, rich_atlas):
    with AtlasStore(rich_atlas) as st:
        dead = {u for u in st.units("features.5") if next(a.numbers["dead"] for a in st.artifacts("features.5", u)
                                                          if a.kind == "featurevis" and a.name == "image")}
    alive = rich.get("/api/layers/features.5?show=alive").json()
    gone = rich.get("/api/layers/features.5?show=dead").json()
    assert {t["unit"] for t in gone["units"]} == dead and {t["unit"] for t in alive["units"]} == set(range(8)) - dead
    assert alive["matching"] + gone["matching"] == 8


@pytest.mark.parametrize("query", ["sort=colour", "order=sideways", "show=%C2%B2", "sort=dead"])
def test_bad_layer_queries_are_400(rich, query):
    r = rich.get(f"/layer/features.5?{query}")
    assert r.status_code == 400
    assert any(w in r.text for w in ("choose from", "one of", "asc or desc", "no dead/alive mark"))
    assert rich.get(f"/api/layers/features.5?{query}").status_code == 400


def test_thumbnails_on_the_layer_page_are_the_small_jpegs(rich):
    v = rich.get("/api/layers/features.5").json()
    assert v["thumbnail"] == {"kind": "featurevis", "name": "thumbnail"}
    r = rich.get(v["units"][0]["thumbnail"])
    assert r.headers["content-type"] == "image/jpeg" and len(r.content) < 8000


def test_unit_page_links_incoming_and_outgoing_units(rich, rich_atlas):
    with AtlasStore(rich_atlas) as st:
        incoming = st.incoming("features.5", 2)
    v = rich.get("/api/layers/features.5/units/2").json()
    assert [(i["layer"], i["unit"]) for i in v["circuit"]["incoming"]] == [(i["layer"], i["unit"]) for i in incoming]
    assert all(i["url"] == f"/layer/features.3/unit/{i['unit']}" and i["thumbnail"] for i in v["circuit"]["incoming"])
    html = rich.get("/layer/features.5/unit/2").text
    for i in incoming:
        assert f'href="/layer/features.3/unit/{i["unit"]}"' in html
        assert f"{i['weight']:+.3g}" in html
    # the other way: an input of unit 2 lists unit 2 among its outputs
    src = incoming[0]["unit"]
    out = rich.get(f"/api/layers/features.3/units/{src}").json()["circuit"]["outgoing"]
    assert ("features.5", 2) in [(o["layer"], o["unit"]) for o in out]
    assert 'id="outgoing"' in rich.get(f"/layer/features.3/unit/{src}").text


def test_example_tiles_open_the_whole_image_with_its_box(rich, rich_atlas):
    v = rich.get("/api/layers/features.5/units/1").json()
    top = next(a for s in v["sections"] for a in s["artifacts"] if s["kind"] == "examples" and a["name"] == "top")
    assert top["tiles"] and all(t["image_url"] for t in top["tiles"])
    tile = top["tiles"][0]
    page = rich.get(tile["image_url"])
    assert page.status_code == 200
    top_, left, bottom, right = tile["box"]
    assert f'<rect class="rf top" x="{left}" y="{top_}" width="{right - left}" height="{bottom - top_}"' in page.text
    data = rich.get(f"/api/images/{tile['image_id']}").json()
    assert data["image"]["name"] == tile["name"] and data["image"]["width"] == 32
    pic = rich.get(data["image"]["url"])
    assert pic.headers["content-type"] == "image/jpeg" and "sandbox" in pic.headers["content-security-policy"]
    assert pic.headers["x-content-type-options"] == "nosniff"
    with AtlasStore(rich_atlas) as st:
        assert pic.content == st.image(tile["image_id"])[1]
    for bad in ("/image/%C2%B2", "/image/99999", "/image/99999/picture", f"/image/{tile['image_id']}?layer=x&unit=1",
                f"/image/{tile['image_id']}?layer=features.5&unit=%D9%A3"):
        assert rich.get(bad).status_code == 404, bad


def test_model_page_draws_the_layer_overview(rich):
    html = rich.get("/").text
    bars = re.findall(r'<svg class="bar"[^>]*aria-label="(\d+) of (\d+) units"', html)
    assert bars == [("8", "8"), ("8", "16")]
    graph = rich.get("/api/model").json()["graph"]
    assert [g["name"] for g in graph] == ["features.3", "features.5"]
    assert graph[0]["filled"] == graph[0]["bar"] and graph[1]["filled"] == pytest.approx(graph[1]["bar"] / 2, abs=0.1)


def test_annotate_mode_labels_units_and_finds_them(rich_atlas, tmp_path):
    labels = tmp_path / "labels.sqlite"
    with TestClient(create_app(rich_atlas, explain=False, annotate=labels)) as c:
        page = c.get("/layer/features.5/unit/3").text
        assert 'id="label-form"' in page
        r = c.post("/api/labels/features.5/3", data={"label": "warm blob", "note": "likes orange"},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/layer/features.5/unit/3"
        assert 'value="warm blob"' in c.get("/layer/features.5/unit/3").text
        found = c.get("/api/search?q=BLOB").json()
        assert found["found"] and found["labelled"][0]["url"] == "/layer/features.5/unit/3"
        assert "warm blob" in c.get("/search?q=orange").text
        only = c.get("/api/layers/features.5?show=labelled").json()
        assert [t["unit"] for t in only["units"]] == [3] and only["units"][0]["label"] == "warm blob"
    with TestClient(create_app(rich_atlas, explain=False)) as c:  # not in annotate mode: nothing to write with
        assert 'id="label-form"' not in c.get("/layer/features.5/unit/3").text
        assert c.post("/api/labels/features.5/3", data={"label": "x"}).status_code in (404, 405)


def test_review_findings_answer_4xx(rich, rich_atlas, tmp_path):
    with AtlasStore(rich_atlas) as st:
        iid = next(iter(st.image_ids(list(range(50)))))
    assert rich.get(f"/image/{iid}?unit=0").status_code == 400
    assert rich.get(f"/api/images/{iid}?layer=features.5").status_code == 400
    assert rich.get("/layer/features.5?show=labelled").status_code == 400  # no labels without --annotate
    with TestClient(create_app(rich_atlas, explain=False, annotate=tmp_path / "l.sqlite")) as c:
        r = c.post("/api/labels/features.5/0/examples", data={"image_id": "9" * 5000, "y": "1", "x": "1",
                                                             "label": "a"})
        assert r.status_code == 400
        assert "no labelled band examples" in c.get("/api/labels/features.5/0/examples/figure.png").text
