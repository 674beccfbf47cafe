"""Example labels in the labels file and through the viewer's annotate-mode routes."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from cnnscope.web.labels import MAX_BODY, MAX_LABEL, LabelError, LabelStore

JSON = {"Accept": "application/json"}
URL = "/api/labels/features.2/3/examples"


def _client(atlas, path):
    from fastapi.testclient import TestClient

    from cnnscope.web import create_app

    return TestClient(create_app(atlas, explain=False, annotate=path))


def test_store_set_list_delete_and_export(tmp_path):
    with LabelStore(tmp_path / "l.sqlite", atlas_root=None, fingerprint="ab") as ls:
        ls.set("features.2", 3, "a unit label")
        first = ls.set_example("features.2", 3, 7, 1, 2, " curve ", name="img7")
        assert first | {"updated": None} == {"layer": "features.2", "unit": 3, "image_id": 7, "name": "img7", "y": 1,
                                             "x": 2, "label": "curve", "updated": None}
        ls.set_example("features.2", 3, 7, 1, 2, "edge")  # the same example: replaced
        ls.set_example("features.2", 3, 0, 0, 0, "other")
        ls.set_example("features.5", 0, 0, 0, 0, "curve")
        assert [(e["image_id"], e["label"]) for e in ls.example_labels("features.2", 3)] == [(0, "other"),
                                                                                           (7, "edge")]
        assert len(ls.example_labels("features.2")) == 2 and ls.example_count() == 3
        assert ls.set_example("features.2", 3, 0, 0, 0, "") is None and ls.example_count() == 2
        rows = list(csv.DictReader(io.StringIO(ls.export_examples("csv"))))
        assert [(r["layer"], r["unit"], r["image_id"], r["y"], r["x"], r["label"]) for r in rows] == [
            ("features.2", "3", "7", "1", "2", "edge"), ("features.5", "0", "0", "0", "0", "curve")]
        assert json.loads(ls.export_examples("json"))["example_labels"][0]["label"] == "edge"
        assert ls.get("features.2", 3)["label"] == "a unit label" and len(ls) == 1  # unit labels untouched
        for args, message in (((-1, 0, 0, "x"), "an image id"), ((0, 1.5, 0, "x"), "a row y"),
                              ((0, 0, True, "x"), "a column x"), ((0, 0, 0, "a\nb"), "control character"),
                              ((0, 0, 0, "x" * (MAX_LABEL + 1)), f"at most {MAX_LABEL}")):
            with pytest.raises(LabelError, match=message):
                ls.set_example("features.2", 3, *args)
        with pytest.raises(LabelError, match="an image id"):  # all or nothing
            ls.import_examples([{"layer": "features.2", "unit": 1, "image_id": 1, "y": 0, "x": 0, "label": "a"},
                                {"layer": "features.2", "unit": 1, "image_id": -1, "y": 0, "x": 0, "label": "b"}])
        assert ls.example_labels("features.2", 1) == []


def test_files_from_before_example_labels(tmp_path):
    path = tmp_path / "old.sqlite"
    with LabelStore(path, atlas_root=None, fingerprint=None) as ls:
        ls.set("features.2", 0, "kept")
    con = sqlite3.connect(path)
    con.execute("DROP TABLE example_labels")  # a labels file written before the table existed
    con.commit()
    con.close()
    with LabelStore(path, atlas_root=None, fingerprint=None, readonly=True) as ls:  # read-only: nothing added
        assert ls.example_labels() == [] and ls.example_count() == 0 and ls.get("features.2", 0)["label"] == "kept"
    with LabelStore(path, atlas_root=None, fingerprint=None) as ls:  # opened for writing: the table is added
        ls.set_example("features.2", 0, 1, 0, 0, "curve")
        assert ls.example_count() == 1 and ls.get("features.2", 0)["label"] == "kept"


def test_routes(tiny_atlas, tmp_path):
    before = sorted(p.name for p in tiny_atlas.rglob("*"))
    with _client(tiny_atlas, tmp_path / "labels.sqlite") as c:
        form = c.post(URL, data={"image_id": "3", "y": "1", "x": "2", "label": "curve", "name": "img3"},
                      follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"] == "/layer/features.2/unit/3"
        r = c.post(URL, json={"image_id": 3, "y": 1, "x": 2, "label": "edge"}, headers=JSON)
        assert r.status_code == 200, r.text
        assert r.json() | {"updated": None} == {"layer": "features.2", "unit": 3, "url": "/layer/features.2/unit/3",
                                                "deleted": False, "image_id": 3, "y": 1, "x": 2, "label": "edge",
                                                "name": "", "updated": None}
        c.post(URL, data={"image_id": "0", "y": "0", "x": "0", "label": "other"}, headers=JSON)
        got = c.get(URL).json()
        assert [(e["image_id"], e["label"]) for e in got["labels"]] == [(0, "other"), (3, "edge")]
        assert got["suggested"] == ["curve", "imperfect curve", "edge", "unrelated", "opposing curve"]
        assert got["panel"] is None  # no bands kind built
        exported = c.get("/api/labels/examples?format=csv")
        assert exported.headers["content-type"].startswith("text/csv")
        assert [r["label"] for r in csv.DictReader(io.StringIO(exported.text))] == ["other", "edge"]
        assert len(c.get("/api/labels/examples").json()["example_labels"]) == 2
        gone = c.post(URL, data={"image_id": "0", "y": "0", "x": "0", "label": ""}, headers=JSON).json()
        assert gone["deleted"] is True and len(c.get(URL).json()["labels"]) == 1
        assert c.get("/api/labels/features.2/3").json()["label"] == ""  # unit labels are separate
    assert sorted(p.name for p in tiny_atlas.rglob("*")) == before  # the atlas folder is never written


@pytest.mark.parametrize("url, kwargs, status, message", [
    ("/api/labels/features.2/99/examples", {"data": {"image_id": "0", "y": "0", "x": "0", "label": "x"}}, 404,
     "not in this atlas"),
    ("/api/labels/features.9/0/examples", {"data": {"image_id": "0", "y": "0", "x": "0", "label": "x"}}, 404,
     "unknown layer"),
    (URL, {"data": {"image_id": "a", "y": "0", "x": "0", "label": "x"}}, 400, "image_id must be a number"),
    (URL, {"data": {"image_id": "0", "y": "-1", "x": "0", "label": "x"}}, 400, "y must be a number"),
    (URL, {"data": {"image_id": "0", "y": "0", "label": "x"}}, 400, "missing: x"),
    (URL, {"data": {"image_id": "0", "y": "0", "x": "0", "label": "x" * (MAX_LABEL + 1)}}, 400, f"at most {MAX_LABEL}"),
    (URL, {"json": {"image_id": True, "y": 0, "x": 0, "label": "x"}}, 400, "send one text field 'image_id'"),
    (URL, {"json": [1, 2]}, 400, "JSON object"),
    (URL, {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "cannot read the JSON"),
    (URL, {"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "as a form or a JSON object"),
    (URL, {"data": {"label": "x" * (MAX_BODY + 10)}}, 413, "limited to"),
])
def test_bad_example_posts(tiny_atlas, tmp_path, url, kwargs, status, message):
    with _client(tiny_atlas, tmp_path / "labels.sqlite") as c:
        r = c.post(url, **kwargs)
        assert r.status_code == status, r.text
        assert message in r.json()["detail"]
        assert c.get(URL).json()["labels"] == []
        assert c.get("/api/labels/examples?format=xml").status_code == 400


def test_cross_origin_and_no_annotate(tiny_atlas, tmp_path, client):
    with _client(tiny_atlas, tmp_path / "labels.sqlite") as c:
        r = c.post(URL, data={"image_id": "0", "y": "0", "x": "0", "label": "x"},
                   headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and c.get(URL).json()["labels"] == []
    assert client.post(URL, data={"image_id": "0", "y": "0", "x": "0", "label": "x"}).status_code in (404, 405)
    assert client.get("/api/labels/examples").status_code == 404


def test_cli_export_round_trip(tmp_path, capsys):
    from cnnscope.cli import main

    src, dst = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with LabelStore(src, atlas_root=None, fingerprint=None) as ls:
        ls.set_example("features.2", 3, 7, 1, 2, "curve, faint", name="img7")
        ls.set_example("features.5", 0, 0, 4, 4, "edge")
        expected = [{k: e[k] for k in ("layer", "unit", "image_id", "name", "y", "x", "label")}
                    for e in ls.example_labels()]
    out = tmp_path / "export.csv"
    assert main(["labels", "export", "--labels", str(src), "--out", str(out)]) == 0
    assert "2 example labels" in capsys.readouterr().out
    assert main(["labels", "import", str(out), "--labels", str(dst)]) == 0  # the export's image_id column is read
    assert "2 example labels stored" in capsys.readouterr().out
    with LabelStore(dst, atlas_root=None, fingerprint=None, readonly=True) as ls:
        assert [{k: e[k] for k in expected[0]} for e in ls.example_labels()] == expected
    assert main(["labels", "export", "--labels", str(src)]) == 0
    assert len(json.loads(capsys.readouterr().out)["example_labels"]) == 2
    assert main(["labels", "import", str(tmp_path / "none.csv"), "--labels", str(dst)]) == 1
    assert "no CSV file at" in capsys.readouterr().err
