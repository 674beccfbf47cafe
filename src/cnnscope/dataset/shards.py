"""Dataset passes in a work folder: the pass cut into shards of consecutive images, each persisted as it finishes.

Statistics are a monoid (docs/ARCHITECTURE.md, "Design notes for scale"): a shard's :class:`DatasetStats` merged
with the next ones, in shard order, is exactly the result of one uninterrupted pass (top-k ids and values, band
samples and histogram counts identical; moments equal up to float64 rounding of their merge). So a pass with a
work folder is resumable and can be spread over processes and machines:

- ``pass.json`` holds the pass spec: the model (name and weights fingerprint), the layers, every setting that
  changes a number, the image set's identity and ids, the shard size. A rerun with another spec is refused with a
  line naming the difference, so shards of two passes are never merged.
- ``shard-NNNNN-SHA256.npz`` is shard ``NNNNN`` (image positions ``[N * shard_size, (N + 1) * shard_size)`` of the
  source), written atomically; ``SHA256`` is the hash of the file's bytes. A file whose bytes do not match its name
  (truncated, corrupt) is reported, removed and computed again, never merged.
- Shards run through an engine (:func:`cnnscope.engine.get_engine`): :func:`compute_shard` is a module-level
  function, so the Ray engine ships it to its workers; each writes its shard into the folder (which every worker
  must reach) and returns the file name; the driver checks and merges the files in shard order.

The batches of a shard are those of one pass when the shard size is a multiple of the batch size (the default
is), so even the last bits of the activations are the same.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..batching import resolve_batch_size
from ..capture.receptive_field import ReceptiveField, receptive_fields
from ..engine import Engine, get_engine
from ..errors import CnnscopeError
from ..models import LoadedModel, ModelLike, as_model, fingerprint
from ..outputs import atomic_path, write_text
from .examples import CPU_BATCH, GPU_BATCH, StatisticsAccumulator, nothing_processed, run_pass
from .histograms import LogBins
from .results import MAX_SKIPPED, DatasetStats
from .sources import ImageSource, Subset, identity_of, open_source

#: images per shard when ``shard_size`` is ``None`` (rounded up to a multiple of the batch size): a killed pass
#: loses at most one shard of work, and the shard files stay few (each holds every histogram of the layers).
SHARD_IMAGES = 256
PASS_FILE = "pass.json"
FORMAT = "cnnscope.dataset-pass/1"
SHARD_NAME = re.compile(r"^shard-(\d{5,})-([0-9a-f]{64})\.npz$")
#: what each entry of the pass spec is called in the message that refuses another pass's folder
SPEC_NAMES = {"model": "model", "fingerprint": "model weights (fingerprint)", "input_size": "input size",
              "resize_mode": "resize mode", "layers": "layers", "pre_activation": "pre_activation",
              "k": "k", "bottom_k": "bottom_k", "band_samples": "band_samples", "bins": "histogram bins",
              "seed": "seed", "receptive_field": "receptive_field", "by_class": "by_class",
              "class_histograms": "class_histograms", "images": "image set (identity)",
              "image_ids": "image ids", "image_count": "number of images", "shard_size": "shard size"}


@dataclass(frozen=True)
class PassContext:
    """What every shard of one pass shares (picklable: an engine ships it to its workers)."""

    folder: str
    source: object
    identity: str
    fingerprint: str
    layers: tuple[str, ...]
    options: dict
    receptive: dict[str, ReceptiveField] | None
    batch_size: int | None
    num_workers: int
    channels_last: bool


@dataclass(frozen=True)
class Shard:
    """Shard ``index``: the source's images at positions ``[start, stop)`` of ``source.ids()``."""

    context: PassContext
    index: int
    start: int
    stop: int


#: sources opened in this process by their spelling (a worker opens a text spec once, not once per shard)
_OPENED: dict[str, ImageSource] = {}


def shard_name(index: int, digest: str) -> str:
    return f"shard-{index:05d}-{digest}.npz"


def _source_of(ctx: PassContext) -> ImageSource:
    """The pass's source in this process, checked against the pass's image-set identity."""
    if isinstance(ctx.source, ImageSource):
        return ctx.source
    key = str(ctx.source)
    if key not in _OPENED:
        src = open_source(ctx.source)
        seen = str(identity_of(src.describe()))
        if seen != ctx.identity:
            raise CnnscopeError(f"{key}: this worker sees another image set than the pass (identity {seen[:19]} vs "
                                f"{ctx.identity[:19]}); give every worker the same files")
        _OPENED[key] = src
    return _OPENED[key]


