"""Output folders (``cnnscope.outputs``): checked before the work, atomic writes, one manifest per finished run;
and every command that writes a folder uses them (an invalid ``--out`` fails at once, before the model loads)."""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import pytest

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError
from cnnscope.outputs import FORMAT, MANIFEST, OutputError, atomic_path, check_folder, run_output, write_text


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- check_folder ----------------------------------------------------------------------------------------------


def test_check_folder_creates_missing_folders_and_leaves_no_probe(tmp_path):
    path = check_folder(tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" and path.is_dir() and list(path.iterdir()) == []


def test_check_folder_refuses_a_file_and_a_folder_below_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file; pass a folder with --out"):
        check_folder(f)
    with pytest.raises(OutputError, match="cannot write to output folder") as info:
        check_folder(f / "sub")
    assert isinstance(info.value, CnnscopeError) and "\n" not in str(info.value)
    assert f.read_text() == "x"


def test_check_folder_probe_failure_is_one_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="cannot write to output folder .*: Permission denied"):
        check_folder(tmp_path / "out")


# -- atomic writes -----------------------------------------------------------------------------------------------


def test_atomic_path_renames_a_complete_file_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp != target
        tmp.write_text("a,b\n")
        assert not target.exists()  # nothing under the real name until the block ends
    assert target.read_text() == "a,b\n" and _files(tmp_path) == ["sub/table.csv"]


def test_atomic_path_failure_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path):
    target = tmp_path / "picture.png"
    for exc in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"\x89PNG" + b"\0" * 120)  # a truncated 124-byte picture
                raise exc
        assert _files(tmp_path) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and _files(tmp_path) == ["picture.png"]  # the old file is intact


def test_write_text(tmp_path):
    assert write_text(tmp_path / "a.json", "{}") == tmp_path / "a.json"
    assert (tmp_path / "a.json").read_text() == "{}" and _files(tmp_path) == ["a.json"]


