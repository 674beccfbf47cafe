"""Unit labels and notes (annotate mode): the labels file, its refusals, the viewer's routes and the export command."""

from __future__ import annotations

import csv
import inspect
import io
import json
import sqlite3
import threading

import pytest

from cnnscope.atlas import AtlasStore
from cnnscope.cli import main
from cnnscope.web.labels import MAX_LABEL, MAX_NOTE, LabelError, LabelFileError, LabelStore

FP = "f" * 16
# text that a CSV or JSON writer must quote or escape: commas, quotes, line breaks, non-ASCII, a leading '='
TRICKY = [("features.2", 1, 'edge, "vertical"', "line one\nline two, with \"quotes\""),
          ("features.2", 0, "Ärmel Ω 曲线", "non-ASCII: élan, 日本語"),
          ("features.5", 12, "=SUM(A1)", ""),
          ("conv.a", 3, "", "note only;\n\nblank line above")]


@pytest.fixture()
def atlas_dir(tmp_path):
    d = tmp_path / "atlas"
    d.mkdir()
    return d


@pytest.fixture()
def labels(tmp_path, atlas_dir):
    with LabelStore(tmp_path / "labels.sqlite", atlas_root=atlas_dir, fingerprint=FP) as ls:
        yield ls


def _fill(ls: LabelStore) -> None:
    for layer, unit, label, note in TRICKY:
        ls.set(layer, unit, label, note)


# -- the labels file ---------------------------------------------------------------------------------------------
def test_set_get_search_delete(labels):
    assert labels.get("features.2", 3) is None and labels.search("curve") == []
    entry = labels.set("features.2", 3, "  Curve detector ", "fires on curves\r\nmostly facing left\r\n")
    assert entry["label"] == "Curve detector" and entry["note"] == "fires on curves\nmostly facing left"
    assert labels.get("features.2", 3) == entry and entry["updated"].endswith("Z")
    _fill(labels)
    assert [(e["layer"], e["unit"]) for e in labels.search("CURVE")] == [("features.2", 3)]  # any case
    assert [(e["layer"], e["unit"]) for e in labels.search("facing left")] == [("features.2", 3)]  # in the note
    assert [e["unit"] for e in labels.search("ärmel")] == [0]  # non-ASCII case folding
    assert [e["unit"] for e in labels.search("features.2")] == [0, 1, 3]  # the exact layer name: every entry
    assert labels.search("features") == [] and labels.search("  ") == []  # a layer prefix is not a layer
    assert len(labels.search("e", limit=2)) == 2
    assert labels.for_layer("features.2") == {0: "Ärmel Ω 曲线", 1: 'edge, "vertical"', 3: "Curve detector"}
    assert labels.for_layer("conv.a") == {}  # an entry with a note and no label has no label to show
    assert [(e["layer"], e["unit"]) for e in labels.all()] == [
        ("conv.a", 3), ("features.2", 0), ("features.2", 1), ("features.2", 3), ("features.5", 12)]
    # None keeps a field; both empty delete the entry
    assert labels.set("features.2", 3, note="")["label"] == "Curve detector"
    assert labels.get("features.2", 3)["note"] == ""
    assert labels.set("features.2", 3, label="") is None and labels.get("features.2", 3) is None
    assert labels.delete("features.5", 12) is True and labels.delete("features.5", 12) is False
    assert len(labels) == 3


def test_export_round_trips_json_and_csv(labels):
    _fill(labels)
    expected = labels.all()
    data = json.loads(labels.export("json"))
    assert data["format"] == "cnnscope-labels/1" and data["fingerprint"] == FP
    assert data["labels"] == expected
    rows = list(csv.DictReader(io.StringIO(labels.export("csv"), newline="")))
    assert [r | {"unit": int(r["unit"])} for r in rows] == expected
    assert {(e["label"], e["note"]) for e in expected} == {(label, note) for _, _, label, note in TRICKY}
    with pytest.raises(LabelError, match="unknown export format 'xml'"):
        labels.export("xml")


