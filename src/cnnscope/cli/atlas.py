"""``cnnscope atlas build|info|kinds``, ``cnnscope serve`` and the atlas demo section (order 80)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import CnnscopeError
from .app import batch_size_option, cli, model_options, open_model, pre_activation_option, print_table, show_progress
from .demo import ATLAS_FOLDER, DemoContext, demo_section
from .study import layers_or_study

#: Demo atlas: the expansion activations of a shallow, a middle and a deep block of EfficientNet-Lite0 (units of a
#: convolution + batch norm + ReLU6, so every kind applies), read before the ReLU6 as in *Curve Detectors*.
#: the demo atlas's layers; the last one's depthwise circuits read the one before, so its unit pages link both ways
DEMO_LAYERS = ("blocks.1.1.bn1.act", "blocks.3.2.bn1.act", "blocks.5.3.bn1.act", "blocks.5.3.bn2.act")


@cli.group("atlas")
def atlas_group() -> None:
    """Build and inspect atlases (per-unit feature visualizations, dataset examples, circuits)."""


@atlas_group.command("build")
@click.argument("model")
@model_options
@click.option("--layers", default=None, help="Comma-separated layer names or aliases (see `cnnscope layers MODEL`; "
                                             "default: the model's study layers, marked * there).")
@click.option("--channels", default="all", show_default=True, help="Units of every layer: all, 0-31 or 0,4,8-11.")
@click.option("--images", "images_src", default=None,
              help="Images for dataset examples/histograms: samples, sample:chelsea,coffee, a folder or a glob.")
@click.option("--out", required=True, metavar="FOLDER", help="Atlas folder (resumed if it exists).")
@click.option("--kinds", default=None, help="Comma-separated artifact kinds (default: every available one; "
                                            "see `cnnscope atlas kinds`).")
@click.option("--neuron", is_flag=True, help="Visualize the centre neuron of each channel (built by default).")
@click.option("--diversity", type=click.IntRange(2, 8), default=4, show_default=True,
              help="Diversity renders per unit (the featurevis_diversity kind).")
@click.option("--negative", is_flag=True, help="Also visualize what minimises each channel.")
@click.option("--tuning", is_flag=True, help="Also measure orientation tuning on synthetic stimuli.")
@click.option("--steps", type=click.IntRange(1), default=128, show_default=True, help="Feature-vis steps.")
@click.option("--size", type=click.IntRange(16), default=128, show_default=True, help="Feature-vis image size.")
@click.option("--recipe", default=None, help="Feature-vis recipe (default: featurevis's default).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--top-k", type=click.IntRange(1), default=9, show_default=True, help="Dataset examples per unit.")
@pre_activation_option
@click.option("--units-per-chunk", type=click.IntRange(1), default=8, show_default=True,
              help="Units computed together (one render batch, one dataset pass) and committed one by one.")
@batch_size_option
@click.option("--max-units", type=click.IntRange(1), default=None, help="Stop after this many units (resume later).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the image shards of the dataset pass run (ray: the extra cnnscope[ray]; docs/scale.md).")
@click.option("--address", default=None, help="With --engine ray: 'auto' or HOST:PORT of a running Ray cluster.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Time a sample and print the expected units, storage and time (here and on --workers workers); "
                   "build nothing.")
@click.option("--workers", type=click.IntRange(1), default=8, show_default=True,
              help="With --plan: the workers of the per-worker estimate.")
def build_cmd(model: str, weights: str | None, device: str, layers: str | None, channels: str, images_src: str | None,
              out: str, kinds: str | None, neuron: bool, diversity: int, negative: bool, tuning: bool, steps: int,
              size: int,
              recipe: str | None, seed: int, top_k: int, pre_activation: bool, units_per_chunk: int,
              batch_size: int | None, max_units: int | None, engine: str, address: str | None, plan_only: bool,
              workers: int) -> None:
    """Build (or finish) the atlas of MODEL in --out; interrupted builds resume where they stopped (the dataset
    pass too: its shards are kept in OUT/work/).

    Images of --images that cannot be read are skipped, listed on stderr and in the atlas's meta.
    """
    from ..atlas import BuildOptions, build_atlas, get_kind
    from ..atlas.kinds import default_kinds
    from ..dataset.sources import open_source, skipped_lines
    from ..outputs import check_folder

    names = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else default_kinds(images_src is not None)
    names += [k for flag, k in ((neuron, "featurevis_neuron"), (negative, "featurevis_negative"),
                                (tuning, "tuning")) if flag and k not in names]
    for name in names:
        get_kind(name)  # unknown names fail before the model loads
    source = open_source(images_src) if images_src else None
    # an unwritable --out fails before the model loads; the atlas is a resumable store committed unit by unit
    # (docs/atlas.md), so it keeps its files across runs instead of a run manifest
    check_folder(out)
    m = open_model(model, weights, device)
    opts = BuildOptions(steps=steps, size=size, recipe=recipe, seed=seed, top_k=top_k, pre_activation=pre_activation,
                        units_per_chunk=units_per_chunk, batch_size=batch_size, diversity=diversity)
    chosen = layers_or_study(m, [s.strip() for s in (layers or "").split(",") if s.strip()], "--layers")
    if plan_only:
        from ..engine.plan import plan_build

        plan = plan_build(m, chosen, names, channels=channels, source=source, options=opts, workers=workers)
        for line in plan.lines():
            click.echo(line)
        return
    if address is not None and engine != "ray":
        raise CnnscopeError("--address applies to --engine ray")
    report = build_atlas(m, out, chosen, channels=channels, source=source, kinds=names, options=opts,
                         progress=show_progress(), max_units=max_units, engine=engine, address=address)
    for line in skipped_lines(report.skipped_images, report.n_skipped_images):
        click.echo(line, err=True)
    for line in report.advice:
        click.echo(f"note: {line}", err=True)
    click.echo(f"built {len(report.built)} units ({report.skipped} already there) with {', '.join(report.kinds)} "
               f"in {report.seconds:.1f}s -> {report.root}")
    click.echo(f"view it: cnnscope serve {report.root}")


@atlas_group.command("info")
@click.argument("atlas", type=click.Path(file_okay=False))
@click.option("--check", is_flag=True, help="Also run the integrity check (exit 1 when it finds problems).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(atlas: str, check: bool, as_json: bool) -> None:
    """Summary of an atlas: model, layers, units, artifacts (and an integrity check)."""
    from ..atlas import AtlasStore

    with AtlasStore(atlas) as store:
        info = {"summary": store.summary(), "model": store.get_meta("model"),
                "layers": [rec.to_dict() for rec in store.layers()]}
        problems = store.integrity_check() if check else None
    if problems is not None:
        info["problems"] = problems
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        s = info["summary"]
        click.echo(f"{atlas}: {(info['model'] or {}).get('name')} · {s['units']} units · {s['artifacts']} artifacts "
                   f"({s['artifact_bytes'] / 1e6:.1f} MB) · kinds {', '.join(s['kinds']) or 'none'}")
        print_table([(r["name"], r["kind"], "x".join(map(str, r["shape"])), f"{r['built']}/{r['planned']}")
                     for r in info["layers"]], ("layer", "kind", "output", "built/planned"))
        if problems is not None:
            click.echo("integrity: ok" if not problems else "integrity problems:\n  " + "\n  ".join(problems))
    if problems:
        raise CnnscopeError(f"{len(problems)} integrity problem(s) in {atlas}")


@atlas_group.command("kinds")
def kinds_cmd() -> None:
    """The artifact kinds an atlas can hold, and whether this installation can build them."""
    from ..atlas import list_kinds

    print_table([(k.name, "optional" if k.optional else "default", "images" if k.needs_images else "",
                  ", ".join(k.artifacts), k.unavailable() or "available", k.description) for k in list_kinds()],
                ("kind", "built", "needs", "stores", "status", "what"))


@cli.command("serve")
@click.argument("atlas", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 = everyone).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--no-explain", is_flag=True, help="Do not offer the explain-an-image page.")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 512), default=8.0, show_default=True)
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="A host name the server answers to besides the address it listens on (repeatable).")
@click.option("--annotate", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Let unit pages write labels and notes to FILE (SQLite, outside the atlas; created when missing).")
def serve_cmd(atlas: str, host: str, port: int, no_explain: bool, max_upload_mb: float,
              allow_hosts: tuple[str, ...], annotate: str | None) -> None:
    """Serve the atlas in ATLAS as a read-only website (Ctrl-C stops it).

    Requests naming another host (``Host`` header) than the address it listens on or an --allow-host name are
    refused (DNS rebinding); a port in use is reported before anything is served. With --annotate FILE the unit
    pages take labels and notes (the atlas itself is never written); export them with `cnnscope atlas labels FILE`.
    """
    from ..web import create_app, serve
    from ..web.server import check_port

    app = create_app(Path(atlas), explain=not no_explain, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                     allowed_hosts=allow_hosts, annotate=annotate)
    check_port(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"note: listening on {host}: anyone who can reach this machine can browse the atlas", err=True)
    click.echo(f"serving {atlas} at http://{host}:{port}/ (Ctrl-C to stop)")
    serve(app, host=host, port=port)


@demo_section(80, "An atlas of the model (cnnscope atlas build / serve)")
def _demo_atlas(ctx: DemoContext) -> None:
    from ..atlas import BuildOptions, build_atlas
    from ..atlas.kinds import default_kinds

    out = ctx.out / ATLAS_FOLDER
    channels = "0-1" if ctx.quick else "0-3"
    opts = BuildOptions(steps=8 if ctx.quick else 32, size=64 if ctx.quick else 96, top_k=4 if ctx.quick else 6,
                        units_per_chunk=4, pre_activation=True, seed=0, diversity=2)  # a tour: two diverse renders
    kinds = default_kinds(with_images=True)
    report = build_atlas(ctx.model, out, DEMO_LAYERS, channels=channels, source=list(ctx.images.items()), kinds=kinds,
                         options=opts)
    ctx.extra["atlas"] = out
    click.echo(f"{len(report.built)} units built ({report.skipped} already there) for layers "
               f"{', '.join(DEMO_LAYERS)} with {', '.join(report.kinds)} in {report.seconds:.1f}s")
    click.echo(f"view it: cnnscope serve {out}   (or: cnnscope demo --serve --out {ctx.out})")


def serve_demo(ctx: DemoContext, host: str = "127.0.0.1", port: int = 8000) -> None:
    """``cnnscope demo --serve``: serve the atlas the demo built (or an earlier demo's atlas in --out)."""
    from ..atlas import AtlasStore
    from ..web import create_app, serve

    out = Path(ctx.extra.get("atlas") or ctx.out / ATLAS_FOLDER)
    if not (out / "atlas.sqlite").is_file():
        raise CnnscopeError(f"no demo atlas in {out}; run `cnnscope demo` with section 80 (no --only, or --only 80)")
    from ..web.server import check_port

    app = create_app(AtlasStore(out), model=ctx.model)
    check_port(host, port)
    click.echo(f"\nserving the demo atlas {out} at http://{host}:{port}/ (Ctrl-C to stop)")
    serve(app, host=host, port=port)
