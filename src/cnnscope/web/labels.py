"""Per-unit text labels and notes, kept in a labels file beside (never inside) an atlas.

The viewer writes labels only when it runs in annotate mode (``cnnscope serve ATLAS --annotate FILE``); the
atlas stays read-only (docs/ARCHITECTURE.md, the web viewer). A labels file is one SQLite file with a ``meta`` table
that marks it (``format``), records its schema version and the fingerprint of the atlas's model, and a ``labels``
table of ``(layer, unit, label, note, updated)``. Opening refuses a path inside the atlas folder, an SQLite file that
is not a labels file and a labels file made for another model. :class:`LabelStore` is safe to share between
threads (one connection behind a lock); :func:`cnnscope.web.label_routes.label_router` adds the ``/api/labels``
routes to the viewer.

A second table, ``example_labels``, holds labels of single dataset examples of a unit, keyed by ``(layer, unit,
image_id, y, x)`` (the image's id in the atlas's image source and the position in the layer's grid), for the
label-per-activation-band analysis (:mod:`cnnscope.dataset.labels`). It is added to older labels files when they
are opened for writing (the schema version stays 1: a cnnscope without it ignores the table). Example labels come
from the unit page (``/api/labels/{layer}/{unit}/examples``) or a CSV file (:func:`read_example_csv`,
``cnnscope labels import``).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..errors import CnnscopeError

#: Marks a cnnscope labels file (its ``meta`` table) and a JSON export.
FORMAT = "cnnscope-labels"
SCHEMA_VERSION = 1
MAX_LABEL = 200
MAX_NOTE = 4000
#: the longest layer name a label may name (a layer name from a URL; the atlas check comes first in the viewer)
MAX_LAYER = 300
#: bytes a label POST may carry (both fields at their limits, UTF-8, form-encoded, with room to spare)
MAX_BODY = 64 * 1024
EXPORT_FORMATS = ("json", "csv")
CSV_COLUMNS = ("layer", "unit", "label", "note", "updated")
#: columns of an example-label export
EXAMPLE_CSV_COLUMNS = ("layer", "unit", "image_id", "name", "y", "x", "label", "updated")
#: columns an example-label CSV must have (``image``: the image's id, or its name in the atlas or statistics)
IMPORT_COLUMNS = ("layer", "unit", "image", "y", "x", "label")
#: the largest image id or grid coordinate an example label may name (SQLite integers, JSON-safe)
MAX_INDEX = 2 ** 53

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE labels (
    layer TEXT NOT NULL, unit INTEGER NOT NULL, label TEXT NOT NULL, note TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (layer, unit));
"""
_EXAMPLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS example_labels (
    layer TEXT NOT NULL, unit INTEGER NOT NULL, image_id INTEGER NOT NULL, y INTEGER NOT NULL, x INTEGER NOT NULL,
    label TEXT NOT NULL, name TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (layer, unit, image_id, y, x))
"""


class LabelError(CnnscopeError, ValueError):
    """A labels file that cannot be used with this atlas, or a label or note that cannot be stored."""


class LabelFileError(LabelError):
    """The labels file cannot be opened, read or written now (read-only storage, another program holding it)."""


def _iso(seconds: float) -> str:
    """``2026-12-06T21:02:12Z`` (UTC, whole seconds)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(text: object, what: str, limit: int, newlines: bool) -> str:
    """``text`` without surrounding white space, checked: at most ``limit`` characters, no control characters
    (a newline only where ``newlines``; a browser's CR LF counts as one newline)."""
    if not isinstance(text, str):
        raise LabelError(f"the {what} must be text, got {type(text).__name__}")
    if newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for c in text:
        if (c == "\n" and newlines) or unicodedata.category(c) not in ("Cc", "Cs"):
            continue
        where = "" if newlines else " (and no line breaks)"
        raise LabelError(f"the {what} contains the control character {c!r}; write plain text{where}")
    text = text.strip()
    if len(text) > limit:
        raise LabelError(f"the {what} has {len(text)} characters; at most {limit} are allowed")
    return text