@pytest.mark.parametrize("label, note, message", [
    ("x" * (MAX_LABEL + 1), "", f"at most {MAX_LABEL}"),
    ("", "x" * (MAX_NOTE + 1), f"at most {MAX_NOTE}"),
    ("bad\x00byte", "", "control character"),
    ("\x1b[31mred", "", "control character"),
    ("two\nlines", "", "no line breaks"),
    ("tab\there", "", "control character"),
    ("", "bell\x07", "control character"),
    ("", "next line\x85", "control character"),
    ("", "surrogate\ud800", "control character"),
])
def test_bad_text_is_refused(labels, label, note, message):
    with pytest.raises(LabelError, match=message):
        labels.set("features.2", 0, label, note)
    assert labels.get("features.2", 0) is None


def test_limits_are_inclusive(labels):
    entry = labels.set("features.2", 0, "x" * MAX_LABEL, "line\n" * (MAX_NOTE // 5))
    assert len(entry["label"]) == MAX_LABEL and len(entry["note"]) == MAX_NOTE - 1  # the last newline is stripped


def test_paths_that_are_refused(tmp_path, atlas_dir):
    (atlas_dir / "sub").mkdir()
    (tmp_path / "link").symlink_to(atlas_dir)
    (tmp_path / "dangling.sqlite").symlink_to(atlas_dir / "created-through-a-link.sqlite")
    before = sorted(p.name for p in atlas_dir.rglob("*"))
    for path in (atlas_dir / "labels.sqlite", atlas_dir / "sub" / "labels.sqlite", tmp_path / "link" / "l.sqlite",
                 tmp_path / "dangling.sqlite"):
        with pytest.raises(LabelError, match="inside the atlas folder"):
            LabelStore(path, atlas_root=atlas_dir, fingerprint=FP)
    assert sorted(p.name for p in atlas_dir.rglob("*")) == before  # nothing written in the atlas
    with pytest.raises(LabelError, match="does not exist; create"):
        LabelStore(tmp_path / "nowhere" / "labels.sqlite", atlas_root=atlas_dir, fingerprint=FP)
    with pytest.raises(LabelError, match="is a folder"):
        LabelStore(tmp_path, atlas_root=atlas_dir, fingerprint=FP)


def test_files_that_are_not_labels_files_are_refused_untouched(tmp_path, atlas_dir):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 10)
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE items (x)")
        con.execute("INSERT INTO items VALUES (1)")
    con.close()
    lookalike = tmp_path / "lookalike.sqlite"
    with sqlite3.connect(lookalike) as con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("CREATE TABLE labels (x)")
        con.execute("INSERT INTO meta VALUES ('format', '\"someone-else\"')")
    con.close()
    for path in (text, foreign, lookalike, AtlasStore(atlas_dir, writable=True).db_path):
        data = path.read_bytes()
        root = None if path.parent == atlas_dir else atlas_dir  # the atlas's own database, opened as labels
        with pytest.raises(LabelError, match="not a cnnscope labels file"):
            LabelStore(path, atlas_root=root, fingerprint=FP)
        assert path.read_bytes() == data, path


def test_fingerprints(tmp_path, atlas_dir):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, atlas_root=atlas_dir, fingerprint=FP) as ls:
        ls.set("features.2", 0, "kept")
    with pytest.raises(LabelError, match=f"fingerprint {FP}, but this atlas has fingerprint 0123") as err:
        LabelStore(path, atlas_root=atlas_dir, fingerprint="0123")
    assert "\n" not in str(err.value)
    with LabelStore(path, atlas_root=atlas_dir, fingerprint=None) as ls:  # an atlas without one: accepted
        assert ls.get("features.2", 0)["label"] == "kept" and ls.fingerprint == FP
    blank = tmp_path / "blank.sqlite"
    LabelStore(blank, atlas_root=atlas_dir, fingerprint=None).close()
    with LabelStore(blank, atlas_root=atlas_dir, fingerprint=FP) as ls:  # a file without one takes the atlas's
        assert ls.fingerprint == FP
    with pytest.raises(LabelError, match="was made for the model with fingerprint"):
        LabelStore(blank, atlas_root=atlas_dir, fingerprint="0123")


def test_readonly_writes_nothing(tmp_path, atlas_dir):
    with pytest.raises(LabelError, match="no labels file at"):
        LabelStore(tmp_path / "missing.sqlite", atlas_root=None, fingerprint=None, readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, atlas_root=atlas_dir, fingerprint=FP) as ls:
        ls.set("features.2", 0, "a")
    data = path.read_bytes()
    with LabelStore(path, atlas_root=None, fingerprint=None, readonly=True) as ls:
        assert ls.get("features.2", 0)["label"] == "a"
        with pytest.raises(LabelError, match="read-only"):
            ls.set("features.2", 1, "b")
    assert path.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["atlas", "labels.sqlite"]


