"""The Microscope-grade unit page in a real browser (Playwright driving Debian's Chromium) over the tiny atlas with
the real kinds: four diversity renders, labelled dataset examples that open their whole image with the box, linked
incoming and outgoing units, sorting a layer, keyboard navigation, and a label written in annotate mode found by
search after a restart. Skipped when playwright or /usr/bin/chromium is missing, unless CNNSCOPE_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import re

import pytest

from cnnscope.atlas import AtlasStore
from cnnscope.web import start_server
from tests.web.conftest import all_images_loaded

pytestmark = pytest.mark.browser


@pytest.fixture()
def rich_live(rich_atlas):
    srv = start_server(rich_atlas, explain=False)
    try:
        yield srv
    finally:
        srv.stop()


def test_unit_page_shows_renders_examples_and_circuits(rich_live, rich_atlas, page):
    with AtlasStore(rich_atlas) as st:
        incoming = st.incoming("features.5", 1)
    page.goto(rich_live.url + "/layer/features.5/unit/1")
    n, broken = all_images_loaded(page)
    assert broken == [] and n >= 5
    assert page.locator("#kind-featurevis_diversity img").count() == 4
    tiles = page.locator(".examples[data-which='top'] figure.example")
    assert tiles.count() >= 1
    caption = tiles.first.locator("figcaption").inner_text()
    assert re.match(r"^-?[0-9.e+-]+ img\d", caption), caption  # value and image name
    links = page.locator("#incoming a.link[href]")
    assert links.count() == len(incoming)
    assert [links.nth(k).get_attribute("data-unit") for k in range(links.count())] == [str(i["unit"]) for i in
                                                                                        incoming]
    links.first.click()
    page.wait_for_url(f"**/layer/features.3/unit/{incoming[0]['unit']}")
    back = page.locator("#outgoing a.link[data-layer='features.5'][data-unit='1']")
    assert back.count() == 1
    back.click()
    page.wait_for_url("**/layer/features.5/unit/1")
    # an example opens its whole image with the receptive-field box drawn
    tiles.first.locator("a").click()
    page.wait_for_url(re.compile(r".*/image/\d+\?layer=features\.5&unit=1&which=top"))
    assert page.locator("svg#whole-image rect.rf").count() >= 1
    n, broken = all_images_loaded(page)
    assert broken == []
    assert page.evaluate("document.querySelector('svg#whole-image image').getBBox().width") == 32


def test_sorting_and_keys(rich_live, rich_atlas, page):
    with AtlasStore(rich_atlas) as st:
        means = st.fact_values("features.5", "mean")
    page.goto(rich_live.url + "/layer/features.5")
    page.select_option("#sort", "mean")
    page.click("#apply")
    page.wait_for_url("**sort=mean**")
    shown = [int(u) for u in page.locator("#unit-grid a.tile").evaluate_all("ts => ts.map(t => t.dataset.unit)")]
    assert shown == sorted(means, key=lambda u: (-means[u], u))
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.unit") == str(shown[1])
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/layer/features.5/unit/{shown[1]}")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/layer/features.5/unit/{shown[1] + 1}" if shown[1] < 7 else "**/layer/features.5/unit/7")
    page.keyboard.press("u")
    page.wait_for_url("**/layer/features.5")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search"


def test_a_label_written_in_annotate_mode_is_found_after_a_restart(rich_atlas, tmp_path, page):
    labels = tmp_path / "labels.sqlite"
    srv = start_server(rich_atlas, explain=False, annotate=labels)
    try:
        page.goto(srv.url + "/layer/features.5/unit/6")
        page.fill("#label-input", "checkerboard")
        page.fill("#note-input", "fires on high-frequency noise")
        page.click("#label-save")
        page.wait_for_url("**/layer/features.5/unit/6")
        assert page.input_value("#label-input") == "checkerboard"
    finally:
        srv.stop()
    srv = start_server(rich_atlas, explain=False, annotate=labels)
    try:
        page.goto(srv.url + "/")
        page.fill("#search", "checker")
        page.press("#search", "Enter")
        page.wait_for_url("**/search?q=checker")
        hit = page.locator("#label-matches a")
        assert hit.count() == 1 and "features.5:6 checkerboard" in hit.inner_text()
        hit.click()
        page.wait_for_url("**/layer/features.5/unit/6")
    finally:
        srv.stop()