def compute_shard(model: LoadedModel, shard: Shard) -> str:
    """Compute one shard and write it into the work folder; returns its file name (the engine's piece function).

    Raises:
        CnnscopeError: the worker's model is not the pass's (another weights fingerprint).
    """
    ctx = shard.context
    if fingerprint(model) != ctx.fingerprint:
        raise CnnscopeError(f"this worker's model {model.name!r} has other weights than the pass's (fingerprint "
                            f"{fingerprint(model)[:12]} vs {ctx.fingerprint[:12]}); load the same model everywhere")
    src = _source_of(ctx)
    base = src.parent if isinstance(src, Subset) else src
    part = base.subset(src.ids()[shard.start:shard.stop])
    opts = ctx.options
    acc = StatisticsAccumulator(model, list(ctx.layers), pre_activation=opts["pre_activation"], k=opts["k"],
                                bottom_k=opts["bottom_k"], band_samples=opts["band_samples"],
                                bins=LogBins(**opts["bins"]), seed=opts["seed"],
                                classes=src.classes if opts["by_class"] else None,
                                class_histograms=opts["class_histograms"])
    if shard.index == 0:  # a pass reports what its source found unreadable while indexing first
        acc.skip(src.problems())
    run_pass(acc, part, batch_size=ctx.batch_size, num_workers=ctx.num_workers, channels_last=ctx.channels_last)
    data = acc.partial(part, ctx.receptive).to_bytes()
    name = shard_name(shard.index, hashlib.sha256(data).hexdigest())
    with atomic_path(Path(ctx.folder) / name) as tmp:
        tmp.write_bytes(data)
    return name


