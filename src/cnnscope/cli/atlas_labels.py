"""``cnnscope atlas labels FILE``: export the labels and notes written in the viewer's annotate mode."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import CnnscopeError
from .atlas import atlas_group


@atlas_group.command("labels")
@click.argument("labels_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default=None,
              help="Export format (default: csv when --out ends in .csv, json otherwise).")
@click.option("--out", default=None, metavar="PATH", help="Write the export here (atomically) instead of stdout.")
def labels_cmd(labels_file: str, fmt: str | None, out: str | None) -> None:
    """Export the unit labels and notes in FILE (written by `cnnscope serve ATLAS --annotate FILE`) as JSON or
    CSV, without starting a server. The file is only read."""
    export_labels(labels_file, fmt, out, lambda labels, f: (labels.export(f), len(labels)), "labelled units")


def export_labels(labels_file: str, fmt: str | None, out: str | None, export, what: str) -> None:
    """Write ``export(labels, fmt) -> (text, count)`` of a labels file (opened read-only) to ``out`` (atomically) or
    stdout; ``fmt`` defaults to csv when ``out`` ends in .csv, json otherwise."""
    from ..outputs import atomic_path
    from ..web.labels import LabelStore

    if fmt is None:
        fmt = "csv" if out is not None and out.lower().endswith(".csv") else "json"
    target = Path(out).expanduser() if out is not None else None
    if target is not None:
        if target.is_dir():
            raise CnnscopeError(f"--out {out} is a folder; pass a file name such as {target / ('labels.' + fmt)}")
        if target.resolve() == Path(labels_file).expanduser().resolve():
            raise CnnscopeError(f"--out {out} is the labels file itself; pass another file name")
    with LabelStore(labels_file, atlas_root=None, fingerprint=None, readonly=True) as labels:
        text, n = export(labels, fmt)
    if target is None:
        click.echo(text, nl=False)
        return
    with atomic_path(target) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    click.echo(f"{n} {what} -> {target} ({fmt})")
