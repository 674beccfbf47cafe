"""``cnnscope demo`` section 80 on the pretrained EfficientNet-Lite0 (quick), then that atlas in a real browser
(every artifact kind on a unit page) and the explain page on skimage's ``chelsea``.

Slow: it builds a real atlas on the CPU (feature visualizations, one dataset pass with receptive fields over the
sample photos, circuits).
"""

from __future__ import annotations

import pytest

from cnnscope.atlas import AtlasStore
from cnnscope.cli import main
from cnnscope.cli.atlas import DEMO_LAYERS
from tests.web.conftest import all_images_loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_atlas(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--only", "80", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    return out / "atlas"


def test_demo_section_80_builds_a_small_atlas(demo_atlas):
    with AtlasStore(demo_atlas) as st:
        assert st.integrity_check() == []
        assert [(r.name, r.built) for r in st.layers()] == [(name, 2) for name in DEMO_LAYERS]
        assert {"featurevis", "examples", "histogram", "circuit"} <= set(st.get_meta("kinds"))
        assert not st.get_meta("not_applicable")  # every kind applies to the demo layers
        assert st.get_meta("images")["images"] == 8  # the sample photos


@pytest.fixture(scope="module")
def demo_server(demo_atlas, browser):
    from cnnscope.web import start_server

    srv = start_server(demo_atlas)  # the explain page reloads the embedded model and checks its fingerprint
    try:
        yield srv
    finally:
        srv.stop()


def test_unit_page_of_every_kind_loads(demo_server, page, demo_atlas):
    deep = DEMO_LAYERS[-1]
    page.goto(demo_server.url + "/layer/" + deep)
    page.locator("#unit-grid a.tile").nth(1).click()
    page.wait_for_url(f"**/layer/{deep}/unit/1")
    n, broken = all_images_loaded(page)
    with AtlasStore(demo_atlas) as st:
        kinds = st.get_meta("kinds")
        # one picture per kind, but these: the diversity renders; the examples as tiles cut from their sheet (SVG)
        pictures = {"featurevis_diversity": st.get_meta("options")["diversity"], "examples": 0}
    # the kinds' pictures, and the circuit's thumbnail of each linked input and output
    links = page.locator("#circuit-links img").count()
    assert broken == [] and n == sum(pictures.get(k, 1) for k in kinds) + links
    for kind in kinds:
        assert page.locator(f"#kind-{kind} img").count() == pictures.get(kind, 1), kind
    # depthwise: unit 1 reads unit 1 of the layer before, which lists unit 1 among its outputs
    source = page.locator(f"#incoming a.link[data-layer='{DEMO_LAYERS[-2]}'][data-unit='1']")
    assert source.count() == 1 and links >= 1
    source.click()
    page.wait_for_url(f"**/layer/{DEMO_LAYERS[-2]}/unit/1")
    assert page.locator(f"#outgoing a.link[data-layer='{deep}'][data-unit='1']").count() == 1
    tiles = page.locator("#kind-examples svg.tile")
    assert tiles.count() >= 1 and "value" in tiles.first.get_attribute("aria-label")


def test_explain_chelsea(demo_server, page, samples, tmp_path):
    from cnnscope.images import save_image

    photo = save_image(samples["chelsea"], tmp_path / "chelsea.png")
    page.goto(demo_server.url + "/explain")
    assert page.locator("#explain-unavailable").count() == 0, page.inner_text("main")
    page.set_input_files("#image", str(photo))
    page.click("#explain-go")
    page.wait_for_selector("#panel")
    n, broken = all_images_loaded(page)
    assert broken == [] and page.evaluate("document.getElementById('panel').naturalWidth") > 200
    top = page.inner_text("#explain-result table").lower().splitlines()[1]
    assert any(cat in top for cat in ("egyptian cat", "tabby", "tiger cat")), top
