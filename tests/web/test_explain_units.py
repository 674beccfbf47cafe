"""The explain page lists the units of a chosen atlas layer that fire most on the uploaded picture: their values
equal an independent forward pass, and only the units the atlas holds are linked."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.images import to_float
from tests.atlas import helpers

PHOTO = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _upload(arr: np.ndarray = PHOTO) -> dict:
    return {"image": ("photo.png", _png(arr), "image/png")}


def _expected(model, image: np.ndarray, module: torch.nn.Module, k: int = 12) -> list[tuple[int, float]]:
    """``(unit, max over positions)`` of ``module``'s output, strongest first, from a plain forward hook on the
    picture brought to the model's input as the atlas's dataset pass does (fitted once)."""
    got = []
    handle = module.register_forward_hook(lambda mod, inp, out: got.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model.module.eval()
            model.module(model.to_input(to_float([model.fit_image(image)])))
    finally:
        handle.remove()
    peak = got[0][0].flatten(1).amax(1)
    order = sorted(range(peak.numel()), key=lambda u: (-float(peak[u]), u))[:k]
    return [(u, float(peak[u])) for u in order]


@pytest.fixture(scope="module")
def partial_atlas(tmp_path_factory):
    """The tiny net's atlas with every unit of features.2 and only some of features.5 built."""
    out = tmp_path_factory.mktemp("partial_atlas")
    helpers.build_tiny(out, max_units=12)
    return out


@pytest.fixture()
def partial(partial_atlas):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    model = helpers.tiny_model()
    with TestClient(create_app(partial_atlas, model=model)) as c:
        yield c, model, AtlasStore(partial_atlas)


def test_listed_values_equal_a_forward_hook_and_links_only_built_units(partial):
    c, model, store = partial
    built = set(store.units("features.5"))
    assert 0 < len(built) < 12  # some of the 16 listed units are built, others are not
    r = c.post("/api/explain", files=_upload(), data={"methods": "saliency"})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["layer"] == "features.5"  # the default: the last layer with built units
    assert v["units_value"] == "maximum over positions of the unit's activation" and v["units_error"] is None
    want = _expected(model, PHOTO, model.module.features[5])
    assert [u["unit"] for u in v["units"]] == [u for u, _ in want]
    assert [u["value"] for u in v["units"]] == pytest.approx([val for _, val in want], rel=1e-5, abs=1e-6)
    for u in v["units"]:
        assert u["built"] == (u["unit"] in built)
        assert u["url"] == (f"/layer/features.5/unit/{u['unit']}" if u["built"] else None)
        assert (u["thumbnail"] is not None) == u["built"]
        if u["thumbnail"]:
            assert c.get(u["thumbnail"]).headers["content-type"] == "image/png"
    assert any(not u["built"] for u in v["units"]) and any(u["built"] for u in v["units"])


def test_the_page_offers_every_layer_and_lists_a_chosen_one(partial):
    c, model, store = partial
    form = c.get("/explain").text
    assert '<select id="layer" name="layer">' in form
    assert form.index('value="features.2"') < form.index('value="features.5"')  # model order
    assert '<option value="features.5" selected>' in form
    info = c.get("/api/explain").json()
    assert info["layers"] == ["features.2", "features.5"] and info["default_layer"] == "features.5"
    r = c.post("/explain", files=_upload(), data={"methods": "saliency", "layer": "features.2"})
    assert r.status_code == 200, r.text[-500:]
    assert '<option value="features.2" selected>' in r.text  # the choice is kept for the next upload
    assert "maximum over positions of the unit&#39;s activation" in r.text
    want = _expected(model, PHOTO, model.module.features[2])
    assert len(want) == 8  # the layer has 8 units, all built: each is linked with its thumbnail
    for u, val in want:
        assert f'<a class="tile" href="/layer/features.2/unit/{u}" data-unit="{u}">' in r.text
        assert f"unit {u} · {val:.4g}</span>" in r.text
    assert "not built" not in r.text
    r = c.post("/explain", files=_upload(), data={"methods": "saliency", "layer": "features.5"})
    tiles = r.text.split('id="image-units"')[1]
    unbuilt = [u for u, _ in _expected(model, PHOTO, model.module.features[5]) if not store.has_unit("features.5", u)]
    assert tiles.count("not built") == len(unbuilt) > 0
    assert tiles.count('<a class="tile" href="/layer/features.5/unit/') == 12 - len(unbuilt)