def _check_unit(layer: object, unit: object) -> tuple[str, int]:
    if not isinstance(layer, str) or not layer or len(layer) > MAX_LAYER:
        raise LabelError(f"a label needs a layer name of 1 to {MAX_LAYER} characters, got {str(layer)[:60]!r}")
    if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
        raise LabelError(f"a label needs a unit number 0 or more, got {unit!r}")
    return layer, unit


def _check_example(layer: object, unit: object, image_id: object, y: object, x: object
                   ) -> tuple[str, int, int, int, int]:
    layer, unit = _check_unit(layer, unit)
    for what, v in (("an image id", image_id), ("a row y", y), ("a column x", x)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_INDEX:
            raise LabelError(f"an example label needs {what} from 0 to 2**53, got {v!r}")
    return layer, unit, image_id, y, x  # type: ignore[return-value]


class LabelStore:
    """The labels file at ``path`` for the atlas in ``atlas_root`` (created when missing).

    Args:
        path: the labels file (an SQLite file); its folder must exist and must not be the atlas folder or inside it.
        atlas_root: the atlas folder (``AtlasStore.root``), or ``None`` when no atlas is at hand (exports).
        fingerprint: the fingerprint of the atlas's model (``store.get_meta("fingerprint")``), or ``None``. A file
            made for another fingerprint is refused; an atlas or a file without one is accepted (and a file without
            one takes the atlas's).
        readonly: open an existing file without writing anything (exports); a missing file is an error.

    Raises:
        LabelError: the folder is missing, the path is inside the atlas folder, the file is not a cnnscope labels
            file, has another schema version, or was made for another atlas.
    """

    def __init__(self, path: str | Path, *, atlas_root: str | Path | None, fingerprint: str | None,
                 readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._lock = threading.Lock()
        self._check_path(atlas_root)
        target = self.path.resolve().as_uri() + "?mode=ro" if readonly else self.path
        try:
            con = sqlite3.connect(target, uri=readonly, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise LabelFileError(f"cannot open the labels file {self.path} ({exc}); check that its folder is "
                                 "writable") from None
        con.create_function("casefold", 1, lambda s: s.casefold() if isinstance(s, str) else s, deterministic=True)
        self._con = con
        try:
            self._open(fingerprint, atlas_root)
        except sqlite3.DatabaseError as exc:
            con.close()
            raise LabelError(f"{self.path} is not a cnnscope labels file ({exc}); pass a labels file, or a new "
                             "file name to --annotate") from None
        except BaseException:
            con.close()
            raise
        self.fingerprint: str | None = self._meta().get("fingerprint")
        self._examples = bool(self._rows("SELECT name FROM sqlite_master WHERE type='table' AND "
                                         "name='example_labels'"))

    # -- opening --------------------------------------------------------------------------------------
    def _check_path(self, atlas_root: str | Path | None) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise LabelError(f"the folder of the labels file {self.path} does not exist; create {folder} first or "
                             "pass another file")
        if self.path.is_dir():
            raise LabelError(f"{self.path} is a folder; pass a file name for the labels, such as {self.path}/"
                             "labels.sqlite")
        if self.readonly and not self.path.is_file():
            raise LabelError(f"no labels file at {self.path}; labels are written by `cnnscope serve ATLAS "
                             "--annotate FILE`")
        if atlas_root is not None:
            root = Path(atlas_root).expanduser().resolve()
            target = self.path.resolve()  # through links, to a file that may not exist yet
            if target == root or root in target.parents:
                raise LabelError(f"the labels file {self.path} is inside the atlas folder {root}, which the viewer "
                                 "never writes; put it outside, e.g. beside the atlas folder")

    def _open(self, fingerprint: str | None, atlas_root: str | Path | None) -> None:
        con = self._con
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables and not self.readonly:
            self._create(fingerprint, atlas_root)
            return
        meta = self._meta() if "meta" in tables else {}
        if meta.get("format") != FORMAT or "labels" not in tables:
            raise LabelError(f"{self.path} is an SQLite file but not a cnnscope labels file; pass a new file name "
                             "(it is created) or an existing labels file")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise LabelError(f"the labels file {self.path} has schema version {meta.get('schema_version')}, but "
                             f"this cnnscope reads version {SCHEMA_VERSION}; open it with the cnnscope that wrote it")
        theirs = meta.get("fingerprint")
        if fingerprint and theirs and theirs != fingerprint:
            raise LabelError(f"the labels file {self.path} was made for the model with fingerprint {theirs}, but "
                             f"this atlas has fingerprint {fingerprint}; pass another --annotate file")
        if fingerprint and not theirs and not self.readonly:
            with self._write() as c:
                c.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (json.dumps(fingerprint),))
        if "example_labels" not in tables and not self.readonly:  # a file from before example labels
            with self._write() as c:
                c.execute(_EXAMPLE_SCHEMA)

    def _create(self, fingerprint: str | None, atlas_root: str | Path | None) -> None:
        with self._write() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(_EXAMPLE_SCHEMA)
            meta = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "fingerprint": fingerprint,
                    "atlas": str(Path(atlas_root).resolve()) if atlas_root is not None else None,
                    "created": time.time()}
            c.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _meta(self) -> dict:
        out = {}
        for key, value in self._con.execute("SELECT key, value FROM meta"):
            try:
                out[key] = json.loads(value)
            except (TypeError, ValueError):
                out[key] = value
        return out

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, ``ROLLBACK`` on any exception)."""
        if self.readonly:
            raise LabelError(f"the labels file {self.path} was opened read-only")
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    yield self._con
                except BaseException:
                    self._con.execute("ROLLBACK")
                    raise
                self._con.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self._con.in_transaction:
                    self._con.execute("ROLLBACK")
                raise LabelFileError(f"cannot write the labels file {self.path} ({exc}); check that it is writable "
                                     "and that no other program holds it open") from None

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._con.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise LabelFileError(f"cannot read the labels file {self.path} ({exc}); check that no other program "
                                     "holds it open") from None

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------------
    _COLUMNS = "layer, unit, label, note, updated"

    @staticmethod
    def _entry(r: tuple) -> dict:
        return {"layer": r[0], "unit": r[1], "label": r[2], "note": r[3], "updated": _iso(r[4])}

    def get(self, layer: str, unit: int) -> dict | None:
        """``{"label", "note", "updated"}`` of one unit (``updated`` in UTC, ISO 8601), or ``None``."""
        rows = self._rows("SELECT label, note, updated FROM labels WHERE layer=? AND unit=?", (layer, int(unit)))
        return {"label": rows[0][0], "note": rows[0][1], "updated": _iso(rows[0][2])} if rows else None

    def search(self, query: str, limit: int = 50) -> list[dict]:
        """Labelled units whose label or note contains ``query`` (case-insensitive, any script), and every labelled
        unit of the layer named exactly ``query``: ``[{"layer", "unit", "label", "note"}]`` by layer and unit."""
        q = (query or "").strip()[:MAX_LABEL]
        if not q:
            return []
        rows = self._rows("SELECT layer, unit, label, note FROM labels WHERE layer = ? OR instr(casefold(label), ?) "
                          "OR instr(casefold(note), ?) ORDER BY layer, unit LIMIT ?",
                          (q, q.casefold(), q.casefold(), max(0, int(limit))))
        return [{"layer": r[0], "unit": r[1], "label": r[2], "note": r[3]} for r in rows]

    def for_layer(self, layer: str) -> dict[int, str]:
        """``unit -> label`` of the units of ``layer`` that have a label (entries with only a note are left out)."""
        return dict(self._rows("SELECT unit, label FROM labels WHERE layer=? AND label != '' ORDER BY unit",
                               (layer,)))

    def all(self) -> list[dict]:
        """Every entry, ``{"layer", "unit", "label", "note", "updated"}``, by layer name and unit (the labels file
        does not know the model's layer order)."""
        return [self._entry(r) for r in self._rows(f"SELECT {self._COLUMNS} FROM labels ORDER BY layer, unit")]

    def __len__(self) -> int:
        return self._rows("SELECT COUNT(*) FROM labels")[0][0]

    def export(self, format: str = "json") -> str:
        """Every entry as text: ``"json"`` (an object with ``format``, ``fingerprint`` and ``labels``) or ``"csv"``
        (a header ``layer,unit,label,note,updated``, then one row per entry; fields with commas, quotes or line
        breaks are quoted)."""
        return self._export(format, "labels", self.all(), CSV_COLUMNS)

    def _export(self, format: str, key: str, entries: list[dict], columns: Sequence[str]) -> str:
        """``entries`` as JSON (under ``key``, with the file's format and fingerprint) or CSV (``columns``)."""
        if format not in EXPORT_FORMATS:
            raise LabelError(f"unknown export format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")
        if format == "json":
            return json.dumps({"format": f"{FORMAT}/{SCHEMA_VERSION}", "fingerprint": self.fingerprint,
                               key: entries}, ensure_ascii=False, indent=1) + "\n"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(entries)
        return buf.getvalue()

    # -- writing --------------------------------------------------------------------------------------
    def set(self, layer: str, unit: int, label: str | None = None, note: str | None = None) -> dict | None:
        """Set the label and/or note of one unit (``None`` keeps the stored value); both empty deletes the entry.

        Returns the entry as :meth:`get` does, or ``None`` when it was deleted.

        Raises:
            LabelError: a label over :data:`MAX_LABEL` or a note over :data:`MAX_NOTE` characters, control
                characters (a newline is allowed in notes), a bad layer name or unit number.
        """
        layer, unit = _check_unit(layer, unit)
        new_label = None if label is None else _clean(label, "label", MAX_LABEL, newlines=False)
        new_note = None if note is None else _clean(note, "note", MAX_NOTE, newlines=True)
        with self._write() as c:
            row = c.execute("SELECT label, note FROM labels WHERE layer=? AND unit=?", (layer, unit)).fetchone()
            old_label, old_note = row if row else ("", "")
            new_label = old_label if new_label is None else new_label
            new_note = old_note if new_note is None else new_note
            if not new_label and not new_note:
                c.execute("DELETE FROM labels WHERE layer=? AND unit=?", (layer, unit))
                return None
            now = time.time()
            c.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)", (layer, unit, new_label, new_note, now))
        return {"label": new_label, "note": new_note, "updated": _iso(now)}

    def delete(self, layer: str, unit: int) -> bool:
        """Remove the entry of one unit; whether there was one."""
        layer, unit = _check_unit(layer, unit)
        with self._write() as c:
            return c.execute("DELETE FROM labels WHERE layer=? AND unit=?", (layer, unit)).rowcount > 0

    # -- example labels -------------------------------------------------------------------------------
    _EXAMPLE_COLUMNS = "layer, unit, image_id, name, y, x, label, updated"

    @staticmethod
    def _example(r: tuple) -> dict:
        return {"layer": r[0], "unit": r[1], "image_id": r[2], "name": r[3], "y": r[4], "x": r[5], "label": r[6],
                "updated": _iso(r[7])}

    def example_labels(self, layer: str | None = None, unit: int | None = None) -> list[dict]:
        """Example labels, ``{"layer", "unit", "image_id", "name", "y", "x", "label", "updated"}``, of one unit (both
        given), one layer (``layer`` only) or every unit, by layer, unit, image, row and column."""
        if not self._examples:
            return []
        where, args = "", ()
        if layer is not None and unit is not None:
            where, args = "WHERE layer=? AND unit=?", (layer, int(unit))
        elif layer is not None:
            where, args = "WHERE layer=?", (layer,)
        rows = self._rows(f"SELECT {self._EXAMPLE_COLUMNS} FROM example_labels {where} "
                          "ORDER BY layer, unit, image_id, y, x", args)
        return [self._example(r) for r in rows]

    def example_count(self) -> int:
        """How many example labels the file holds."""
        return self._rows("SELECT COUNT(*) FROM example_labels")[0][0] if self._examples else 0

    def set_example(self, layer: str, unit: int, image_id: int, y: int, x: int, label: str, name: str = ""
                    ) -> dict | None:
        """Label one dataset example of a unit (position ``(y, x)`` of image ``image_id``); an empty label deletes
        it. ``name`` is the image's name, kept for the export.

        Returns the entry as :meth:`example_labels` lists it, or ``None`` when it was deleted.

        Raises:
            LabelError: a label over :data:`MAX_LABEL` characters or with control characters, a bad layer name,
                unit, image id or position.
        """
        return self.import_examples([{"layer": layer, "unit": unit, "image_id": image_id, "y": y, "x": x,
                                      "label": label, "name": name}])[0]

    def import_examples(self, rows: Iterable[Mapping]) -> list[dict | None]:
        """Set many example labels in one transaction (all or none): records with ``layer``, ``unit``,
        ``image_id``, ``y``, ``x``, ``label`` and optionally ``name`` (see :meth:`set_example`).

        Returns one entry per record (``None`` where an empty label deleted it).
        """
        checked = []
        for r in rows:
            layer, unit, image_id, y, x = _check_example(r.get("layer"), r.get("unit"), r.get("image_id"),
                                                         r.get("y"), r.get("x"))
            label = _clean(r.get("label"), "label", MAX_LABEL, newlines=False)
            name = _clean(r.get("name") or "", "image name", MAX_LAYER, newlines=False)
            checked.append((layer, unit, image_id, name, y, x, label))
        out: list[dict | None] = []
        with self._write() as c:
            if not self._examples:
                c.execute(_EXAMPLE_SCHEMA)
                self._examples = True
            now = time.time()
            for layer, unit, image_id, name, y, x, label in checked:
                key = (layer, unit, image_id, y, x)
                if not label:
                    c.execute("DELETE FROM example_labels WHERE layer=? AND unit=? AND image_id=? AND y=? AND x=?",
                              key)
                    out.append(None)
                    continue
                c.execute("INSERT OR REPLACE INTO example_labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (layer, unit, image_id, y, x, label, name, now))
                out.append(self._example((layer, unit, image_id, name, y, x, label, now)))
        return out

    def export_examples(self, format: str = "json") -> str:
        """Every example label as text: ``"json"`` (an object with ``format``, ``fingerprint`` and
        ``example_labels``) or ``"csv"`` (header ``layer,unit,image_id,name,y,x,label,updated``; the file
        :func:`read_example_csv` reads back, its ``image_id`` column standing for ``image``)."""
        return self._export(format, "example_labels", self.example_labels(), EXAMPLE_CSV_COLUMNS)


def _csv_number(source: str, line: int, col: str, row: Mapping) -> int:
    text = str(row.get(col) or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise LabelError(f"{source}, line {line}: {col} must be a number 0 or more, got {text[:40]!r}")
    return int(text)


def read_example_csv(text: str, names: Mapping[str, int] | None = None, *, source: str = "the CSV") -> list[dict]:
    """Example labels from CSV text with the columns :data:`IMPORT_COLUMNS` (``layer,unit,image,y,x,label``, any
    order, more columns ignored; an exported file's ``image_id`` column is accepted for ``image``).

    ``image`` is the image's id in the atlas's image source (digits) or its name, looked up in ``names`` (image name
    -> id: the names the atlas or the statistics know); ``y``, ``x`` are the position in the layer's grid. An empty
    label deletes the example's label when imported.

    Returns:
        records for :meth:`LabelStore.import_examples`.

    Raises:
        LabelError: a missing column, a row with a bad number or an unknown image name (row numbers named).
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    if "image" not in header and "image_id" in header:
        image_col = "image_id"
    else:
        image_col = "image"
    missing = [c for c in IMPORT_COLUMNS if (image_col if c == "image" else c) not in header]
    if missing:
        raise LabelError(f"{source} lacks the column(s) {', '.join(missing)}; its header must name "
                         f"{','.join(IMPORT_COLUMNS)}")
    out = []
    for n, row in enumerate(reader, start=2):
        image = str(row.get(image_col) or "").strip()
        if image.isascii() and image.isdigit():
            image_id, name = int(image), ""
        elif names is not None and image in names:
            image_id, name = int(names[image]), image
        else:
            hint = "pass --atlas or --stats so names can be looked up" if names is None else \
                "it is not among the images of the atlas or statistics"
            raise LabelError(f"{source}, line {n}: image {image[:60]!r} is neither an image id nor a known name; "
                             f"{hint}")
        out.append({"layer": str(row.get("layer") or "").strip(), "unit": _csv_number(source, n, "unit", row),
                    "image_id": image_id, "name": name or str(row.get("name") or "").strip(),
                    "y": _csv_number(source, n, "y", row), "x": _csv_number(source, n, "x", row),
                    "label": row.get("label") or ""})
    return out


# -- the viewer's routes --------------------------------------------------------------------------------------
