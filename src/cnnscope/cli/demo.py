"""``cnnscope demo``: a guided tour on the embedded pretrained model and the sample photos.

Each area of cnnscope adds a section with :func:`demo_section`; sections run in ``order``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import CnnscopeError
from ..outputs import MANIFEST, run_output
from .app import cli, resolve_device


@dataclass
class DemoContext:
    model: object  # LoadedModel
    images: dict  # name -> uint8 array
    out: Path
    quick: bool
    extra: dict


#: the demo atlas's folder below --out: a resumable store (docs/atlas.md) kept across runs, not in the manifest
ATLAS_FOLDER = "atlas"


def _files_now(folder: Path) -> dict[str, int]:
    """``relative path -> modification time (ns)`` of the files below ``folder`` that a tour lists: not the atlas's,
    not temporary ones, not the manifest."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if (p.is_file() and rel.parts[0] != ATLAS_FOLDER and not any(part.startswith(".") for part in rel.parts)
                and rel.name != MANIFEST):
            out[rel.as_posix()] = p.stat().st_mtime_ns
    return out


_SECTIONS: list[tuple[int, str, Callable[[DemoContext], None]]] = []


def demo_section(order: int, title: str):
    """Register ``fn(ctx)`` as a demo section."""
    def deco(fn: Callable[[DemoContext], None]) -> Callable[[DemoContext], None]:
        _SECTIONS.append((order, title, fn))
        return fn
    return deco


@demo_section(10, "What the pretrained model predicts")
def _predictions(ctx: DemoContext) -> None:
    for name, arr in ctx.images.items():
        top = ctx.model.predict(arr, k=5)[0]
        click.echo(f"{name}: " + ", ".join(f"{lab} {p:.1%}" for _, lab, p in top))


@demo_section(20, "Its layers")
def _layers(ctx: DemoContext) -> None:
    from ..capture import list_layers

    infos = list_layers(ctx.model)
    top = [i for i in infos if i.name.count(".") <= 1 and i.output_shape]
    for i in top:
        click.echo(f"  {i.name:<12} {i.kind:<22} {'x'.join(map(str, i.output_shape))}")
    click.echo(f"  ({len(infos)} modules in all: `cnnscope layers {ctx.model.name}`)")


@cli.command("demo")
@click.option("--out", metavar="FOLDER", default="demo-out", show_default=True,
              help="Folder for the demo's pictures and numbers.")
@click.option("--device", default="auto", show_default=True)
@click.option("--quick", is_flag=True, help="Fewer steps and units (for tests).")
@click.option("--only", default=None, help="Comma-separated section numbers to run (e.g. 10,20).")
@click.option("--serve", is_flag=True, help="Afterwards, serve the demo atlas (section 80) on 127.0.0.1:8000.")
def demo_cmd(out: str, device: str, quick: bool, only: str | None, serve: bool) -> None:
    """Tour cnnscope on the embedded EfficientNet-Lite0 and the sample photos.

    The pictures and numbers go to --out, listed in its manifest.json when the tour finishes (the demo atlas in
    OUT/atlas is resumable and kept across runs).
    """
    from ..images import sample_images
    from ..models import load_model

    try:
        chosen = {int(s) for s in only.split(",")} if only else None
    except ValueError:
        raise CnnscopeError(f"--only takes section numbers like 10,20, got {only!r}") from None
    dev = resolve_device(device)
    with run_output(out, "demo") as output:  # an unwritable --out fails before the model loads
        before = _files_now(output.folder)
        model = load_model(device=dev)
        click.echo(f"model: {model.name} ({model.weights_note}), input {model.input_size}, device {model.device}")
        ctx = DemoContext(model=model, images=sample_images(), out=output.folder, quick=quick, extra={})
        for order, title, fn in sorted(_SECTIONS, key=lambda s: s[0]):
            if chosen is not None and order not in chosen:
                continue
            click.echo(f"\n== {title}")
            t0 = time.perf_counter()
            fn(ctx)
            click.echo(f"   ({time.perf_counter() - t0:.1f}s)")
        for name, mtime in _files_now(output.folder).items():  # the tour's own files: new or written again
            if before.get(name) != mtime:
                output.path(name)
    click.echo(f"\noutputs in {ctx.out}/")
    if serve:
        from .atlas import serve_demo

        serve_demo(ctx)
