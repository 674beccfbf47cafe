"""Build an atlas: per-unit jobs, committed atomically, resumable after any interruption (SIGKILL included).

The units of each layer are split into chunks of ``options.units_per_chunk``; every artifact kind computes a whole
chunk at once (one feature-visualization render batch, one pass over the images), then each unit of the chunk
is written in its own transaction. Running the same build again skips the units already in the atlas and
computes the rest, so an interrupted build loses at most the chunk it was working on.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..batching import chunks, resolve_batch_size
from ..capture import LayerInfo, canonical_layer, list_layers, resolve_layers
from ..errors import CnnscopeError, LayerError, MethodError, unknown
from ..models import ModelLike, as_model
from ..models import fingerprint as model_fingerprint
from ..units import parse_channels
from .kinds import ArtifactKind, BuildContext, BuildOptions, default_kinds, get_kind
from .records import Artifact, AtlasError, dumps
from .store import AtlasStore


@dataclass
class BuildReport:
    """What a build did.

    Attributes:
        root: the atlas folder.
        built: ``(layer, unit)`` computed by this run.
        skipped: units that were already in the atlas.
        seconds: wall time of this run.
        kinds: artifact kinds of the atlas.
        skipped_images: images of the dataset kinds' pass that could not be read (``SkippedImage``: path,
            reason; at most the first 100) and ``n_skipped_images`` in all; also recorded in the atlas's meta.
        advice: the kinds' lines about the chosen layers (e.g. the layer to add so a layer's circuits link).
    """

    root: Path
    built: list[tuple[str, int]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    kinds: list[str] = field(default_factory=list)
    skipped_images: list = field(default_factory=list)
    n_skipped_images: int = 0
    advice: list[str] = field(default_factory=list)


def _resolve_layers(model, names: Sequence[str]) -> list[LayerInfo]:
    """The layers' infos under their dotted names: an alias and its layer are one layer of the atlas (the model's
    aliases are kept in its meta, ``model.aliases``, for display)."""
    if not names:
        raise LayerError("no layer names given")
    resolve_layers(model.module, names)  # unknown names and aliases: one line with close matches
    infos = {i.name: i for i in list_layers(model.module, model.input_size)}
    out = []
    for name in dict.fromkeys(canonical_layer(model.module, n) for n in names):
        if name not in infos:
            raise LayerError(unknown("layer", name, list(infos)))
        info = infos[name]
        if not info.output_shape or len(info.output_shape) not in (1, 3):
            raise LayerError(f"layer {name!r} has output shape {info.output_shape}; the atlas needs [C, H, W] "
                             "(convolutional) or [C] outputs")
        out.append(info)
    return out


def _study_layers(m, how: str) -> list[str]:
    """The model's preset study layers (``LoadedModel.study_layers``), the default of ``layers``."""
    if not m.study_layers:
        raise LayerError(f"give {how}; this model has no preset study layers")
    return list(m.study_layers)


def _resolve_kinds(kinds: Sequence[str] | None, with_images: bool) -> list[ArtifactKind]:
    names = list(kinds) if kinds else default_kinds(with_images)
    if not names:
        raise MethodError("no artifact kind is available in this installation (see `cnnscope atlas kinds`)")
    chosen = sorted((get_kind(n) for n in dict.fromkeys(names)), key=lambda k: (k.order, k.name))
    for k in chosen:
        why = k.unavailable()
        if why:
            raise MethodError(f"artifact kind {k.name!r} {why}")
        if k.needs_images and not with_images:
            raise CnnscopeError(f"artifact kind {k.name!r} needs images: pass source=... (--images SRC)")
    return chosen


