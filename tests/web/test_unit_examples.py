"""The unit page shows dataset examples tile by tile, captioned with value, image name and class."""

from __future__ import annotations

import re

import pytest

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.web.views import example_tiles
from tests.atlas import helpers

LAYER, UNIT = "features.5", 3


@pytest.fixture(scope="module")
def examples_atlas(tmp_path_factory):
    """An atlas over a labelled source: class folders ``even/`` and ``odd/`` of the tiny images."""
    from PIL import Image

    out, images = tmp_path_factory.mktemp("examples_web"), tmp_path_factory.mktemp("classes")
    for k, (name, arr) in enumerate(helpers.tiny_images(6)):
        (images / ("even", "odd")[k % 2]).mkdir(exist_ok=True)
        Image.fromarray(arr).save(images / ("even", "odd")[k % 2] / f"{name}.png")
    build_atlas(helpers.tiny_model(), out, [LAYER], channels=[UNIT], source=f"classes:{images}", kinds=["examples"],
                options=BuildOptions(top_k=3, batch_size=6, pre_activation=True))
    return out


@pytest.fixture()
def page_client(examples_atlas):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(examples_atlas, explain=False)) as c:
        yield c


def _numbers(atlas) -> dict:
    with AtlasStore(atlas) as st:
        return {a.name: (a.id, a.numbers) for a in st.artifacts(LAYER, UNIT) if a.kind == "examples"}


def test_captions_show_value_and_name_of_every_example(examples_atlas, page_client):
    html = page_client.get(f"/layer/{LAYER}/unit/{UNIT}").text
    for which, (aid, nums) in _numbers(examples_atlas).items():
        assert nums["examples"], f"{which}: the tiny net's pre-activations have both signs"
        panel = re.search(rf'<div class="examples" data-which="{which}">(.*?)</div>', html, re.S)
        assert panel, which
        captions = re.findall(r'<span class="value">([^<]*)</span> <span class="name">([^<]*)</span> '
                              r'<span class="label">([^<]*)</span>', panel[1])
        assert captions == [(f"{e['value']:.4g}", e["name"], e["label"]) for e in nums["examples"]]
        assert {e["label"] for e in nums["examples"]} <= {"even", "odd"}
        assert all(e["name"].endswith(".png") for e in nums["examples"])
        top, left, h, w = nums["examples"][0]["cell"]
        assert f'viewBox="{left} {top} {w} {h}"' in panel[1] and f'href="/artifact/{aid}"' in panel[1]
    top_values = re.findall(r'data-which="top">.*?</div>', html, re.S)[0]
    assert all(float(v) > 0 for v in re.findall(r'data-value="([^"]+)"', top_values))


def test_the_json_api_carries_the_example_numbers(examples_atlas, page_client):
    unit = page_client.get(f"/api/layers/{LAYER}/units/{UNIT}").json()
    arts = {a["name"]: a for s in unit["sections"] for a in s["artifacts"] if a["kind"] == "examples"}
    assert {"top", "bottom"} <= set(arts)
    stored = _numbers(examples_atlas)["top"][1]["examples"]
    assert [(t["name"], t["label"]) for t in arts["top"]["tiles"]] == [(e["name"], e["label"]) for e in stored]


def test_class_labels_and_notes_are_shown():
    nums = {"sheet_size": [262, 132], "note": "",
            "examples": [{"value": 2.5, "name": "cat.jpg", "label": "cat", "cell": [2, 2, 128, 128]},
                         {"value": 1.0, "name": "dog.jpg", "label": None, "cell": [2, 132, 128, 128]}]}
    tiles = example_tiles(nums)
    assert [(t["value_text"], t["name"], t["label"]) for t in tiles] == [("2.5", "cat.jpg", "cat"),
                                                                          ("1", "dog.jpg", None)]
    assert tiles[1]["viewbox"] == "132 2 128 128"


@pytest.mark.parametrize("bad", [
    {"sheet_size": [100, 100], "examples": [{"value": 1.0, "name": "a", "cell": [2, 2, 128, 128]}]},  # off the sheet
    {"sheet_size": [262, 132], "examples": [{"value": "x", "name": "a", "cell": [2, 2, 128, 128]}]},
    {"sheet_size": [262, 132], "examples": [{"value": 1.0, "name": "a", "cell": [2, 2, 128]}]},
    {"examples": [{"value": 1.0, "name": "a", "cell": [2, 2, 128, 128]}]},
])
def test_malformed_example_numbers_fall_back_to_the_plain_picture(bad):
    assert example_tiles(bad) is None


def test_the_browser_shows_each_example_tile_with_its_caption(examples_atlas, page):
    """Chromium lays the tiles out at their cell size, each SVG's picture loads, captions are visible."""
    from cnnscope.web import start_server

    srv = start_server(examples_atlas)
    try:
        page.goto(f"{srv.url}/layer/{LAYER}/unit/{UNIT}")
        page.wait_for_load_state("load")
        tiles = page.locator('.examples[data-which="top"] svg.tile')
        assert tiles.count() == len(_numbers(examples_atlas)["top"][1]["examples"]) > 0
        box = tiles.first.bounding_box()
        assert (round(box["width"]), round(box["height"])) == (128, 128)
        assert page.locator('.examples[data-which="top"] figcaption .name').first.is_visible()
        loaded = page.evaluate("""async () => {
            const href = document.querySelector('.examples svg.tile image').getAttribute('href');
            const img = new Image(); img.src = href; await img.decode(); return img.naturalWidth;}""")
        assert loaded == _numbers(examples_atlas)["top"][1]["sheet_size"][0]
    finally:
        srv.stop()
