"""The atlas store: one SQLite file (WAL mode) per atlas, schema-versioned.

An atlas folder holds ``atlas.sqlite`` and, for artifacts larger than ``inline_max`` bytes, content-addressed
files under ``blobs/``. The database records the model (description and fingerprint), its layers, the units
that are finished, and every artifact of a unit (PNG bytes and the JSON numbers behind them) with its
provenance (cnnscope version, spec/recipe, seed, timings).

A unit row exists only when all of its artifacts exist: :meth:`AtlasStore.write_unit` inserts them in one
transaction, so killing a writer at any moment leaves either the whole unit or nothing. Readers (the web
viewer) open the file read-only and see consistent snapshots while a build is writing (WAL). A reader never
creates files in the atlas folder: while no writer holds the atlas (no ``atlas.sqlite-wal``) it opens the file as
immutable (read-only storage works too) and switches to a shared read-only connection once a writer appears.

``images`` (whole source images of the dataset examples), ``unit_facts`` (numbers to sort and filter units by) and
``unit_links`` (each unit's strongest inputs, so outgoing units are one indexed query) are written in the same
transaction as their unit.

``artifact_counts`` keeps the artifact count and bytes per layer and kind, updated in the transaction that writes
a unit, so summaries never scan the artifacts table (atlases written before it existed are scanned once per open).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import unknown
from .records import (
    Artifact,
    ArtifactRecord,
    AtlasError,
    AtlasVersionError,
    LayerRecord,
    NotInAtlas,
    cnnscope_version,
    dumps,
    format_units,
)

#: Version of the table layout; an atlas of another version is refused with :class:`AtlasVersionError`.
SCHEMA_VERSION = 1
DB_NAME = "atlas.sqlite"
BLOB_DIR = "blobs"
_BLOB_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]{1,8}$")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg", "application/json": "json"}
#: MIME types the viewer serves artifacts as (anything else is refused there and reported by the integrity check)
SERVED_MIME = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/json"})

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE layers (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, kind TEXT NOT NULL, shape TEXT NOT NULL,
    channels INTEGER NOT NULL, planned TEXT NOT NULL DEFAULT '[]');
CREATE TABLE units (
    layer TEXT NOT NULL REFERENCES layers(name), unit INTEGER NOT NULL, seconds REAL NOT NULL,
    finished REAL NOT NULL, PRIMARY KEY (layer, unit));
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY, layer TEXT NOT NULL, unit INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    mime TEXT NOT NULL, sha256 TEXT, size INTEGER NOT NULL DEFAULT 0, data BLOB, file TEXT, numbers TEXT,
    provenance TEXT NOT NULL, UNIQUE (layer, unit, kind, name),
    FOREIGN KEY (layer, unit) REFERENCES units(layer, unit));
CREATE INDEX artifacts_by_kind ON artifacts(layer, kind, name, unit);
"""
_COUNTS = """CREATE TABLE IF NOT EXISTS artifact_counts (
    layer TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (layer, kind))"""
#: tables added within schema version 1: a writer creates them in an older atlas (empty), readers treat a missing
#: one as empty
_EXTRA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, label TEXT, mime TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS unit_facts (
    layer TEXT NOT NULL, unit INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (layer, unit, name));
CREATE INDEX IF NOT EXISTS facts_by_value ON unit_facts(layer, name, value);
CREATE TABLE IF NOT EXISTS unit_links (
    src_layer TEXT NOT NULL, src_unit INTEGER NOT NULL, dst_layer TEXT NOT NULL, dst_unit INTEGER NOT NULL,
    weight REAL NOT NULL, norm REAL NOT NULL, PRIMARY KEY (dst_layer, dst_unit, src_layer, src_unit));