def _check_compatible(store: AtlasStore, fingerprint: str, kinds: list[str], options: dict, model_desc: dict,
                      images: dict | None) -> None:
    """Refuse to mix units of another model or other settings into an existing atlas."""
    old_fp = store.get_meta("fingerprint")
    if old_fp is None:
        return
    if old_fp != fingerprint:
        old = store.get_meta("model", {}) or {}
        raise AtlasError(f"the atlas {store.root} was built from another model ({old.get('name')}, weights "
                         f"{old.get('weights')}); this one is {model_desc.get('name')} with weights "
                         f"{model_desc.get('weights')}. Choose another --out folder")
    old_kinds, old_opts = store.get_meta("kinds", []), store.get_meta("options", {})
    diffs = [f"kinds {old_kinds} -> {kinds}"] if old_kinds != kinds else []
    defaults = BuildOptions().to_dict()  # an option added since the atlas was made counts with its default
    diffs += [f"{k} {old_opts.get(k, defaults.get(k))!r} -> {v!r}" for k, v in options.items()
              if old_opts.get(k, defaults.get(k)) != v]
    old_images = store.get_meta("images")
    if old_images != json.loads(dumps(images)):  # dataset kinds would mix statistics of two image sets
        diffs.append(f"images {_brief(old_images)} -> {_brief(images)}")
    if diffs:
        raise AtlasError(f"the atlas {store.root} was built with other settings ({'; '.join(diffs)}); resume with "
                         "the same settings or choose another --out folder")


def _brief(images: dict | None) -> str:
    if not images:
        return "none"
    origin = f": {images['origin']}" if "origin" in images else ""
    ident = f", identity {images['identity'][:12]}" if images.get("identity") else ""
    return f"{images.get('images')} images ({images.get('kind')}{origin}{ident})"


def build_atlas(model: ModelLike, out: str | Path, layers: str | Sequence[str] | None = None, *,
                channels: str | int | Iterable[int] | None = None, source: object = None,
                kinds: Sequence[str] | None = None, options: BuildOptions | None = None, progress: bool = False,
                inline_max: int = 256 * 1024, max_units: int | None = None, engine: object = None,
                address: str | None = None) -> BuildReport:
    """Build (or finish building) the atlas of ``model`` in the folder ``out``.

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module`` (``cnnscope.models.as_model``); it is not changed.
        out: the atlas folder (created when missing; an existing atlas of the same model and settings is
            completed).
        layers: layer names (dotted names or aliases; the atlas keeps the dotted names, so ``mixed3b`` and
            ``inception3b`` are one layer). ``None``: the model's ``study_layers`` (a preset's).
        channels: the units of every layer: ``None``/``"all"``, ``"0-31"``, ``"0,4,8-11"``, an int or a list
            (``cnnscope.parse_channels``; ``None`` follows each layer's channel count).
        source: the images of the dataset kinds (top-k examples, histograms): a folder, a glob, ``"samples"``,
            a list of paths, an ``ImageSource``, a ``torch`` ``Dataset`` or ``[(name, uint8 HxWx3), ...]``.
        kinds: artifact kind names (default: every available non-optional kind; dataset kinds need images).
        options: :class:`BuildOptions` (``units_per_chunk``, ``batch_size`` = images per forward, ...).
        progress: show a tqdm progress bar with ETA.
        inline_max: artifacts larger than this many bytes are stored as files beside the database.
        max_units: stop after computing this many units (the rest is left for a later run).
        engine, address: where the dataset pass's image shards run (``"local"``, ``"ray"``; docs/scale.md). The
            pass keeps its shards in ``out/work/``, so a killed build resumes it at the last finished shard.

    Returns:
        :class:`BuildReport`.

    Raises:
        LayerError: unknown layer or a layer without channels; no ``layers`` and no study layers.
        MethodError: unknown or unavailable artifact kind.
        AtlasError: the folder holds an atlas of another model or other settings.
    """
    t_start = time.perf_counter()
    m = as_model(model)
    options = options or BuildOptions()
    if isinstance(options.units_per_chunk, bool) or not isinstance(options.units_per_chunk, int) \
            or options.units_per_chunk < 1:
        raise CnnscopeError(f"units_per_chunk must be a positive int, got {options.units_per_chunk!r}")
    batch_size = resolve_batch_size(options.batch_size, m.device)
    if layers is None:
        layers = _study_layers(m, "layers=[...]")
    infos = _resolve_layers(m, [layers] if isinstance(layers, str) else list(layers))
    chosen = _resolve_kinds(kinds, source is not None)
    kind_names = [k.name for k in chosen]  # page order, so the same set of kinds always compares equal
    plans = {i.name: parse_channels(channels, i.output_shape[0]) for i in infos}
    desc = m.describe()
    fingerprint = model_fingerprint(m)
    if source is not None:
        from .images import image_source

        source = image_source(source)
    report = BuildReport(root=Path(out), kinds=kind_names)
    store = AtlasStore(out, writable=True, inline_max=inline_max)
    try:
        images_desc = source.describe() if source is not None else None
        _check_compatible(store, fingerprint, kind_names, options.to_dict(), desc, images_desc)
        store.set_meta(model=desc, fingerprint=fingerprint, kinds=kind_names, options=options.to_dict(),
                       images=images_desc, kind_info={k.name: k.describe() for k in chosen})
        all_infos = {i.name: k for k, i in enumerate(list_layers(m.module, m.input_size))}
        skipped = _not_applicable(store, m, infos, chosen)
        jobs: list[tuple[LayerInfo, list[int]]] = []
        for info in infos:
            store.put_layer(info.name, all_infos[info.name], info.kind, info.output_shape, info.output_shape[0],
                            plans[info.name])
            done = set(store.units(info.name))
            pending = [u for u in plans[info.name] if u not in done]
            report.skipped += len(plans[info.name]) - len(pending)
            jobs += [(info, pending[sl]) for sl in chunks(len(pending), options.units_per_chunk)]
        cache: dict = {"atlas_layers": store.layer_names()}
        applied = {k.name: [i.name for i in infos if k.name not in skipped.get(i.name, {})] for k in chosen}
        report.advice = [line for k in chosen for line in k.advice(m, applied[k.name], cache["atlas_layers"])]
        aliases = {n: names for k in chosen for n, names in k.aliases(m, applied[k.name]).items()}
        if aliases:
            store.set_meta(tensor_aliases={**(store.get_meta("tensor_aliases", {}) or {}), **aliases})
        where = {"workdir": Path(out) / "work" if source is not None else None, "engine": engine, "address": address}
        _run_jobs(store, m, jobs, chosen, skipped, options, batch_size, source, report, progress, max_units, cache,
                  where)
        report.skipped_images = list(cache.get("skipped_images", {}).values())
        report.n_skipped_images = int(cache.get("n_skipped", 0))
        if report.skipped_images:
            store.set_meta(skipped_images=[s.to_dict() for s in report.skipped_images],
                           n_skipped_images=report.n_skipped_images)
    finally:
        store.close()
    report.seconds = time.perf_counter() - t_start
    return report