def sharded_statistics(model: ModelLike, source: object, layers: str | Iterable[str], *, workdir: str | Path,
                       shard_size: int | None = None, engine: str | Engine | None = None, address: str | None = None,
                       pre_activation: bool = False, k: int = 9, bottom_k: int | None = None, band_samples: int = 6,
                       bins: LogBins | None = None, seed: int = 0, batch_size: int | None = None,
                       num_workers: int = 0, progress: bool = False, receptive_field: str | None = "auto",
                       channels_last: bool = True, by_class: bool = True, class_histograms: bool = False
                       ) -> DatasetStats:
    """:func:`~cnnscope.dataset.examples.collect_statistics` with a work folder (use that; the arguments are its
    own): finished shards are loaded, the others computed on the engine, everything merged in shard order.

    Raises:
        CnnscopeError: the folder holds another pass (the difference named), the source has no identity, or
            ``shard_size`` is not positive.
    """
    m = as_model(model)
    src = open_source(source)
    identity = identity_of(src.describe())
    if identity is None:
        raise CnnscopeError(f"a work folder needs an image set with an identity (files, shards, samples); this "
                            f"{src.kind} source has none, so a resumed pass could mix image sets: run without one")
    acc = StatisticsAccumulator(m, layers, pre_activation=pre_activation, k=k, bottom_k=bottom_k,
                                band_samples=band_samples, bins=bins, seed=seed)  # checks layers and settings
    folder = Path(workdir).expanduser().resolve()
    ids = src.ids()
    batch = resolve_batch_size(batch_size, m.device, cpu=CPU_BATCH, gpu=GPU_BATCH)
    options = {"pre_activation": acc.pre_activation, "k": acc.k, "bottom_k": acc.bottom_k,
               "band_samples": acc.band_samples, "bins": acc.bins.to_dict(), "seed": acc.seed,
               "by_class": bool(by_class), "class_histograms": bool(class_histograms)}
    spec = {"format": FORMAT, "model": m.name, "fingerprint": fingerprint(m), "input_size": list(m.input_size),
            "resize_mode": m.resize_mode, "layers": acc.layers, **options, "receptive_field": receptive_field,
            "images": identity, "image_ids": _ids_digest(ids), "image_count": len(ids), "shard_size": shard_size}
    spec["shard_size"] = _check_spec(folder, spec, batch)
    size = spec["shard_size"]
    n_shards = max(1, -(-len(ids) // size))
    receptive = None
    if receptive_field is not None:
        receptive = receptive_fields(m.module, acc.layers, m.input_size, method=receptive_field, progress=progress)
    if isinstance(source, (str, Path)):
        _OPENED.setdefault(str(source), src)
    ctx = PassContext(str(folder), str(source) if isinstance(source, (str, Path)) else src, identity,
                      spec["fingerprint"], tuple(acc.layers), options, receptive, batch_size, num_workers,
                      channels_last)
    done = _finished(folder, n_shards)
    todo = [Shard(ctx, i, i * size, min(len(ids), (i + 1) * size)) for i in range(n_shards) if i not in done]
    if todo:
        for j, name in get_engine(engine, address=address).map_with_model(m, compute_shard, todo, progress=progress,
                                                                           desc="shards"):
            done[todo[j].index] = name
    return _merge_shards(folder, [done[i] for i in range(n_shards)], spec, src)


def _ids_digest(ids: list[int]) -> str:
    """The image ids of a pass as a short hash (``range(n)`` for a whole source)."""
    if ids == list(range(len(ids))):
        return f"0..{len(ids) - 1}"
    return "sha256:" + hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def _check_spec(folder: Path, spec: dict, batch: int) -> int:
    """Write ``pass.json`` into a new work folder, or check that the folder's pass is this one; returns the shard
    size (a folder's own when ``spec`` leaves it ``None``)."""
    path = folder / PASS_FILE
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CnnscopeError(f"{path}: unreadable pass file ({err}); remove the work folder or choose another"
                                ) from None
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise CnnscopeError(f"{path}: not a cnnscope pass file (format {FORMAT}); choose another work folder")
    elif folder.exists() and any(p.name != PASS_FILE and not p.name.startswith(".") for p in folder.iterdir()):
        raise CnnscopeError(f"work folder {str(folder)!r} holds files but no {PASS_FILE}; give an empty or new folder")
    if spec["shard_size"] is None:
        spec["shard_size"] = old["shard_size"] if old else -(-SHARD_IMAGES // batch) * batch
    if not isinstance(spec["shard_size"], int) or spec["shard_size"] < 1:
        raise CnnscopeError(f"shard_size must be a positive number of images, got {spec['shard_size']!r}")
    if old is None:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(spec, indent=1))
        return spec["shard_size"]
    for key, value in spec.items():
        if old.get(key) != value:
            raise CnnscopeError(f"work folder {str(folder)!r} holds another pass: {SPEC_NAMES.get(key, key)} "
                                f"{_short(old.get(key))} there, {_short(value)} now; use another work folder")
    return spec["shard_size"]


def _short(value: object) -> str:
    text = json.dumps(value)
    return text[:28] + '..."' if len(text) > 32 else text


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished(folder: Path, n_shards: int) -> dict[int, str]:
    """The shards whose files are intact (bytes matching the checksum in the name); other shard files are
    reported and removed, so that they are computed again."""
    done: dict[int, str] = {}
    for path in sorted(folder.glob("shard-*.npz")):
        match = SHARD_NAME.match(path.name)
        index = int(match.group(1)) if match else -1
        if match and 0 <= index < n_shards and index not in done and _digest(path) == match.group(2):
            done[index] = path.name
            continue
        why = ("a second copy" if index in done else "outside this pass" if match and index >= n_shards
               else "truncated or corrupt (checksum mismatch)")
        warnings.warn(f"{path}: {why}; removed, its shard is computed again", stacklevel=3)
        path.unlink(missing_ok=True)
    return done


def _merge_shards(folder: Path, names: list[str], spec: dict, source: ImageSource) -> DatasetStats:
    """The shards' statistics merged in shard order, as one pass over ``source`` reports them."""
    merged: DatasetStats | None = None
    skipped: list = []
    n_skipped = 0
    for name in names:
        path = folder / name
        sha = SHARD_NAME.match(name).group(2)  # type: ignore[union-attr]
        try:
            part = DatasetStats.from_bytes(path.read_bytes(), str(path), sha256=sha)
        except (OSError, CnnscopeError) as err:
            path.unlink(missing_ok=True)
            raise CnnscopeError(f"shard file {path} could not be read ({err}); removed: run the pass again to "
                                "compute it") from None
        if part.fingerprint != spec["fingerprint"] or (part.layers and list(part.layers) != spec["layers"]):
            raise CnnscopeError(f"shard file {path} belongs to another pass (model or layers differ); remove it")
        skipped, n_skipped = (skipped + list(part.skipped))[:MAX_SKIPPED], n_skipped + part.n_skipped
        if part.layers:
            merged = part if merged is None else merged.merge(part)
    if merged is None:
        raise CnnscopeError(nothing_processed(skipped))
    return replace(merged, source=source.describe(), skipped=skipped, n_skipped=n_skipped)
