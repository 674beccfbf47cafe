"""Where a command's files go: checked before the work, written atomically, listed in one manifest.

A command that writes a folder of results opens it with :func:`run_output` *before* it loads a model or reads
images, so an unwritable or invalid ``--out`` costs nothing. Every file is written to a temporary name in the same
folder and renamed into place when complete (an interrupted write leaves no truncated file under the real name).
The folder's ``manifest.json`` lists the files of the last run that finished; it is removed when a run starts and
written when it ends, so a folder without a manifest holds no finished run, and the files a previous run listed are
removed when a new run starts (nothing stale sits beside new results). A run in progress keeps the names of its
files in a hidden ``.manifest.partial.json``, so the files of a run that was interrupted are removed by the next
one too. Files neither list names are never touched.
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

    def path(self, name: str) -> Path:
        """The path of ``name`` in the folder, listed in the manifest (write it atomically yourself, e.g. with
        :func:`atomic_path`, or use :meth:`write`)."""
        if name not in self.files:
            self.files.append(name)
            write_text(self.folder / PARTIAL, json.dumps({"command": self.command, "files": self.files}))
        return self.folder / name

    def write(self, name: str, writer: Callable[[Path], object]) -> Path:
        """``writer(tmp_path)`` writes the file; it is renamed to ``name`` when complete and listed."""
        target = self.path(name)
        with atomic_path(target) as tmp:
            writer(tmp)
        return target

    def write_json(self, name: str, data: object) -> Path:
        return self.write(name, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))

    def _clear_previous(self) -> None:
        old: list[object] = []
        for listing in (self.folder / MANIFEST, self.folder / PARTIAL):
            if not listing.exists():
                continue
            try:
                files = json.loads(listing.read_text()).get("files", [])
                old += files if isinstance(files, list) else []
            except (OSError, ValueError, AttributeError):
                pass
            listing.unlink()
        root = self.folder.resolve()
        for name in old:
            p = (self.folder / str(name)).resolve()
            if p.is_file() and root in p.parents:
                p.unlink()

    def _finish(self) -> None:
        data = {"command": self.command, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": [f for f in self.files if (self.folder / f).exists()]}
        write_text(self.folder / MANIFEST, json.dumps(data, indent=2))
        (self.folder / PARTIAL).unlink(missing_ok=True)


@contextmanager
def run_output(folder: str | Path, command: str) -> Iterator[RunOutput]:
    """Open ``folder`` for one run of ``command``: checked writable now, the previous run's listed files removed,
    ``manifest.json`` written when the block ends without an error (see the module docstring).

    Raises:
        OutputError: the folder cannot be written.
    """
    out = RunOutput(check_folder(folder), command)
    out._clear_previous()
    yield out
    out._finish()