def test_save_figure_is_atomic(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from cnnscope.plot import figure, save_figure

    fig = figure(1, 1)
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _files(tmp_path) == ["f.png"]

    def broken(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG" + b"\0" * 120)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, tmp_path / "g.png")
    assert _files(tmp_path) == ["f.png"]


# -- the manifest ---------------------------------------------------------------------------------------------


def test_manifest_is_written_last_and_lists_the_runs_files(tmp_path):
    with run_output(tmp_path / "out", "examples") as out:
        assert not (out.folder / MANIFEST).exists()  # absent while the run is in progress
        out.write_json("a.json", {"x": 1})
        out.write("b.txt", lambda p: p.write_text("b"))
        out.path("never_written.png")  # listed but not written: left out of the manifest
        with atomic_path(out.path("sub/c.txt")) as tmp:
            tmp.write_text("c")
        assert not (out.folder / MANIFEST).exists()
    data = json.loads((out.folder / MANIFEST).read_text())
    assert data["command"] == "examples" and data["files"] == ["a.json", "b.txt", "sub/c.txt"]
    assert time.strptime(data["finished"][:19], "%Y-%m-%dT%H:%M:%S")
    assert json.loads((out.folder / "a.json").read_text()) == {"x": 1}


def test_failed_run_leaves_no_manifest_and_the_next_run_cleans_up(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with run_output(tmp_path, "render") as out:
            out.write_json("a.json", {})
            raise KeyboardInterrupt
    assert _files(tmp_path) == [".manifest.partial.json", "a.json"]  # no manifest: an unfinished run
    with run_output(tmp_path, "render") as out:  # the next run of the command removes the unfinished run's files
        out.write_json("b.json", {})
        assert (tmp_path / "a.json").exists()  # ... only once it has succeeded
    assert _files(tmp_path) == ["b.json", MANIFEST]


def test_stale_files_go_only_after_a_run_of_the_same_command_succeeds(tmp_path):
    (tmp_path / "notes.txt").write_text("the user's")
    with run_output(tmp_path, "examples") as out:
        for name in ("old_c0001.png", "old_c0002.png", "examples.json", "sub/x.png"):
            out.write(name, lambda p: p.write_bytes(b"1"))
    assert len(_files(tmp_path)) == 6
    with pytest.raises(RuntimeError):
        with run_output(tmp_path, "examples") as out:
            assert not (tmp_path / MANIFEST).exists()  # no finished run in the folder from now on
            out.write_json("examples.json", {"new": True})
            raise RuntimeError("failed half-way")
    # a failed run destroys nothing: the earlier results are all still there
    assert _files(tmp_path) == [".manifest.partial.json", "examples.json", "notes.txt", "old_c0001.png",
                                "old_c0002.png", "sub/x.png"]
    with run_output(tmp_path, "examples") as out:
        out.write("c0003.png", lambda p: p.write_bytes(b"3"))
    assert _files(tmp_path) == ["c0003.png", MANIFEST, "notes.txt"]
    assert json.loads((tmp_path / MANIFEST).read_text())["files"] == ["c0003.png"]


def test_another_commands_files_are_never_removed(tmp_path):
    """A training run's checkpoints, read by a later command writing to the same folder, survive it."""
    with run_output(tmp_path, "train") as out:
        out.write("epoch_1.pt", lambda p: p.write_bytes(b"1"))
    with run_output(tmp_path, "evolution") as out:
        assert (tmp_path / "epoch_1.pt").read_bytes() == b"1"
        out.write("evolution.png", lambda p: p.write_bytes(b"2"))
    assert _files(tmp_path) == ["epoch_1.pt", "evolution.png", MANIFEST]
    with run_output(tmp_path, "evolution") as out:
        out.write("evolution.png", lambda p: p.write_bytes(b"3"))
    assert _files(tmp_path) == ["epoch_1.pt", "evolution.png", MANIFEST]


def test_a_manifest_never_removes_files_outside_its_folder(tmp_path):
    folder, outside = tmp_path / "out", tmp_path / "precious.txt"
    folder.mkdir()
    outside.write_text("keep")
    (folder / "listed.txt").write_text("1")
    listing = {"format": FORMAT, "command": "x", "files": ["../precious.txt", str(outside), "listed.txt", "missing"]}
    (folder / MANIFEST).write_text(json.dumps(listing))
    with run_output(folder, "x"):
        pass
    assert outside.read_text() == "keep" and _files(folder) == [MANIFEST]


def test_a_foreign_or_broken_manifest_is_never_read_or_replaced(tmp_path):
    for text in ('{"name": "web app", "files": ["kept.png"]}', "{not json"):
        (tmp_path / MANIFEST).write_text(text)
        (tmp_path / "kept.png").write_text("1")
        with pytest.raises(OutputError, match="cnnscope did not write"):
            with run_output(tmp_path, "x"):
                pass
        assert _files(tmp_path) == ["kept.png", MANIFEST] and (tmp_path / MANIFEST).read_text() == text


# -- every command that writes a folder checks it first ------------------------------------------------------


OUT_COMMANDS = {
    "examples": ["examples", "efficientnet_lite0", "blocks.2.1.bn1.act", "--images", "sample:coffee"],
    "spectrum": ["spectrum", "efficientnet_lite0", "blocks.2.1.bn1.act", "-c", "0", "--images", "sample:coffee"],
    "circuit": ["circuit", "efficientnet_lite0", "blocks.2.1.conv_pwl", "-c", "0"],
    "nmf": ["nmf", "efficientnet_lite0", "blocks.2.1.bn1.act", "sample:coffee"],
    "evaluate": ["evaluate", "efficientnet_lite0", "sample:coffee"],
    "render": ["render", "efficientnet_lite0", "blocks.1.0", "--channels", "0", "--steps", "1"],
    "stimuli": ["stimuli", "--orientations", "2"],
    "tuning": ["tuning", "efficientnet_lite0", "blocks.2.1.bn1.act"],
    "atlas build": ["atlas", "build", "efficientnet_lite0", "--layers", "blocks.1.1.bn1.act", "--kinds", "circuit"],
    "demo": ["demo", "--quick", "--only", "10"],
}


@pytest.mark.parametrize("command", list(OUT_COMMANDS))
def test_an_invalid_out_fails_at_once_with_one_line(command, tmp_path, capsys, monkeypatch):
    import cnnscope.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(cnnscope.models, "load_model", no_model)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        t0 = time.perf_counter()
        rc = main(OUT_COMMANDS[command] + ["--out", str(out)])
        seconds = time.perf_counter() - t0
        err = capsys.readouterr().err.strip()
        assert rc == 1 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        assert "output folder" in err and str(blocker) in err
        assert seconds < 2.0
    assert _files(tmp_path) == ["file.txt"] and blocker.read_text() == "x"


def test_stimuli_run_replaces_its_previous_files(tmp_path):
    out = tmp_path / "s"
    assert main(["stimuli", "--kind", "line", "--orientations", "2", "--levels", "10", "--size", "16",
                 "--out", str(out)]) == 0
    first = json.loads((out / MANIFEST).read_text())
    assert first["command"] == "stimuli" and first["files"] == ["stimuli.png", "stimuli.npz", "stimuli.json"]
    (out / "mine.txt").write_text("not the run's")
    assert main(["stimuli", "--kind", "line", "--orientations", "3", "--levels", "10", "--size", "16",
                 "--out", str(out)]) == 0
    assert _files(out) == [MANIFEST, "mine.txt", "stimuli.json", "stimuli.npz", "stimuli.png"]
    assert np.load(out / "stimuli.npz")["images"].shape == (3, 16, 16, 3)
    assert not any(name.startswith(".") for name in os.listdir(out))
