"""The viewer in a real browser (Playwright driving Debian's Chromium) over the tiny atlas: model page -> layer
-> unit, every image loaded, previous/next (links and arrow keys), the search box.

Skipped when playwright or /usr/bin/chromium is missing, unless CNNSCOPE_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import pytest

from tests.web.conftest import all_images_loaded

pytestmark = pytest.mark.browser


def test_model_to_layer_to_unit(live, page):
    page.goto(live.url + "/")
    assert page.locator("a.layer-link").all_inner_texts() == ["features.2", "features.5"]
    page.click("a.layer-link >> text=features.5")
    page.wait_for_url("**/layer/features.5")
    tiles = page.locator("#unit-grid a.tile")
    assert tiles.count() == 16
    for k in range(16):
        tiles.nth(k).scroll_into_view_if_needed()  # thumbnails are lazy-loaded
    n, broken = all_images_loaded(page)
    assert n == 16 and broken == []
    tiles.nth(3).click()
    page.wait_for_url("**/layer/features.5/unit/3")
    assert page.locator("#unit-title").get_attribute("data-unit") == "3"
    n, broken = all_images_loaded(page)
    assert n == 1 and broken == []
    assert page.evaluate("document.querySelector('#kind-unit_mean img').naturalWidth") == 64  # 16 px map x 4


def test_previous_and_next(live, page):
    page.goto(live.url + "/layer/features.2/unit/6")
    page.click("#next")
    page.wait_for_url("**/layer/features.2/unit/7")
    page.click("#next")  # crosses into the next layer
    page.wait_for_url("**/layer/features.5/unit/0")
    page.click("#prev")
    page.wait_for_url("**/layer/features.2/unit/7")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url("**/layer/features.2/unit/6")
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/layer/features.2/unit/7")
    n, broken = all_images_loaded(page)
    assert n == 1 and broken == []


def test_search_box_finds_a_unit(live, page):
    page.goto(live.url + "/")
    page.fill("#search", "features.5:12")
    page.press("#search", "Enter")
    page.wait_for_url("**/layer/features.5/unit/12")
    assert page.locator("#unit-title").get_attribute("data-layer") == "features.5"
    page.fill("#search", "features.2")
    page.click("#search-go")
    page.wait_for_url("**/layer/features.2")
    resp = page.goto(live.url + "/search?q=featurs.5")
    assert resp.status == 404 and "did you mean features.5" in page.inner_text("#search-message")
    page.click("#search-matches a")
    page.wait_for_url("**/layer/features.5")
    page.errors.clear()  # Chromium logs the 404 response of the failed search as a console error