def _not_applicable(store: AtlasStore, model, infos: list[LayerInfo], chosen: list[ArtifactKind]
                    ) -> dict[str, dict[str, str]]:
    """``layer -> {kind: reason}`` for kinds that cannot describe a layer (recorded in the atlas's meta)."""
    out: dict[str, dict[str, str]] = {}
    for info in infos:
        reasons = {k.name: why for k in chosen if (why := k.applies(model, info))}
        if len(reasons) == len(chosen):
            raise LayerError(f"no chosen artifact kind applies to layer {info.name!r}: "
                             + "; ".join(f"{k}: {why}" for k, why in reasons.items()))
        if reasons:
            out[info.name] = reasons
    if out:
        recorded = store.get_meta("not_applicable", {}) or {}
        store.set_meta(not_applicable={**recorded, **out})
    return out


def _check_declared(kind: ArtifactKind, a: Artifact) -> None:
    """An artifact is of its kind and among the artifacts the kind declares (name and MIME type)."""
    if a.kind != kind.name:
        raise AtlasError(f"artifact kind {kind.name!r} returned an artifact of kind {a.kind!r}")
    if kind.artifacts.get(a.name) != a.mime:
        declared = ", ".join(f"{n} ({t})" for n, t in kind.artifacts.items())
        raise AtlasError(f"artifact kind {kind.name!r} returned {a.name!r} ({a.mime}), which it does not declare "
                         f"(it declares {declared})")


