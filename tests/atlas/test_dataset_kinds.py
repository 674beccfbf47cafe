"""Dataset examples of the atlas: one example per image, positive top panel, negative bottom panel, boxes.

Checked against a direct forward pass of the tiny net (tests/models.py) on the build's own images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.atlas.dataset_kind import CROP, one_per_image
from cnnscope.atlas.encode import decode_png
from cnnscope.capture import Capture, evaluating
from cnnscope.dataset.results import Example
from tests.atlas import helpers

LAYER = "features.5"  # conv -> ReLU: its input (pre_activation=True) has both signs, its output none below 0
UNITS = [0, 3, 9]
IMAGES = helpers.tiny_images(7)
OPTIONS = BuildOptions(top_k=3, units_per_chunk=3, batch_size=3, seed=1)


def _build(out, pre_activation: bool):
    opts = BuildOptions(**(OPTIONS.to_dict() | {"pre_activation": pre_activation}))
    build_atlas(helpers.tiny_model(), out, [LAYER], channels=UNITS, source=IMAGES, kinds=["examples"], options=opts)
    return out


@pytest.fixture(scope="module")
def pre_atlas(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("examples_pre"), True)


@pytest.fixture(scope="module")
def post_atlas(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("examples_post"), False)


def _values(pre_activation: bool) -> torch.Tensor:
    """The layer's values (its input with ``pre_activation``) on every image, ``[N, C, h, w]``."""
    m = helpers.tiny_model()
    x = m.batch([a for _, a in IMAGES])
    with torch.no_grad(), evaluating(m.module), Capture(m.module, LAYER, pre_activation=pre_activation) as cap:
        cap.run(x)
    return cap[LAYER].float()


def _panels(atlas, unit: int) -> dict:
    with AtlasStore(atlas) as st:
        return {a.name: (a, st.artifact_bytes(a.id)[1]) for a in st.artifacts(LAYER, unit) if a.kind == "examples"}


def _expected(v: torch.Tensor, unit: int, which: str) -> list[tuple[str, float]]:
    """Each image's strongest (``top``: largest positive, ``bottom``: smallest negative) value, best first."""
    per_image = v[:, unit].flatten(1)
    ext = per_image.amax(1) if which == "top" else per_image.amin(1)
    order = ext.argsort(descending=which == "top").tolist()
    keep = [i for i in order if (ext[i] > 0 if which == "top" else ext[i] < 0)]
    return [(IMAGES[i][0], float(ext[i])) for i in keep[:OPTIONS.top_k]]


@pytest.mark.parametrize("which", ["top", "bottom"])
def test_one_example_per_image_with_its_value_and_name(pre_atlas, which):
    v = _values(True)
    for u in UNITS:
        rec, data = _panels(pre_atlas, u)[which]
        exs = rec.numbers["examples"]
        expected = _expected(v, u, which)
        assert expected, "the tiny net's pre-activations have both signs on every tested unit"
        assert [e["name"] for e in exs] == [n for n, _ in expected]
        torch.testing.assert_close(torch.tensor([e["value"] for e in exs]), torch.tensor([x for _, x in expected]),
                                   rtol=1e-5, atol=1e-5)
        assert len({e["image_id"] for e in exs}) == len(exs)
        for e in exs:  # the recorded position holds the value
            assert v[e["image_id"], u, e["y"], e["x"]].item() == pytest.approx(e["value"], rel=1e-5, abs=1e-6)
        sheet = decode_png(data)
        assert [sheet.shape[1], sheet.shape[0]] == rec.numbers["sheet_size"]
        for e in exs:
            top, left, h, w = e["cell"]
            assert (h, w) == (CROP, CROP) and top + h <= sheet.shape[0] and left + w <= sheet.shape[1]


def test_boxes_are_the_receptive_field_of_the_position(pre_atlas):
    # conv3(pad 1) -> maxpool 2 -> conv3(pad 1): position y sees input rows 2y-3 .. 2y+4, clipped to the image
    for u in UNITS:
        for which in ("top", "bottom"):
            for e in _panels(pre_atlas, u)[which][0].numbers["examples"]:
                y, x = e["y"], e["x"]
                assert e["box"] == [max(0, 2 * y - 3), max(0, 2 * x - 3), min(32, 2 * y + 5), min(32, 2 * x + 5)]


def test_the_crop_is_the_box_of_the_fitted_image(pre_atlas):
    from cnnscope.images import resize

    m = helpers.tiny_model()
    rec, data = _panels(pre_atlas, UNITS[0])["top"]
    sheet = decode_png(data)
    compared = 0
    for e in rec.numbers["examples"]:
        t, lf, b, r = e["box"]
        if (b - t, r - lf) != (8, 8):
            continue  # clipped by the border: padded, compared by the crop tests of the dataset area
        patch = m.fit_image(IMAGES[e["image_id"]][1])[t:b, lf:r]
        top, left, h, w = e["cell"]
        np.testing.assert_array_equal(sheet[top:top + h, left:left + w], resize(patch, (h, w), resample="nearest"))
        compared += 1
    assert compared


def test_a_rectified_output_has_no_bottom_panel_and_no_zero_top(post_atlas):
    v = _values(False)
    for u in UNITS:
        panels = _panels(post_atlas, u)
        rec, data = panels["bottom"]
        assert data == b"" and rec.numbers["examples"] == []
        assert "never negative" in rec.numbers["note"]
        top = panels["top"][0].numbers["examples"]
        assert all(e["value"] > 0 for e in top)
        assert [e["name"] for e in top] == [n for n, _ in _expected(v, u, "top")]


def _ex(image_id: int, value: float) -> Example:
    return Example(image_id, f"img{image_id}", 0, 0, value, (0, 0, 1, 1))


def test_one_per_image_keeps_each_images_strongest_and_says_when_short():
    ranked = [_ex(2, 5.0), _ex(2, 4.0), _ex(1, 3.0), _ex(2, 2.0), _ex(0, -1.0)]
    chosen, short = one_per_image(ranked, 3, lambda v: v > 0, pool=5)
    assert [(e.image_id, e.value) for e in chosen] == [(2, 5.0), (1, 3.0)]
    assert short is False  # a value <= 0 was reached: no positive image is hidden
    chosen, short = one_per_image(ranked[:4], 3, lambda v: v > 0, pool=4)
    assert len(chosen) == 2 and short is True  # the full pool is positive: more images may lie beyond it
    assert one_per_image([_ex(0, -2.0)], 3, lambda v: v > 0, pool=1) == ([], False)  # never positive: nothing
