"""The atlas store: round trip, atomic units, schema versions, integrity checks, read-only access."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from cnnscope.atlas import SCHEMA_VERSION, Artifact, AtlasError, AtlasStore, AtlasVersionError, NotInAtlas
from cnnscope.atlas.encode import decode_png, png_bytes
from cnnscope.atlas.store import BLOB_DIR


def _image(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _fill(store: AtlasStore, layers=(("a", 4), ("b", 3))) -> None:
    store.set_meta(kinds=["k"], model={"name": "m"})
    for pos, (name, n) in enumerate(layers):
        store.put_layer(name, pos, "Conv2d", (n, 5, 5), n, range(n))
        for u in range(n):
            store.write_unit(name, u, [
                Artifact("k", "picture", data=png_bytes(_image(10 * pos + u)), numbers={"score": u / 3},
                         provenance={"seed": u, "spec": {"objective": f"channel({name},{u})"}}),
                Artifact("k", "numbers", mime="application/json", numbers=[1, 2, u]),
            ], seconds=0.5)


@pytest.mark.parametrize("inline_max", [1 << 20, 0], ids=["inline", "blob-files"])
def test_round_trip(tmp_path, inline_max):
    with AtlasStore(tmp_path, writable=True, inline_max=inline_max) as st:
        _fill(st)
    with AtlasStore(tmp_path) as st:
        assert [r.name for r in st.layers()] == ["a", "b"]
        assert [(r.built, r.planned) for r in st.layers()] == [(4, (0, 1, 2, 3)), (3, (0, 1, 2))]
        assert st.all_units() == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1), ("b", 2)]
        arts = st.artifacts("b", 2)
        assert [(a.kind, a.name, a.mime) for a in arts] == [("k", "picture", "image/png"),
                                                            ("k", "numbers", "application/json")]
        rec, data = st.artifact_bytes(arts[0].id)
        np.testing.assert_array_equal(decode_png(data), _image(12))
        assert rec.numbers == {"score": 2 / 3}
        assert rec.provenance["seed"] == 2 and rec.provenance["spec"] == {"objective": "channel(b,2)"}
        assert rec.provenance["cnnscope_version"] == st.get_meta("cnnscope_version")
        assert arts[1].numbers == [1, 2, 2] and arts[1].size == 0
        assert (rec.file is not None) == (inline_max == 0)
        assert st.summary()["units"] == 7 and st.summary()["artifacts"] == 14
        assert st.integrity_check() == []
        assert st.get_meta("model") == {"name": "m"}
    assert (tmp_path / BLOB_DIR).is_dir() == (inline_max == 0)


def test_unit_is_atomic_and_unique(tmp_path):
    with AtlasStore(tmp_path, writable=True) as st:
        _fill(st, layers=(("a", 2),))
        before = st.summary()
        with pytest.raises(AtlasError, match="already built"):
            st.write_unit("a", 1, [Artifact("k", "picture", data=b"x")], 0.1)
        # two artifacts of the same name: the whole unit is rolled back, nothing half-written remains
        st.put_layer("a", 0, "Conv2d", (4, 5, 5), 4, range(4))
        with pytest.raises(AtlasError):
            st.write_unit("a", 2, [Artifact("k", "x", data=b"1"), Artifact("k", "x", data=b"2")], 0.1)
        assert not st.has_unit("a", 2)
        assert st.summary() == before
        assert st.integrity_check() == []


def test_other_schema_version_is_refused_clearly(tmp_path):
    with AtlasStore(tmp_path, writable=True) as st:
        _fill(st, layers=(("a", 1),))
    con = sqlite3.connect(tmp_path / "atlas.sqlite")
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    for writable in (False, True):
        with pytest.raises(AtlasVersionError) as err:
            AtlasStore(tmp_path, writable=writable)
        msg = str(err.value)
        assert f"schema version {SCHEMA_VERSION + 1}" in msg and f"reads schema version {SCHEMA_VERSION}" in msg
        assert "rebuild" in msg


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(AtlasError, match="no atlas at .*cnnscope atlas build"):
        AtlasStore(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "atlas.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(AtlasError, match="not a cnnscope atlas"):
        AtlasStore(tmp_path / "junk")
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "atlas.sqlite")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(AtlasError, match="not a cnnscope atlas"):
        AtlasStore(other)


def test_read_only_store_refuses_writes(tmp_path):
    with AtlasStore(tmp_path, writable=True) as st:
        _fill(st, layers=(("a", 1),))
    with AtlasStore(tmp_path) as st:
        with pytest.raises(AtlasError, match="read-only"):
            st.write_unit("a", 5, [], 0.0)
        with pytest.raises(AtlasError, match="read-only"):
            st.set_meta(x=1)


def test_integrity_check_finds_damage(tmp_path):
    with AtlasStore(tmp_path, writable=True, inline_max=0) as st:
        _fill(st, layers=(("a", 2),))
        st.set_meta(kinds=["k", "other"])
        blobs = sorted((tmp_path / BLOB_DIR).rglob("*.png"))
        blobs[0].write_bytes(b"tampered")
        blobs[1].unlink()
        problems = st.integrity_check()
    assert any("does not match its SHA-256" in p for p in problems)
    assert any("is missing" in p for p in problems)
    assert sum("lacks artifacts of kind other" in p for p in problems) == 2


def test_lookups_and_neighbors(tmp_path):
    with AtlasStore(tmp_path, writable=True) as st:
        _fill(st, layers=(("conv1", 2), ("conv2", 2)))
        st.put_layer("conv3", 2, "Conv2d", (8, 1, 1), 8, [0, 5])  # planned but not built yet
    with AtlasStore(tmp_path) as st:
        assert st.neighbors("conv1", 0) == (None, ("conv1", 1))
        assert st.neighbors("conv1", 1) == (("conv1", 0), ("conv2", 0))
        assert st.neighbors("conv2", 1) == (("conv2", 0), None)
        with pytest.raises(NotInAtlas, match="did you mean: conv2"):
            st.layer("conv22")
        with pytest.raises(NotInAtlas, match="unit 7 of layer 'conv2' is not in this atlas.*built: units 0-1"):
            st.require_unit("conv2", 7)
        with pytest.raises(NotInAtlas, match="no units yet"):
            st.require_unit("conv3", 0)
        assert st.layer("conv3").planned == (0, 5) and st.layer("conv3").built == 0
        with pytest.raises(NotInAtlas):
            st.artifact(10_000)


def test_readers_see_whole_units_while_a_writer_commits(tmp_path):
    """WAL: a reader thread polling during writes never sees a unit without all its artifacts."""
    writer = AtlasStore(tmp_path, writable=True)
    writer.put_layer("a", 0, "Conv2d", (200, 1, 1), 200, range(200))
    reader = AtlasStore(tmp_path)
    seen, bad, stop = [], [], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            units = reader.units("a")
            seen.append(len(units))
            for u in units[-3:]:
                if len(reader.artifacts("a", u)) != 3:
                    bad.append(u)

    t = threading.Thread(target=poll)
    t.start()
    try:
        for u in range(200):
            writer.write_unit("a", u, [Artifact("k", str(j), data=bytes([u % 256, j])) for j in range(3)], 0.0)
    finally:
        stop.set()
        t.join()
        reader.close()
        writer.close()
    assert bad == []
    assert len(seen) > 1 and seen == sorted(seen)