def test_an_unknown_layer_is_a_400_with_close_matches(partial):
    c, _, _ = partial
    r = c.post("/api/explain", files=_upload(), data={"methods": "saliency", "layer": "features.55"})
    assert r.status_code == 400 and "did you mean features.5" in r.json()["detail"]
    r = c.post("/explain", files=_upload(), data={"layer": "fc"})
    assert r.status_code == 400 and "no layer &#39;fc&#39; in this atlas" in r.text


def test_a_model_without_the_layer_still_gets_its_explanation(tiny_atlas):
    from fastapi.testclient import TestClient

    from cnnscope import wrap
    from cnnscope.web import create_app
    from tests.models import GapLinearNet

    with TestClient(create_app(tiny_atlas, model=wrap(GapLinearNet(), input_size=32))) as c:
        v = c.post("/api/explain", files=_upload(), data={"methods": "saliency"}).json()
        assert v["methods"] == ["saliency"] and v["units"] == [] and v["layer"] == "features.5"
        said = v["units_error"]
        assert said.startswith("cannot list the units of 'features.5': ") and "features.3" in said  # close matches
        r = c.post("/explain", files=_upload(), data={"methods": "saliency"})
        assert r.status_code == 200 and 'id="units-error">cannot list the units of &#39;features.5&#39;' in r.text
        assert 'id="panel"' in r.text


def test_a_center_crop_model_sees_the_picture_fitted_once(partial_atlas):
    from fastapi.testclient import TestClient

    from cnnscope import wrap
    from cnnscope.web import create_app
    from tests.models import InplaceReLUNet

    model = wrap(InplaceReLUNet(), input_size=32, resize_mode="center_crop")
    with TestClient(create_app(partial_atlas, model=model)) as c:
        v = c.post("/api/explain", files=_upload(), data={"methods": "saliency", "layer": "features.2"}).json()
    want = _expected(model, PHOTO, model.module.features[2])
    assert [(u["unit"], u["value"]) for u in v["units"]] == [(u, pytest.approx(val, rel=1e-5, abs=1e-6))
                                                             for u, val in want]
    refitted = _expected(model, model.fit_image(PHOTO), model.module.features[2])  # the crop of the crop
    assert [val for _, val in refitted] != pytest.approx([val for _, val in want], rel=1e-3)


def test_a_pre_activation_atlas_lists_pre_activations(tmp_path):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    model, gray = helpers.tiny_model(), np.full((40, 48, 3), 128, np.uint8)
    build_atlas(model, tmp_path, ["features.2"], source=helpers.tiny_images(), kinds=[helpers.KIND],
                options=BuildOptions(pre_activation=True, seed=0))
    with TestClient(create_app(tmp_path, model=model)) as c:
        v = c.post("/api/explain", files=_upload(gray), data={"methods": "saliency"}).json()
    assert v["units_value"] == "maximum over positions of the unit's pre-activation"
    want = _expected(model, gray, model.module.features[1], k=8)  # the ReLU's input: the batch norm's output
    assert min(val for _, val in want) < 0  # negative pre-activations: not the ReLU's output
    assert [(u["unit"], u["value"]) for u in v["units"]] == [(u, pytest.approx(val, rel=1e-5, abs=1e-6))
                                                             for u, val in want]


@pytest.mark.slow
def test_lite0_units_of_a_photo(tmp_path, lite0, samples):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    build_atlas(lite0, tmp_path, ["blocks.1.1"], channels=0, kinds=["featurevis"],
                options=BuildOptions(steps=1, size=16))
    with TestClient(create_app(tmp_path, model=lite0)) as c:
        r = c.post("/api/explain", files=_upload(samples["chelsea"]), data={"methods": "saliency"})
    assert r.status_code == 200, r.text
    v = r.json()
    want = _expected(lite0, samples["chelsea"], lite0.module.blocks[1][1])
    assert v["layer"] == "blocks.1.1" and [u["unit"] for u in v["units"]] == [u for u, _ in want]
    assert [u["value"] for u in v["units"]] == pytest.approx([val for _, val in want], rel=1e-4, abs=1e-5)
    assert [u["unit"] for u in v["units"] if u["url"]] == ([0] if 0 in [u for u, _ in want] else [])