def test_a_locked_file_is_one_clear_error(labels):
    labels.set("features.2", 0, "before")
    labels._con.execute("PRAGMA busy_timeout=50")  # do not wait the default 30 s for the other program
    other = sqlite3.connect(labels.path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(LabelFileError, match="cannot write the labels file .* no other program holds it open"):
            labels.set("features.2", 0, "after")
    finally:
        other.close()
    assert labels.set("features.2", 1, "then")["label"] == "then"  # usable again, nothing half-written
    assert labels.get("features.2", 0)["label"] == "before"


def test_threads_share_one_store(labels):
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for u in range(20):
                labels.set(f"layer{k}", u, f"label {k}:{u}")
                assert labels.get(f"layer{k}", u)["label"] == f"label {k}:{u}"
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(labels) == 120
    assert labels.for_layer("layer3") == {u: f"label 3:{u}" for u in range(20)}


# -- through the viewer ------------------------------------------------------------------------------------------
def _app(atlas, annotate=None):
    from cnnscope.web import create_app

    if "annotate" in inspect.signature(create_app).parameters:
        return create_app(atlas, explain=False, annotate=annotate)
    # the wiring create_app(..., annotate=) does, until it takes the argument
    from cnnscope.web.label_routes import label_router

    app = create_app(atlas, explain=False)
    store = app.state.store
    app.state.labels = labels = LabelStore(annotate, atlas_root=store.root,
                                           fingerprint=store.get_meta("fingerprint")) if annotate else None
    if labels is not None:
        app.include_router(label_router(labels, store))
    return app


JSON = {"Accept": "application/json"}


def test_post_get_export_and_find_after_restart(tiny_atlas, tmp_path):
    from fastapi.testclient import TestClient

    path = tmp_path / "labels.sqlite"
    before = sorted(p.name for p in tiny_atlas.rglob("*"))
    with TestClient(_app(tiny_atlas, path)) as c:
        r = c.post("/api/labels/features.2/3", data={"label": "Curve, left", "note": "line 1\r\nline 2"}, headers=JSON)
        assert r.status_code == 200, r.text
        assert r.json() | {"updated": None} == {"layer": "features.2", "unit": 3, "url": "/layer/features.2/unit/3",
                                                "deleted": False, "label": "Curve, left", "note": "line 1\nline 2",
                                                "updated": None}
        form = c.post("/api/labels/features.5/0", data={"label": "Ärmel", "note": ""}, follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"] == "/layer/features.5/unit/0"
        multipart = c.post("/api/labels/features.5/1", files={"label": (None, "via FormData")}, headers=JSON)
        assert multipart.status_code == 200 and multipart.json()["label"] == "via FormData"
        got = c.get("/api/labels/features.2/3").json()
        assert (got["label"], got["note"]) == ("Curve, left", "line 1\nline 2")
        assert c.get("/api/labels/features.2/4").json() | {"updated": 0} == {
            "layer": "features.2", "unit": 4, "url": "/layer/features.2/unit/4", "label": "", "note": "",
            "updated": 0}
        assert [(e["layer"], e["unit"]) for e in c.get("/api/labels").json()] == [
            ("features.2", 3), ("features.5", 0), ("features.5", 1)]
        exported = c.get("/api/labels?format=csv")
        assert exported.headers["content-type"].startswith("text/csv")
        assert exported.headers["content-disposition"] == 'attachment; filename="labels.csv"'
        rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
        assert [(r["unit"], r["label"], r["note"]) for r in rows] == [
            ("3", "Curve, left", "line 1\nline 2"), ("0", "Ärmel", ""), ("1", "via FormData", "")]
        deleted = c.post("/api/labels/features.5/1", data={"label": ""}, headers=JSON).json()
        assert deleted["deleted"] is True
    # a new server on the same file: the label is found by search
    with TestClient(_app(tiny_atlas, path)) as c:
        assert [(e["layer"], e["unit"]) for e in c.app.state.labels.search("curve")] == [("features.2", 3)]
        assert [e["label"] for e in c.get("/api/labels?q=ärm").json()] == ["Ärmel"]
        assert len(c.get("/api/labels").json()) == 2
    assert sorted(p.name for p in tiny_atlas.rglob("*")) == before  # the atlas folder is never written


@pytest.mark.parametrize("url, kwargs, status, message", [
    ("/api/labels/features.2/%C2%B2", {"data": {"label": "x"}}, 404, "digits 0-9"),
    ("/api/labels/features.2/%D9%A3", {"data": {"label": "x"}}, 404, "digits 0-9"),
    ("/api/labels/features.2/99", {"data": {"label": "x"}}, 404, "not in this atlas"),
    ("/api/labels/features.9/0", {"data": {"label": "x"}}, 404, "unknown layer 'features.9'"),
    ("/api/labels/features.2/0", {"data": {"label": "x" * (MAX_LABEL + 1)}}, 400, f"at most {MAX_LABEL}"),
    ("/api/labels/features.2/0", {"data": {"note": "a\x1bb"}}, 400, "control character"),
    ("/api/labels/features.2/0", {"content": b"label=%FF", "headers": {"Content-Type":
                                  "application/x-www-form-urlencoded"}}, 400, "cannot read the form"),
    ("/api/labels/features.2/0", {"data": {"other": "x"}}, 400, "label and/or note"),
    ("/api/labels/features.2/0", {"data": {"note": "x" * 70_000}}, 413, "limited to"),
    ("/api/labels/features.2/0", {"json": {"label": "x"}}, 415, "as a form"),
])
def test_bad_label_posts(tiny_atlas, tmp_path, url, kwargs, status, message):
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny_atlas, tmp_path / "labels.sqlite")) as c:
        r = c.post(url, **kwargs)
        assert r.status_code == status, r.text
        assert message in r.json()["detail"]
        assert c.get("/api/labels").json() == []
        assert c.get("/api/labels?format=xml").status_code == 400
        assert c.get("/api/labels/features.2/%C2%B2").status_code == 404