def _run_jobs(store: AtlasStore, model, jobs: list[tuple[LayerInfo, list[int]]], chosen: list[ArtifactKind],
              skipped: dict[str, dict[str, str]], options: BuildOptions, batch_size: int, source,
              report: BuildReport, progress: bool, max_units: int | None, cache: dict, where: dict) -> None:
    """Produce every chunk of units through the engine (``where["engine"]``: in process by default, or Ray actors,
    each chunk one piece) and commit each unit as its chunk comes back: the driver alone writes the atlas."""
    from tqdm.auto import tqdm

    from ..engine import LocalEngine, get_engine

    if max_units is not None:
        kept, left = [], max_units
        for info, chunk in jobs:
            if left > 0:
                kept.append((info, chunk[:left]))
                left -= len(kept[-1][1])
        jobs = kept
    if not jobs:
        return
    env = {"torch_version": torch.__version__, "device": str(model.device), "python": platform.python_version()}
    layers = list(dict.fromkeys(info.name for info, _ in jobs))
    engine = get_engine(where.get("engine"), address=where.get("address"))
    remote = not isinstance(engine, LocalEngine)
    try:
        if remote and source is not None and any(k.needs_images for k in chosen):
            # the dataset pass runs once, here (its shards through the engine); the pieces carry its statistics
            from .dataset_kind import layer_stats

            layer_stats(BuildContext(model=model, layer=jobs[0][0], options=options, batch_size=batch_size,
                                     source=source, cache=cache, layers=layers, **{**where, "engine": engine}))
        pieces = [_Piece(info, chunk, [k for k in chosen if k.name not in skipped.get(info.name, {})], options,
                         batch_size, source, cache, layers, {**where, "engine": None, "address": None} if remote
                         else where, env) for info, chunk in jobs]
        with tqdm(total=sum(len(c) for _, c in jobs), unit="unit", disable=not progress, desc="atlas") as bar:
            for j, (per_unit, unit_secs) in engine.map_with_model(model, _produce, pieces):
                info = pieces[j].info
                for u in pieces[j].chunk:
                    try:
                        store.write_unit(info.name, u, per_unit[u], unit_secs)
                    except AtlasError:
                        if not store.has_unit(info.name, u):
                            raise
                        report.skipped += 1  # another build process committed it meanwhile
                    else:
                        report.built.append((info.name, u))
                    bar.update(1)
    finally:
        if remote and isinstance(where.get("engine"), str):  # an engine made here by name; a given one stays open
            engine.close()


@dataclass
class _Piece:
    """One chunk of units of one layer, as an engine ships it."""

    info: LayerInfo
    chunk: list[int]
    kinds: list[ArtifactKind]
    options: BuildOptions
    batch_size: int
    source: object
    cache: dict
    layers: list[str]
    where: dict
    env: dict


def _produce(model, piece: _Piece) -> tuple[dict[int, list[Artifact]], float]:
    """Every chosen kind's artifacts of one chunk (the engine's piece function): ``(unit -> artifacts, seconds per
    unit)``."""
    info, chunk = piece.info, piece.chunk
    ctx = BuildContext(model=model, layer=info, options=piece.options, batch_size=piece.batch_size,
                       source=piece.source, cache=piece.cache, layers=piece.layers, **piece.where)
    per_unit: dict[int, list[Artifact]] = {u: [] for u in chunk}
    t_chunk = time.perf_counter()
    for kind in piece.kinds:
        t0 = time.perf_counter()
        made = kind.produce(ctx, list(chunk))
        secs = time.perf_counter() - t0
        missing = [u for u in chunk if not made.get(u)]
        if missing:
            raise AtlasError(f"artifact kind {kind.name!r} produced nothing for units {missing} of {info.name!r}")
        timing = {"seconds_per_unit": secs / len(chunk), "chunk_seconds": secs, "chunk_units": len(chunk)}
        for u in chunk:
            for a in made[u]:
                _check_declared(kind, a)
                prov = {**piece.env, **a.provenance, "timing": timing}
                per_unit[u].append(replace(a, provenance=prov))
    return per_unit, (time.perf_counter() - t_chunk) / len(chunk)
