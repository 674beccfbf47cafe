"""Where a command's files go: checked before the work, written atomically, listed in one manifest.

A command that writes a folder of results opens it with :func:`run_output` *before* it loads a model or reads
images, so an unwritable or invalid ``--out`` costs nothing. Every file is written to a temporary name in the same
folder and renamed into place when complete (an interrupted write leaves no truncated file under the real name).

The folder's ``manifest.json`` lists the files of the last run that finished. It is removed when a run starts and
written when the run ends without an error, so a folder without a manifest holds no finished run. While a run is in
progress its files (and the listings of the runs before it) are kept in a hidden ``.manifest.partial.json``. When a
run finishes, the files that earlier runs *of the same command* listed and this run did not write again are removed,
so no stale result sits beside new ones; nothing is removed before the work succeeded, nothing another command
wrote (a training run's checkpoints that ``evolution`` reads from the same folder) and nothing no cnnscope listing
names (a listing must carry :data:`FORMAT`; another tool's ``manifest.json`` is left alone).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CnnscopeError

MANIFEST = "manifest.json"
PARTIAL = ".manifest.partial.json"
#: Marks cnnscope's listings: a ``manifest.json`` without it (another tool's) is never read or removed.
FORMAT = "cnnscope-run/1"


class OutputError(CnnscopeError):
    """An output folder or file that cannot be written."""


def check_folder(folder: str | Path) -> Path:
    """``folder`` created if needed and proven writable (a probe file is written and removed).

    Raises:
        OutputError: it is a file, or it cannot be created or written.
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {str(path)!r} is a file; pass a folder with --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"cannot write to output folder {str(path)!r}: {err.strerror or err}") from None
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends without an error,
    removed otherwise. The temporary name keeps the suffix (writers that pick a format by suffix still work)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """``text`` written to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


class RunOutput:
    """The output folder of one run (use :func:`run_output`)."""

    def __init__(self, folder: Path, command: str) -> None:
        self.folder, self.command = folder, command
        self.files: list[str] = []
        self.previous: list[dict] = []

    def path(self, name: str) -> Path:
        """The path of ``name`` in the folder, listed in the manifest (write it atomically yourself, e.g. with
        :func:`atomic_path`, or use :meth:`write`)."""
        if name not in self.files:
            self.files.append(name)
            self._write_partial()
        return self.folder / name

    def write(self, name: str, writer: Callable[[Path], object]) -> Path:
        """``writer(tmp_path)`` writes the file; it is renamed to ``name`` when complete and listed."""
        target = self.path(name)
        with atomic_path(target) as tmp:
            writer(tmp)
        return target

    def write_json(self, name: str, data: object) -> Path:
        return self.write(name, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))

    def _write_partial(self) -> None:
        data = {"format": FORMAT, "command": self.command, "files": self.files, "previous": self.previous}
        write_text(self.folder / PARTIAL, json.dumps(data))

    def _start(self) -> None:
        """Take over the listings of earlier runs (cnnscope's own only: they carry :data:`FORMAT`) and remove the
        manifest: from now on the folder holds no finished run. No file is removed here."""
        for listing in (self.folder / MANIFEST, self.folder / PARTIAL):
            data = _read_listing(listing)
            if data is None:
                if listing.name == MANIFEST and listing.exists():
                    raise OutputError(f"{str(self.folder)!r} holds a {MANIFEST} that cnnscope did not write; choose "
                                      "another output folder")
                continue
            self.previous += [{"command": data.get("command"), "files": data.get("files", [])},
                              *data.get("previous", [])]
            listing.unlink()
        if self.previous:
            self._write_partial()

    def _finish(self) -> None:
        """After a run that ended without an error: the files earlier runs *of the same command* listed and this
        one did not write are removed (so no stale result sits beside new ones), then the manifest is written.
        Files of other commands (a training run's checkpoints that this run read) are never removed."""
        root = self.folder.resolve()
        for entry in self.previous:
            if entry.get("command") != self.command:
                continue
            for name in entry.get("files", []):
                p = (self.folder / str(name)).resolve()
                if str(name) not in self.files and p.is_file() and root in p.parents:
                    p.unlink()
        data = {"format": FORMAT, "command": self.command, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": [f for f in self.files if (self.folder / f).exists()]}
        write_text(self.folder / MANIFEST, json.dumps(data, indent=2))
        (self.folder / PARTIAL).unlink(missing_ok=True)


def _read_listing(path: Path) -> dict | None:
    """A manifest or partial listing written by cnnscope (``None`` for anything else, which is left alone)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), list):
        return None
    data["previous"] = [e for e in data.get("previous", []) if isinstance(e, dict)]
    return data


@contextmanager
def run_output(folder: str | Path, command: str) -> Iterator[RunOutput]:
    """Open ``folder`` for one run of ``command``: checked writable now; when the block ends without an error, the
    stale files of earlier runs of the same command removed and ``manifest.json`` written (see the module
    docstring).

    Raises:
        OutputError: the folder cannot be written.
    """
    out = RunOutput(check_folder(folder), command)
    out._start()
    yield out
    out._finish()
