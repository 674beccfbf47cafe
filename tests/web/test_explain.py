"""The explain page on EfficientNet-Lite0: real predictions and panels for skimage photos, nothing written."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from cnnscope.atlas import BuildOptions, build_atlas
from cnnscope.atlas.encode import decode_png
from tests.atlas import helpers
from tests.conformance import assert_unchanged

CATS = {"Egyptian cat", "tabby", "tiger cat"}


@pytest.fixture(scope="module")
def lite0_atlas(tmp_path_factory, lite0):
    out = tmp_path_factory.mktemp("lite0_small")
    build_atlas(lite0, out, ["blocks.1.1"], channels=0, kinds=["featurevis"], options=BuildOptions(steps=1, size=16))
    return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _snapshot(folder) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def client(lite0_atlas):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(lite0_atlas)) as c:  # reloads the embedded model and checks its fingerprint
        yield c


def test_explain_chelsea_api(client, lite0_atlas, samples):
    before = _snapshot(lite0_atlas)
    r = client.post("/api/explain", files={"image": ("chelsea.png", _png(samples["chelsea"]), "image/png")},
                    data={"methods": ["saliency", "gradcam"]})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["predictions"][0]["label"] in CATS and v["target"]["index"] == v["predictions"][0]["index"]
    assert v["methods"] == ["saliency", "gradcam"] and v["attribution"]["gradcam"]["layer"]
    assert v["skipped"] == {}  # both apply to Lite0 (a method that cannot apply is listed here with its reason)
    panel = decode_png(base64.b64decode(v["panel_png_base64"]))
    assert panel.shape[1] > 2 * panel.shape[0] > 200  # the photo and two overlays side by side
    assert _snapshot(lite0_atlas) == before  # nothing was written next to the atlas


def test_explain_page_with_a_chosen_target(client, samples):
    r = client.post("/explain", files={"image": ("coffee.jpg", _png(samples["coffee"]), "image/png")},
                    data={"methods": "gradcam", "target": "tabby"})
    assert r.status_code == 200, r.text[-500:]
    assert 'id="panel" src="data:image/png;base64,' in r.text
    assert '<strong id="explained">tabby (281)</strong>' in r.text
    assert "espresso" in r.text  # the prediction table still shows what the model sees


def test_explain_refuses_bad_choices(client, samples):
    img = {"image": ("chelsea.png", _png(samples["chelsea"][:64, :64]), "image/png")}
    r = client.post("/api/explain", files=img, data={"methods": "gradcm"})
    assert r.status_code == 400 and "did you mean gradcam" in r.json()["detail"]
    r = client.post("/api/explain", files=img, data={"methods": "saliency,gradcam,occlusion,rise,layercam"})
    assert r.status_code == 400 and "at most 4" in r.json()["detail"]
    r = client.post("/api/explain", files=img, data={"target": "tabbby cat"})
    assert r.status_code == 400 and "unknown class label" in r.json()["detail"]
    r = client.post("/api/explain", files=img, data={"target": "1000"})
    assert r.status_code == 400 and "out of range" in r.json()["detail"]
    info = client.get("/api/explain").json()
    assert info["available"] and "gradcam" in info["methods"] and info["default_methods"]


def test_explain_leaves_the_model_unchanged(lite0_atlas, lite0, samples):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with TestClient(create_app(lite0_atlas, model=lite0)) as c:
        ok = {"image": ("c.png", _png(samples["chelsea"]), "image/png")}
        assert assert_unchanged(lite0.module, lambda: c.post("/api/explain", files=ok,
                                                             data={"methods": "guided_backprop"})) is None
        assert assert_unchanged(lite0.module, lambda: c.post("/api/explain", files=ok,
                                                             data={"target": "no such class"})) is None
        app = create_app(lite0_atlas, model=lite0)
        assert assert_unchanged(lite0.module, lambda: app.state.explainer._run(
            samples["chelsea"], ["nonexistent"], "", "x")) is not None  # raised, and still unchanged


def test_explain_unavailable_for_a_user_module(tmp_path):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    helpers.build_tiny(tmp_path, max_units=1)
    with TestClient(create_app(tmp_path)) as c:
        assert "Not available" in c.get("/explain").text
        r = c.post("/api/explain", files={"image": ("a.png", _png(np.zeros((8, 8, 3), np.uint8)), "image/png")})
        assert r.status_code == 503 and "user module" in r.json()["detail"]
