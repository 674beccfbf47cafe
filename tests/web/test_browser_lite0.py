"""The viewer in a real browser over an atlas of the pretrained EfficientNet-Lite0 built with every available
artifact kind, and the explain page on skimage's ``chelsea`` (slow: builds a real atlas on the CPU).
"""

from __future__ import annotations

import pytest

from cnnscope.atlas import BuildOptions, build_atlas
from cnnscope.atlas.kinds import default_kinds
from tests.web.conftest import all_images_loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAYERS = ("blocks.1.1", "blocks.5.3")


@pytest.fixture(scope="module")
def lite0_server(tmp_path_factory, lite0, samples, browser):
    from cnnscope.web import start_server

    out = tmp_path_factory.mktemp("lite0_atlas")
    build_atlas(lite0, out, LAYERS, "0-1", images=[(n, samples[n]) for n in ("chelsea", "coffee")],
                kinds=default_kinds(with_images=True),
                options=BuildOptions(steps=4, size=64, top_k=2, batch_size=2, image_batch=2))
    srv = start_server(out)  # the explain page reloads the embedded model and checks its fingerprint
    try:
        yield srv
    finally:
        srv.stop()


def test_unit_page_of_every_kind_loads(lite0_server, page):
    page.goto(lite0_server.url + "/layer/blocks.5.3")
    page.locator("#unit-grid a.tile").nth(1).click()
    page.wait_for_url("**/layer/blocks.5.3/unit/1")
    n, broken = all_images_loaded(page)
    kinds = default_kinds(with_images=True)
    assert broken == [] and n == len(kinds)  # one picture per kind
    for kind in kinds:
        assert page.locator(f"#kind-{kind} img").count() == 1, kind


def test_explain_chelsea(lite0_server, page, samples, tmp_path):
    from cnnscope.images import save_image

    photo = save_image(samples["chelsea"], tmp_path / "chelsea.png")
    page.goto(lite0_server.url + "/explain")
    assert page.locator("#explain-unavailable").count() == 0, page.inner_text("main")
    page.set_input_files("#image", str(photo))
    page.click("#explain-go")
    page.wait_for_selector("#panel")
    n, broken = all_images_loaded(page)
    assert broken == [] and page.evaluate("document.getElementById('panel').naturalWidth") > 200
    preds = page.inner_text("#explain-result table").lower()
    assert "egyptian cat" in preds.splitlines()[1] or "tabby" in preds.splitlines()[1]