def test_a_locked_labels_file_is_503(tiny_atlas, tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny_atlas, tmp_path / "labels.sqlite")) as c:
        c.app.state.labels._con.execute("PRAGMA busy_timeout=50")
        other = sqlite3.connect(tmp_path / "labels.sqlite", isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            r = c.post("/api/labels/features.2/0", data={"label": "x"}, headers=JSON)
            assert r.status_code == 503 and "cannot write the labels file" in r.json()["detail"]
            assert c.get("/api/labels").status_code == 503
        finally:
            other.close()
        assert c.get("/api/labels").json() == []


def test_no_annotate_no_label_routes(client):
    assert client.post("/api/labels/features.2/3", data={"label": "x"}).status_code in (404, 405)
    assert client.get("/api/labels").status_code == 404


def test_cross_origin_post_is_refused(tiny_atlas, tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny_atlas, tmp_path / "labels.sqlite")) as c:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            r = c.post("/api/labels/features.2/3", data={"label": "pwned"}, headers=headers)
            assert r.status_code == 403
        ok = c.post("/api/labels/features.2/3", data={"label": "mine"}, headers={"Origin": "http://testserver"} | JSON)
        assert ok.status_code == 200
        assert [e["label"] for e in c.get("/api/labels").json()] == ["mine"]


# -- the export command ------------------------------------------------------------------------------------------
def test_cli_export(tmp_path, atlas_dir, capsys):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, atlas_root=atlas_dir, fingerprint=FP) as ls:
        _fill(ls)
        expected = ls.all()
    assert main(["atlas", "labels", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == expected
    out = tmp_path / "export" / "labels.csv"
    assert main(["atlas", "labels", str(path), "--out", str(out)]) == 0
    assert "4 labelled units" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))
    assert [r | {"unit": int(r["unit"])} for r in rows] == expected
    assert main(["atlas", "labels", str(path), "--format", "json", "--out", str(tmp_path / "l.txt")]) == 0
    assert json.loads((tmp_path / "l.txt").read_text("utf-8"))["labels"] == expected
    capsys.readouterr()
    for args, message in ((["--out", str(path)], "is the labels file itself"),
                          (["--out", str(tmp_path)], "is a folder")):
        assert main(["atlas", "labels", str(path), *args]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["atlas", "labels", str(tmp_path / "none.sqlite")]) == 1
    assert "no labels file at" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()
