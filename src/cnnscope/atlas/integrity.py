"""The atlas's integrity check (``cnnscope atlas info --check``): what :meth:`AtlasStore.integrity_check` reports."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .store import _BLOB_RE, BLOB_DIR, SERVED_MIME

if TYPE_CHECKING:
    from .store import AtlasStore


def integrity_problems(store: AtlasStore) -> list[str]:
    """Problems found (an empty list means the atlas is sound).

    Checks SQLite's own ``integrity_check`` and foreign keys, that every kind of the atlas exists for every
    finished unit (except kinds recorded as not applicable to its layer), that blob files exist with the
    recorded SHA-256, that artifacts stored inside the database match their recorded SHA-256 and size, that every
    artifact has a type the viewer serves (:data:`SERVED_MIME`), that the cached counts match the artifacts, that
    stored whole images match their SHA-256 and have an image type, and that no unit row is duplicated.
    """
    problems: list[str] = []
    res = [r[0] for r in store.con.execute("PRAGMA integrity_check")]
    if res != ["ok"]:
        problems += [f"sqlite: {r}" for r in res]
    for r in store.con.execute("PRAGMA foreign_key_check"):
        problems.append(f"foreign key: table {r[0]} row {r[1]} references a missing {r[2]}")
    for r in store.con.execute("SELECT layer, unit, COUNT(*) FROM units GROUP BY layer, unit HAVING COUNT(*)>1"):
        problems.append(f"duplicate unit row {r[0]}:{r[1]}")
    kinds = store.get_meta("kinds", []) or []
    skipped = store.get_meta("not_applicable", {}) or {}
    for layer, unit in store.all_units():
        have = {r[0] for r in store.con.execute("SELECT DISTINCT kind FROM artifacts WHERE layer=? AND unit=?",
                                               (layer, unit))}
        missing = [k for k in kinds if k not in have and k not in skipped.get(layer, {})]
        if missing:
            problems.append(f"unit {layer}:{unit} lacks artifacts of kind {', '.join(missing)}")
    for aid, file, sha in store.con.execute("SELECT id, file, sha256 FROM artifacts WHERE file IS NOT NULL"):
        path = store.root / BLOB_DIR / file
        if not _BLOB_RE.match(file) or not path.is_file():
            problems.append(f"artifact {aid}: blob {file} is missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            problems.append(f"artifact {aid}: blob {file} does not match its SHA-256")
    for aid, sha, size, data in store.con.execute("SELECT id, sha256, size, data FROM artifacts "
                                                 "WHERE file IS NULL AND data IS NOT NULL"):
        data = bytes(data)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"artifact {aid}: its bytes in the database do not match the recorded SHA-256/size")
    if store._has_table("images"):
        for iid, sha, size, mime, data in store.con.execute("SELECT id, sha256, size, mime, data FROM images"):
            data = bytes(data)
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                problems.append(f"image {iid}: its bytes do not match the recorded SHA-256/size")
            if mime not in SERVED_MIME or mime == "application/json":
                problems.append(f"image {iid}: type {mime[:60]!r} is not an image type the viewer serves")
    for aid, mime in store.con.execute("SELECT id, mime FROM artifacts WHERE size > 0"):
        if mime not in SERVED_MIME:
            problems.append(f"artifact {aid}: type {mime[:60]!r} is not served by the viewer (images and JSON "
                            "only)")
    if store.con.execute("SELECT 1 FROM sqlite_master WHERE name='artifact_counts'").fetchone():
        actual = set(store.con.execute("SELECT layer, kind, COUNT(*), COALESCE(SUM(size), 0) FROM artifacts "
                                      "GROUP BY layer, kind"))
        cached = set(store.con.execute("SELECT layer, kind, n, bytes FROM artifact_counts WHERE n > 0"))
        if actual != cached:
            problems.append("the artifact counts table does not match the artifacts table")
    return problems
