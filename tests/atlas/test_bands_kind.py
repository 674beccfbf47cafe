"""The optional ``bands`` kind: examples sampled across a unit's activation bands, checked against a forward pass of
the tiny net (tests/models.py) on the build's own images, and read back for labelling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cnnscope.atlas import AtlasStore, BuildOptions, build_atlas
from cnnscope.atlas.bands_kind import CROP, N_BANDS, NEG_BANDS, PER_BAND, atlas_bands
from cnnscope.atlas.encode import decode_png
from cnnscope.atlas.kinds import KINDS, default_kinds
from cnnscope.capture import Capture, evaluating
from cnnscope.dataset.labels import label_report
from tests.atlas import helpers

LAYER = "features.5"  # conv -> ReLU: its input (pre_activation=True) has both signs
UNITS = [0, 3]
IMAGES = helpers.tiny_images(5)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    out = tmp_path_factory.mktemp("bands")
    build_atlas(helpers.tiny_model(), out, [LAYER], channels=UNITS, source=IMAGES, kinds=["bands"],
                options=BuildOptions(units_per_chunk=2, batch_size=5, seed=1, pre_activation=True))
    return out


def _values() -> torch.Tensor:
    m = helpers.tiny_model()
    x = m.batch([a for _, a in IMAGES])
    with torch.no_grad(), evaluating(m.module), Capture(m.module, LAYER, pre_activation=True) as cap:
        cap.run(x)
    return cap[LAYER].float()


def test_the_kind_is_optional():
    assert KINDS.get("bands").optional and "bands" not in default_kinds(True)


def test_examples_fall_in_their_bands(atlas):
    values = _values()
    with AtlasStore(atlas) as st:
        for u in UNITS:
            v = values[:, u]
            bands, record = atlas_bands(st, LAYER, u)
            assert float(v.min()) < 0 and len(bands) == N_BANDS + NEG_BANDS
            assert bands[0].low == pytest.approx(float(v.min()), rel=1e-5) and bands[NEG_BANDS].low == 0.0
            assert bands[-1].high == pytest.approx(float(v.max()), rel=1e-5)
            assert sum(b.count for b in bands) == pytest.approx(float(v.numel()), rel=1e-6)  # every position
            assert sum(b.count for b in bands[NEG_BANDS:]) == pytest.approx(float((v >= 0).sum()), rel=1e-6)
            assert all(b.contribution == 0 for b in bands[:NEG_BANDS])
            assert sum(b.contribution for b in bands) == pytest.approx(1.0)
            shown = 0
            for b in bands:
                assert len(b.examples) <= PER_BAND
                for ex in b.examples:
                    assert b.low <= ex.value < b.high
                    assert ex.value == pytest.approx(float(v[ex.image_id, ex.y, ex.x]), abs=1e-5)
                    assert ex.name == IMAGES[ex.image_id][0]
                shown += len(b.examples)
            assert shown >= N_BANDS // 2 and bands[-1].examples and bands[0].examples  # the extremes are shown
            # the sheet: one row per band (the highest on top), every example's cell inside it
            sheet = decode_png(st.artifact_bytes(record.id)[1])
            assert [sheet.shape[1], sheet.shape[0]] == record.numbers["sheet_size"]
            for raw in record.numbers["bands"]:
                for e in raw["examples"]:
                    top, left, h, w = e["cell"]
                    assert (h, w) == (CROP, CROP) and top + h <= sheet.shape[0] and left + w <= sheet.shape[1]
                    assert top == 2 + (len(bands) - 1 - raw["index"]) * (CROP + 2)
            assert st.image_ids([ex.image_id for b in bands for ex in b.examples]) == {
                ex.image_id for b in bands for ex in b.examples}  # whole images for the click-through


def test_labels_on_atlas_bands(atlas, tmp_path):
    from cnnscope.web.label_routes import example_label_panel
    from cnnscope.web.labels import LabelStore

    with AtlasStore(atlas) as st:
        bands, _ = atlas_bands(st, LAYER, 0)
        given = {(ex.image_id, ex.y, ex.x): ("curve" if b.index >= 7 else "other") for b in bands for ex in b.examples}
        with LabelStore(tmp_path / "labels.sqlite", atlas_root=st.root, fingerprint=st.get_meta("fingerprint")) as ls:
            ls.import_examples([{"layer": LAYER, "unit": 0, "image_id": i, "y": y, "x": x, "label": lab}
                                for (i, y, x), lab in given.items()])
            panel = example_label_panel(st, ls, LAYER, 0)
            assert example_label_panel(st, ls, LAYER, 3)["report"] is None  # nothing labelled there
        assert atlas_bands(st, "features.5", 1) is None  # not built
    labelled = [e for raw in panel["bands"] for e in raw["examples"]]
    assert {(e["image_id"], e["y"], e["x"]): e["label"] for e in labelled} == given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = label_report(bands, given, layer=LAYER, unit=0)
    # every shown example labelled: curve carries the value of bands 7-11, estimated with count_b / n_b weights
    curve = sum(b.count * np.mean([e.value for e in b.examples]) for b in bands if b.index >= 7 and b.examples)
    total = sum(b.count * np.mean([max(e.value, 0.0) for e in b.examples]) for b in bands if b.examples)
    assert panel["report"]["agreement"]["curve"] == pytest.approx(curve / total)
    assert panel["report"]["agreement"] == pytest.approx(expected.agreement)


@pytest.mark.slow
def test_cli_import_and_report_on_the_atlas(atlas, tmp_path, capsys):
    import json

    from cnnscope.cli import main

    with AtlasStore(atlas) as st:
        bands, _ = atlas_bands(st, LAYER, 3)
    lines = ["layer,unit,image,y,x,label"] + [f"{LAYER},3,{ex.name},{ex.y},{ex.x},{'curve' if b.index else 'other'}"
                                              for b in bands for ex in b.examples]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    db = tmp_path / "labels.sqlite"
    assert main(["labels", "import", str(csv_file), "--labels", str(db), "--atlas", str(atlas)]) == 0
    assert f"{len(lines) - 1} example labels stored" in capsys.readouterr().out
    assert main(["labels", "report", "--labels", str(db), "--atlas", str(atlas), "--layer", LAYER, "--unit", "3",
                 "--out", str(tmp_path / "out")]) == 0
    got = json.loads((tmp_path / "out" / f"labels_{LAYER}_c0003.json").read_text())
    given = {(ex.image_id, ex.y, ex.x): "curve" if b.index else "other" for b in bands for ex in b.examples}
    assert got["agreement"] == pytest.approx(label_report(bands, given).agreement)
    assert got["coverage"] == pytest.approx(1.0)
    capsys.readouterr()
    csv_file.write_text(f"layer,unit,image,y,x,label\n{LAYER},1,0,0,0,curve\n")  # unit 1 is not in the atlas
    assert main(["labels", "import", str(csv_file), "--labels", str(db), "--atlas", str(atlas)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["labels", "report", "--labels", str(db), "--atlas", str(atlas), "--layer", LAYER, "--unit", "0",
                 "--out", str(tmp_path / "out2")]) == 1
    assert "no example of features.5:0 is labelled" in capsys.readouterr().err


def test_viewer_routes_on_atlas_bands(atlas, tmp_path):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with AtlasStore(atlas) as st:
        bands, record = atlas_bands(st, LAYER, 0)
    url = f"/api/labels/{LAYER}/0/examples"
    with TestClient(create_app(atlas, explain=False, annotate=tmp_path / "labels.sqlite")) as c:
        assert c.get(url + "/figure.png").status_code == 404  # nothing labelled yet
        panel = c.get(url).json()["panel"]
        assert panel["sheet"] == f"/artifact/{record.id}" and panel["report"] is None
        assert [len(b["examples"]) for b in panel["bands"]] == [len(b.examples) for b in bands]
        given = {}
        for b in bands:
            for ex in b.examples:
                lab = "curve" if b.index >= 9 else "unrelated"
                r = c.post(url, data={"image_id": str(ex.image_id), "y": str(ex.y), "x": str(ex.x), "label": lab},
                           headers={"Accept": "application/json"})
                assert r.status_code == 200, r.text
                given[(ex.image_id, ex.y, ex.x)] = lab
        panel = c.get(url).json()["panel"]
        assert {(e["image_id"], e["y"], e["x"]): e["label"] for b in panel["bands"] for e in b["examples"]} == given
        assert panel["report"]["agreement"] == pytest.approx(label_report(bands, given).agreement)
        figure = c.get(url + "/figure.png")
        assert figure.status_code == 200 and figure.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert c.get(f"/api/labels/{LAYER}/3/examples/figure.png").status_code == 404


def test_unit_page_labels_band_examples(atlas, tmp_path):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    with AtlasStore(atlas) as st:
        bands, _ = atlas_bands(st, LAYER, 0)
    top = max(bands, key=lambda b: b.index)
    ex = top.examples[0]
    with TestClient(create_app(atlas, explain=False, annotate=tmp_path / "labels.sqlite")) as c:
        page = c.get(f"/layer/{LAYER}/unit/0").text
        assert page.count('class="example-label"') == sum(len(b.examples) for b in bands)
        assert 'id="band-agreement"' not in page
        r = c.post(f"/api/labels/{LAYER}/0/examples", data={"image_id": str(ex.image_id), "y": str(ex.y),
                                                              "x": str(ex.x), "label": "curve"},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/layer/{LAYER}/unit/0"
        page = c.get(f"/layer/{LAYER}/unit/0").text
        assert 'value="curve"' in page and 'id="band-agreement"' in page and "<strong>curve</strong> 100%" in page
    with TestClient(create_app(atlas, explain=False)) as c:  # not in annotate mode: no forms
        assert 'class="example-label"' not in c.get(f"/layer/{LAYER}/unit/0").text
