"""``cnnscope atlas build|info|kinds``, ``cnnscope serve`` and ``cnnscope demo --serve`` / section 80."""

from __future__ import annotations

import pytest

from cnnscope.atlas import AtlasStore
from cnnscope.cli import main
from tests.atlas import helpers


def test_build_info_and_resume(tmp_path, capsys):
    out = tmp_path / "atlas"
    args = ["atlas", "build", "efficientnet_lite0", "--layers", "blocks.1.1.bn1.act", "--channels", "0-1", "--kinds",
            "circuit", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "built 2 units (0 already there) with circuit" in text and f"cnnscope serve {out}" in text
    assert main(args) == 0
    assert "built 0 units (2 already there)" in capsys.readouterr().out
    assert main(["atlas", "info", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "efficientnet_lite0 · 2 units" in text and "blocks.1.1.bn1.act" in text and "integrity: ok" in text
    with AtlasStore(out) as st:
        assert st.units("blocks.1.1.bn1.act") == [0, 1]
        assert st.get_meta("kinds") == ["circuit"]
    assert main(args[:-4] + ["--top-k", "3"] + args[-4:]) == 1  # other settings: refused, nothing mixed
    assert "other settings (top_k 9 -> 3)" in capsys.readouterr().err


def test_errors_are_one_line(tmp_path, capsys):
    code = main(["atlas", "build", "efficientnet_lite0", "--layers", "blocks.1.9", "--kinds", "featurevis",
                 "--out", str(tmp_path / "a"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: unknown layer 'blocks.1.9'; did you mean") and "\n" not in err
    code = main(["atlas", "info", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no atlas at" in err and "\n" not in err
    code = main(["atlas", "build", "efficientnet_lite0", "--layers", "blocks.1.1", "--kinds", "featurvis",
                 "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert code == 1 and "did you mean: featurevis" in capsys.readouterr().err


def test_kinds_table(capsys):
    assert main(["atlas", "kinds"]) == 0
    text = capsys.readouterr().out
    for name in ("featurevis", "featurevis_neuron", "examples", "histogram", "tuning"):
        assert name in text


@pytest.fixture()
def fake_serve(monkeypatch):
    from cnnscope import web

    calls = []
    monkeypatch.setattr(web, "serve", lambda app, host, port: calls.append((app, host, port)))
    return calls


def test_demo_serve_starts_the_viewer_on_the_demo_atlas(tmp_path, fake_serve, capsys):
    from fastapi.testclient import TestClient

    out = tmp_path / "demo"
    helpers.build_tiny(out / "atlas", max_units=3)
    assert main(["demo", "--only", "20", "--serve", "--out", str(out), "--device", "cpu"]) == 0
    [(app, host, port)] = fake_serve
    assert (host, port) == ("127.0.0.1", 8000)
    assert "serving the demo atlas" in capsys.readouterr().out
    with TestClient(app) as c:
        assert c.get("/api/model").json()["summary"]["units"] == 3


def test_demo_serve_without_an_atlas_says_what_to_do(tmp_path, fake_serve, capsys):
    assert main(["demo", "--only", "20", "--serve", "--out", str(tmp_path), "--device", "cpu"]) == 1
    assert "no demo atlas" in capsys.readouterr().err and fake_serve == []


def test_serve_command(tmp_path, fake_serve, capsys):
    helpers.build_tiny(tmp_path, max_units=2)
    assert main(["serve", str(tmp_path), "--port", "8765", "--no-explain"]) == 0
    [(app, host, port)] = fake_serve
    assert (host, port) == ("127.0.0.1", 8765)
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert "anyone who can reach this machine" in capsys.readouterr().err