CREATE INDEX IF NOT EXISTS links_by_source ON unit_links(src_layer, src_unit, norm);
"""


class AtlasStore:
    """Read and write one atlas folder.

    Open an existing atlas with ``AtlasStore(path)`` (read-only by default) and create or extend one with
    ``AtlasStore(path, writable=True)``. Read-only stores are safe to share between threads: each thread gets
    its own SQLite connection.

    Args:
        path: the atlas folder (or its ``atlas.sqlite``).
        writable: create the folder/database when missing and allow writes.
        inline_max: artifacts larger than this many bytes go to ``blobs/`` beside the database.

    Raises:
        AtlasError: no atlas at ``path`` (read-only) or the file is not a cnnscope atlas.
        AtlasVersionError: the atlas has another schema version.
    """

    def __init__(self, path: str | Path, writable: bool = False, inline_max: int = 256 * 1024) -> None:
        p = Path(path)
        self.root = p.parent if p.name == DB_NAME else p
        self.db_path = self.root / DB_NAME
        self.writable = writable
        self.inline_max = int(inline_max)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if writable:
            self.root.mkdir(parents=True, exist_ok=True)
            self._init_schema()
        elif not self.db_path.is_file():
            hint = " (it holds no atlas.sqlite)" if self.root.is_dir() else ""
            raise AtlasError(f"no atlas at {self.root}{hint}; build one with `cnnscope atlas build MODEL --out "
                             f"{self.root}`")
        self._check_version()

    # -- connections ----------------------------------------------------------------------------------
    @property
    def _wal(self) -> Path:
        return self.db_path.with_name(DB_NAME + "-wal")

    def _stamp(self) -> tuple[int, int]:
        """The database file's modification time and size (an immutable reader reopens when they change)."""
        try:
            st = self.db_path.stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def _connect(self) -> tuple[sqlite3.Connection, bool]:
        """A new connection and whether it is immutable (a reader with no writer around: nothing is created)."""
        immutable = False
        if self.writable:
            con = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
        else:
            # a shared read-only connection creates -wal/-shm files, so it is used only while they exist
            immutable = not self._wal.exists()
            uri = self.db_path.resolve().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
            con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA foreign_keys=ON")
        return con, immutable

    @property
    def con(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use; an immutable one is replaced when a writer appears)."""
        con = getattr(self._local, "con", None)
        if con is not None and self._local.immutable and (self._wal.exists() or self._stamp() != self._local.stamp):
            with self._lock:
                if con in self._connections:
                    self._connections.remove(con)
            con.close()
            con = None
        if con is None:
            try:
                con, self._local.immutable = self._connect()
            except sqlite3.DatabaseError as exc:
                raise AtlasError(f"cannot open the atlas database {self.db_path}: {exc}") from None
            self._local.con = con
            self._local.summary = None
            self._local.stamp = self._stamp()
            with self._lock:
                self._connections.append(con)
        return con

    def close(self) -> None:
        """Close every connection this store opened (idempotent)."""
        with self._lock:
            while self._connections:
                self._connections.pop().close()
        self._local = threading.local()

    def __enter__(self) -> AtlasStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        self._require_writable()
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _require_writable(self) -> None:
        if not self.writable:
            raise AtlasError(f"the atlas {self.root} was opened read-only")

    def _init_schema(self) -> None:
        con = self.con
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise AtlasError(f"{self.db_path} is not a cnnscope atlas ({exc})") from None
        if tables or version:
            if "meta" in tables and "artifact_counts" not in tables and version == SCHEMA_VERSION:
                with self.transaction() as c:  # an atlas written before the counts table: fill it once
                    c.execute(_COUNTS)
                    c.execute("INSERT INTO artifact_counts SELECT layer, kind, COUNT(*), COALESCE(SUM(size), 0) "
                              "FROM artifacts GROUP BY layer, kind")
            if "meta" in tables and version == SCHEMA_VERSION and not {"images", "unit_facts"} <= tables:
                with self.transaction() as c:
                    for stmt in _EXTRA.split(";"):
                        if stmt.strip():
                            c.execute(stmt)
            return  # existing file; _check_version decides
        with self.transaction() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(_COUNTS)
            for stmt in _EXTRA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            now = time.time()
            for key, value in (("schema_version", SCHEMA_VERSION), ("cnnscope_version", cnnscope_version()),
                               ("created", now), ("updated", now)):
                c.execute("INSERT INTO meta VALUES (?, ?)", (key, dumps(value)))
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _check_version(self) -> None:
        try:
            version = self.con.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise AtlasError(f"{self.db_path} is not a cnnscope atlas ({exc})") from None
        if "meta" not in tables:
            raise AtlasError(f"{self.db_path} is an SQLite file but not a cnnscope atlas (no meta table)")
        if version != SCHEMA_VERSION:
            row = self.con.execute("SELECT value FROM meta WHERE key='cnnscope_version'").fetchone()
            writer = json.loads(row[0]) if row else "unknown"
            raise AtlasVersionError(
                f"the atlas {self.root} has schema version {version} (written by cnnscope {writer}), but this "
                f"cnnscope {cnnscope_version()} reads schema version {SCHEMA_VERSION}; rebuild it with `cnnscope atlas "
                f"build ... --out NEW_DIR` or open it with cnnscope {writer}")

    # -- meta -----------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: object = None) -> object:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, **values: object) -> None:
        """Set meta entries (JSON values) in one transaction."""
        values = {**values, "updated": time.time()}
        with self.transaction() as c:
            for key, value in values.items():
                c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, dumps(value)))

    def meta(self) -> dict:
        """Every meta entry."""
        return {k: json.loads(v) for k, v in self.con.execute("SELECT key, value FROM meta ORDER BY key")}

    # -- layers ---------------------------------------------------------------------------------------
    def put_layer(self, name: str, position: int, kind: str, shape: Sequence[int], channels: int,
                  planned: Iterable[int]) -> None:
        """Insert a layer, or extend its planned units (planned units are merged, never dropped)."""
        with self.transaction() as c:
            row = c.execute("SELECT planned FROM layers WHERE name=?", (name,)).fetchone()
            merged = sorted(set(planned) | set(json.loads(row[0]) if row else []))
            c.execute("INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?, ?, ?)",
                      (name, int(position), kind, dumps(list(shape)), int(channels), dumps(merged)))

    _LAYER_SQL = ("SELECT l.name, l.position, l.kind, l.shape, l.channels, l.planned, "
                  "(SELECT COUNT(*) FROM units u WHERE u.layer = l.name) FROM layers l")

    @staticmethod
    def _layer_record(r: tuple) -> LayerRecord:
        return LayerRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], tuple(json.loads(r[5])), r[6])

    def layers(self) -> list[LayerRecord]:
        """Every layer in model order, with planned and built unit counts."""
        return [self._layer_record(r) for r in self.con.execute(self._LAYER_SQL + " ORDER BY l.position")]

    def layer_names(self) -> list[str]:
        """Layer names in model order."""
        return [r[0] for r in self.con.execute("SELECT name FROM layers ORDER BY position")]

    def layer(self, name: str) -> LayerRecord:
        """One layer; an unknown name raises :class:`NotInAtlas` listing close matches."""
        row = self.con.execute(self._LAYER_SQL + " WHERE l.name = ?", (name,)).fetchone()
        if row is None:
            raise NotInAtlas(unknown("layer", name, self.layer_names()) + " in this atlas")
        return self._layer_record(row)

    # -- units ----------------------------------------------------------------------------------------
    def units(self, layer: str) -> list[int]:
        """Finished units of ``layer`` in increasing order."""
        return [r[0] for r in self.con.execute("SELECT unit FROM units WHERE layer=? ORDER BY unit", (layer,))]

    def all_units(self) -> list[tuple[str, int]]:
        """Every finished ``(layer, unit)`` in model order."""
        return [(r[0], r[1]) for r in self.con.execute(
            "SELECT u.layer, u.unit FROM units u JOIN layers l ON l.name = u.layer ORDER BY l.position, u.unit")]

    def has_unit(self, layer: str, unit: int) -> bool:
        return self.con.execute("SELECT 1 FROM units WHERE layer=? AND unit=?", (layer, unit)).fetchone() is not None

    def require_unit(self, layer: str, unit: int) -> LayerRecord:
        """The layer record when ``unit`` is built; otherwise :class:`NotInAtlas` with what exists."""
        rec = self.layer(layer)
        if not self.has_unit(layer, unit):
            built = self.units(layer)
            span = f"units {format_units(built)}" if built else "no units yet"
            raise NotInAtlas(f"unit {unit} of layer {layer!r} is not in this atlas (the layer has "
                             f"{rec.channels} channels; built: {span})")
        return rec

    def neighbors(self, layer: str, unit: int) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        """The built units before and after ``(layer, unit)`` in model order (crossing layer borders)."""
        pos = self.require_unit(layer, unit).position
        base = "SELECT u.layer, u.unit FROM units u JOIN layers l ON l.name = u.layer WHERE "
        args = {"p": pos, "u": int(unit)}
        prev = self.con.execute(base + "(l.position < :p OR (l.position = :p AND u.unit < :u))"
                                " ORDER BY l.position DESC, u.unit DESC LIMIT 1", args).fetchone()
        nxt = self.con.execute(base + "(l.position > :p OR (l.position = :p AND u.unit > :u))"
                               " ORDER BY l.position, u.unit LIMIT 1", args).fetchone()
        return (tuple(prev) if prev else None), (tuple(nxt) if nxt else None)  # type: ignore[return-value]

    def write_unit(self, layer: str, unit: int, artifacts: Sequence[Artifact], seconds: float) -> None:
        """Store a finished unit and all its artifacts atomically (all or nothing).

        Raises:
            AtlasError: the unit is already in the atlas, or its layer was never added.
        """
        self._require_writable()
        rows, counts, facts, images, links = [], {}, {}, {}, {}
        for a in artifacts:
            for name, value in (a.facts or {}).items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    facts.setdefault(str(name), float(value))
            for img in a.images:
                images.setdefault(int(img.image_id), img)
            for link in a.links:
                finite = all(math.isfinite(float(link[k])) for k in ("weight", "norm"))
                if isinstance(link.get("layer"), str) and finite:
                    links[(link["layer"], int(link["unit"]))] = (float(link["weight"]), float(link["norm"]))
            data = a.data or b""
            sha = hashlib.sha256(data).hexdigest() if data else None
            file = self._write_blob(data, sha, a.mime) if len(data) > self.inline_max else None
            prov = {"cnnscope_version": cnnscope_version(), **a.provenance}
            rows.append((layer, int(unit), a.kind, a.name, a.mime, sha, len(data),
                         None if file or not data else data, file,
                         None if a.numbers is None else dumps(a.numbers), dumps(prov)))
            n, size = counts.get(a.kind, (0, 0))
            counts[a.kind] = (n + 1, size + len(data))
        try:
            with self.transaction() as c:
                c.execute("INSERT INTO units VALUES (?, ?, ?, ?)", (layer, int(unit), float(seconds), time.time()))
                c.executemany("INSERT INTO artifacts (layer, unit, kind, name, mime, sha256, size, data, file, "
                              "numbers, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                c.executemany("INSERT INTO artifact_counts VALUES (?, ?, ?, ?) ON CONFLICT (layer, kind) DO UPDATE "
                              "SET n = n + excluded.n, bytes = bytes + excluded.bytes",
                              [(layer, k, n, b) for k, (n, b) in counts.items()])
                c.executemany("INSERT INTO unit_facts VALUES (?, ?, ?, ?)",
                              [(layer, int(unit), k, v) for k, v in facts.items()])
                c.executemany("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              [(i, img.name, img.label, img.mime, hashlib.sha256(img.data).hexdigest(), len(img.data),
                                int(img.width), int(img.height), img.data) for i, img in images.items()])
                c.executemany("INSERT OR REPLACE INTO unit_links VALUES (?, ?, ?, ?, ?, ?)",
                              [(src, su, layer, int(unit), w, n) for (src, su), (w, n) in links.items()])
        except sqlite3.IntegrityError as exc:
            raise AtlasError(f"cannot store unit {unit} of layer {layer!r}: {exc} (already built, or duplicate "
                             "artifact names)") from None

    def _write_blob(self, data: bytes, sha: str | None, mime: str) -> str:
        rel = f"{sha[:2]}/{sha}.{_EXT.get(mime, 'bin')}"
        target = self.root / BLOB_DIR / rel
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a killed writer leaves no half file under the final name
        return rel

    # -- artifacts ------------------------------------------------------------------------------------
    _COLS = "id, layer, unit, kind, name, mime, sha256, size, numbers, provenance, file"

    @staticmethod
    def _record(r: tuple) -> ArtifactRecord:
        return ArtifactRecord(id=r[0], layer=r[1], unit=r[2], kind=r[3], name=r[4], mime=r[5], sha256=r[6],
                              size=r[7], numbers=json.loads(r[8]) if r[8] is not None else None,
                              provenance=json.loads(r[9]), file=r[10])

    def artifacts(self, layer: str, unit: int) -> list[ArtifactRecord]:
        """Every artifact of a unit (in insertion order)."""
        rows = self.con.execute(f"SELECT {self._COLS} FROM artifacts WHERE layer=? AND unit=? ORDER BY id",
                                (layer, unit)).fetchall()
        return [self._record(r) for r in rows]

    def artifact(self, artifact_id: int) -> ArtifactRecord:
        row = self.con.execute(f"SELECT {self._COLS} FROM artifacts WHERE id=?", (int(artifact_id),)).fetchone()
        if row is None:
            raise NotInAtlas(f"no artifact {artifact_id} in this atlas")
        return self._record(row)

    def artifact_bytes(self, artifact_id: int) -> tuple[ArtifactRecord, bytes]:
        """The record and the bytes of one artifact (read from ``blobs/`` when stored beside the database)."""
        row = self.con.execute(f"SELECT {self._COLS}, data FROM artifacts WHERE id=?",
                               (int(artifact_id),)).fetchone()
        if row is None:
            raise NotInAtlas(f"no artifact {artifact_id} in this atlas")
        rec = self._record(row[:-1])
        if rec.file is None:
            return rec, bytes(row[-1] or b"")
        if not _BLOB_RE.match(rec.file):
            raise AtlasError(f"artifact {artifact_id} names an invalid blob path")
        try:
            return rec, (self.root / BLOB_DIR / rec.file).read_bytes()
        except OSError as exc:
            raise AtlasError(f"artifact {artifact_id}: blob file missing ({exc})") from None

    def thumbnails(self, layer: str, kind: str, name: str, units: Sequence[int]) -> dict[int, int]:
        """``unit -> artifact id`` of the ``(kind, name)`` artifact for the given units (absent ones left out)."""
        if not units:
            return {}
        marks = ",".join("?" * len(units))
        rows = self.con.execute(f"SELECT unit, id FROM artifacts WHERE layer=? AND kind=? AND name=? "
                                f"AND unit IN ({marks})", (layer, kind, name, *[int(u) for u in units]))
        return {r[0]: r[1] for r in rows}

    # -- whole images, facts, links -----------------------------------------------------------------------
    def _has_table(self, name: str) -> bool:
        known = self.__dict__.setdefault("_tables_seen", set())
        if name not in known and self.con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                                  (name,)).fetchone():
            known.add(name)
        return name in known

    def image(self, image_id: int) -> tuple[dict, bytes]:
        """A stored whole image: ``({"id", "name", "label", "mime", "width", "height", "sha256"}, bytes)``.

        Raises:
            NotInAtlas: the atlas holds no such image (built before whole images were stored, or never an example).
        """
        row = None
        if self._has_table("images"):
            row = self.con.execute("SELECT id, name, label, mime, width, height, sha256, data FROM images WHERE id=?",
                                   (int(image_id),)).fetchone()
        if row is None:
            raise NotInAtlas(f"image {image_id} is not stored in this atlas")
        keys = ("id", "name", "label", "mime", "width", "height", "sha256")
        return dict(zip(keys, row[:-1], strict=True)), bytes(row[-1])

    def image_ids(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` the atlas holds whole images of."""
        if not ids or not self._has_table("images"):
            return set()
        marks = ",".join("?" * len(ids))
        return {r[0] for r in self.con.execute(f"SELECT id FROM images WHERE id IN ({marks})", [int(i) for i in ids])}

    def facts(self, layer: str, unit: int) -> dict[str, float]:
        """The sortable numbers of one unit (``{}`` in an atlas without them)."""
        if not self._has_table("unit_facts"):
            return {}
        return dict(self.con.execute("SELECT name, value FROM unit_facts WHERE layer=? AND unit=? ORDER BY name",
                                     (layer, int(unit))).fetchall())

    def fact_names(self, layer: str) -> list[str]:
        """The facts stored for units of ``layer``."""
        if not self._has_table("unit_facts"):
            return []
        return [r[0] for r in self.con.execute("SELECT DISTINCT name FROM unit_facts WHERE layer=? ORDER BY name",
                                               (layer,))]

    def fact_values(self, layer: str, name: str) -> dict[int, float]:
        """``unit -> value`` of one fact over a layer's units (units without it are left out)."""
        if not self._has_table("unit_facts"):
            return {}
        return dict(self.con.execute("SELECT unit, value FROM unit_facts WHERE layer=? AND name=?", (layer, name)))

    def incoming(self, layer: str, unit: int) -> list[dict]:
        """The unit's stored inputs, strongest (largest norm) first: ``[{"layer", "unit", "weight", "norm"}]``."""
        if not self._has_table("unit_links"):
            return []
        rows = self.con.execute("SELECT src_layer, src_unit, weight, norm FROM unit_links WHERE dst_layer=? AND "
                                "dst_unit=? ORDER BY norm DESC", (layer, int(unit)))
        return [{"layer": r[0], "unit": r[1], "weight": r[2], "norm": r[3]} for r in rows]

    def outgoing(self, layer: str, unit: int, limit: int = 12, names: Sequence[str] = ()) -> list[dict]:
        """The units that list this unit among their strongest inputs, strongest first (``limit`` at most);
        ``names``: other names of ``layer``'s tensor the links may be stored under."""
        if not self._has_table("unit_links"):
            return []
        srcs = list(dict.fromkeys([layer, *names]))
        marks = ",".join("?" * len(srcs))
        rows = self.con.execute(f"SELECT dst_layer, dst_unit, weight, norm FROM unit_links WHERE src_layer IN "
                                f"({marks}) AND src_unit=? ORDER BY norm DESC LIMIT ?", (*srcs, int(unit), int(limit)))
        return [{"layer": r[0], "unit": r[1], "weight": r[2], "norm": r[3]} for r in rows]

    def kinds_present(self) -> list[str]:
        """The artifact kinds stored for at least one unit (from the cached counts)."""
        return sorted(self._counts()["kinds"])

    def _counts(self) -> dict:
        """Artifact count, bytes and kinds: from ``artifact_counts`` (one scan of the artifacts table for atlases
        written before it), cached per connection until another connection commits (``PRAGMA data_version``)."""
        con = self.con
        version = con.execute("PRAGMA data_version").fetchone()[0]
        cached = getattr(self._local, "summary", None)
        if cached is not None and cached[0] == version:
            return cached[1]
        has_table = con.execute("SELECT 1 FROM sqlite_master WHERE name='artifact_counts'").fetchone() is not None
        sql = ("SELECT kind, SUM(n), SUM(bytes) FROM artifact_counts GROUP BY kind" if has_table else
               "SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM artifacts GROUP BY kind")
        rows = con.execute(sql).fetchall()
        counts = {"artifacts": sum(r[1] for r in rows), "artifact_bytes": sum(r[2] for r in rows),
                  "kinds": [r[0] for r in rows if r[1]]}
        self._local.summary = (version, counts)
        return counts

    # -- checks ---------------------------------------------------------------------------------------
    def integrity_check(self) -> list[str]:
        """Problems found (an empty list means the atlas is sound): :func:`cnnscope.atlas.integrity.integrity_problems`
        (SQLite's own checks, missing artifacts, blob and inline hashes, served types, cached counts, whole images)."""
        from .integrity import integrity_problems

        return integrity_problems(self)

    def summary(self) -> dict:
        """Counts for ``cnnscope atlas info`` and the JSON API (from the cached counts: no artifact scan)."""
        counts = self._counts()
        return {"root": str(self.root), "schema_version": SCHEMA_VERSION,
                "layers": self.con.execute("SELECT COUNT(*) FROM layers").fetchone()[0],
                "units": self.con.execute("SELECT COUNT(*) FROM units").fetchone()[0],
                "artifacts": counts["artifacts"], "artifact_bytes": counts["artifact_bytes"],
                "kinds": sorted(counts["kinds"])}


def open_atlas(path: str | Path) -> AtlasStore:
    """Open an existing atlas read-only (convenience for :class:`AtlasStore`)."""
    return AtlasStore(path, writable=False)


__all__ = ["DB_NAME", "SCHEMA_VERSION", "SERVED_MIME", "Artifact", "ArtifactRecord", "AtlasError", "AtlasStore",
           "AtlasVersionError", "LayerRecord", "NotInAtlas", "format_units", "open_atlas"]
