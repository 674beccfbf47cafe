"""Streaming unit statistics: one pass over an image source, several layers at once, fixed memory.

For every channel of every requested layer the pass keeps the top-k and bottom-k positions (image id, position,
value, receptive-field box), histograms of the values and of the layer's outputs, mean/std, the fraction of
positions above zero and uniform samples per activation band (Cammarata et al., *Curve Detectors*, Distill 2020,
Figs. 6-7; OpenAI Microscope's dataset examples). Memory does not grow with the number of images, and two passes over
disjoint images merge into exactly the result of one pass (:meth:`DatasetStats.merge`).

The values are the layers' outputs; with ``pre_activation=True`` (every layer an activation module, e.g.
``"blocks.4.0.bn1.act"``) they are the activations' inputs, as the article plots, and the output statistics
describe what the activation makes of them.

Example:
    >>> stats = collect_statistics(model, "samples:8", ["blocks.4.0.bn1.act"], k=9, pre_activation=True)
    >>> best = stats.examples("blocks.4.0.bn1.act", 17)       # [Example(image_id, name, y, x, value, box)]
    >>> patches = crops(model, stats, "blocks.4.0.bn1.act", channel=17, source="samples:8")  # uint8 [9, h, w, 3]
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from ..batching import resolve_batch_size
from ..capture import Capture, evaluating, is_activation, resolve_layers
from ..capture.receptive_field import ReceptiveField, receptive_fields
from ..engine import Engine
from ..errors import CnnscopeError, LayerError
from ..models import ModelLike, as_model, fingerprint
from .accumulate import LayerAccumulator
from .classes import ClassAccumulator
from .histograms import LogBins
from .results import MAX_SKIPPED, DatasetStats, Example, merge_ranges, used_ids
from .sources import ImageSource, SkippedImage, iterate_batches, open_source

#: images per forward of the statistics pass when ``batch_size`` is ``None``, by device
CPU_BATCH, GPU_BATCH = 16, 64


def post_kind(module: torch.nn.Module) -> object:
    """How an activation module's outputs follow from its inputs: a clamp, or captured (see
    :class:`~.accumulate.LayerAccumulator`)."""
    if isinstance(module, torch.nn.ReLU):
        return ("clamp", 0.0, None)
    if isinstance(module, torch.nn.ReLU6):
        return ("clamp", 0.0, 6.0)
    if isinstance(module, torch.nn.Hardtanh):
        return ("clamp", float(module.min_val), float(module.max_val))
    return "captured"


class StatisticsAccumulator:
    """Feed batches of activations, get :class:`DatasetStats`; :func:`collect_statistics` drives one over a source.

    Use it directly to add statistics to a loop of your own: call :meth:`add` with the image ids and each layer's
    values (``[B, C, h, w]``) and, with ``pre_activation`` for activation modules other than ReLU/ReLU6/Hardtanh,
    their outputs. With ``classes`` (the class names of a labelled source) :meth:`add` also takes each image's class
    index and the result has statistics per class (:class:`~.classes.ClassStats`; with ``class_histograms`` their
    histograms too).

    Raises:
        LayerError: ``pre_activation`` and a layer that is not an activation module.
    """

    def __init__(self, model: ModelLike, layers: Iterable[str], *, pre_activation: bool = False, k: int = 9,
                 bottom_k: int | None = None, band_samples: int = 6, bins: LogBins | None = None, seed: int = 0,
                 classes: list[str] | None = None, class_histograms: bool = False) -> None:
        if k < 1 or (bottom_k is not None and bottom_k < 1) or band_samples < 1:
            raise CnnscopeError("k, bottom_k and band_samples must be >= 1")
        self.model = as_model(model)
        self.table = resolve_layers(self.model.module, [layers] if isinstance(layers, str) else list(layers))
        self.layers = list(self.table)
        self.pre_activation = bool(pre_activation)
        if self.pre_activation:
            bad = [n for n, mod in self.table.items() if not is_activation(mod)]
            if bad:
                raise LayerError(f"pre_activation=True reads the input of activation modules; {bad} are not "
                                 "activations (use pre_activation=False for their outputs)")
        self.post = {n: post_kind(mod) if self.pre_activation else "same" for n, mod in self.table.items()}
        self.k, self.bottom_k = k, bottom_k or k
        self.band_samples, self.bins, self.seed = band_samples, bins or LogBins(), seed
        self._acc: dict[str, LayerAccumulator] = {}
        self.classes, self.class_histograms = (list(classes) if classes else None), bool(class_histograms)
        self._by_class: dict[str, ClassAccumulator] = {}
        self.images = 0
        self.ranges: list[tuple[int, int]] = []
        self.skipped: list[SkippedImage] = []
        self.n_skipped = 0

    def add(self, ids: torch.Tensor, values: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor] | None = None,
            labels: torch.Tensor | None = None) -> None:
        """Add a batch: ``values[layer]`` and, where the output statistics need them, ``outputs[layer]``; with
        ``classes``, the images' class indices ``labels`` (``-1``: no class).

        Shape:
            - ids, labels: ``[B]``; values / outputs: ``[B, C, h, w]``.
        """
        ids = ids.to(torch.int64)
        new = merge_ranges([(int(i), int(i) + 1) for i in ids.tolist()])
        if sum(b - a for a, b in new) != ids.numel() or _overlaps(new, self.ranges):
            raise CnnscopeError("an image id was added twice; every image of a pass needs its own id")
        for name in self.layers:
            v = values[name]
            if v.ndim != 4:
                raise LayerError(f"dataset statistics need a [B, C, H, W] layer; {name!r} gives {tuple(v.shape)}")
            b, c, h, w = v.shape
            if name not in self._acc:
                self._acc[name] = LayerAccumulator(name, c, (h, w), self.pre_activation, self.post[name],
                                                   self.k, self.bottom_k, self.band_samples, self.bins, self.seed,
                                                   v.device)
            acc = self._acc[name]
            if (c, (h, w)) != (acc.channels, acc.grid):
                raise LayerError(f"layer {name!r} changed shape between batches: {(c, h, w)} vs "
                                 f"{(acc.channels, *acc.grid)}")
            pos = torch.arange(h * w, device=v.device, dtype=torch.int64)
            keys = (ids.to(v.device)[:, None] * (h * w) + pos[None, :]).reshape(-1)
            acc.update(keys, v, None if outputs is None else outputs.get(name))
            if self.classes is not None and labels is not None:
                if name not in self._by_class:
                    self._by_class[name] = ClassAccumulator(name, self.classes, c, self.bins if self.class_histograms
                                                            else None, v.device)
                self._by_class[name].update(labels, v)
        self.images += int(ids.numel())
        self.ranges = merge_ranges(self.ranges + new)

    def skip(self, items: list[tuple[str, str]]) -> None:
        """Record unreadable images (``(path, reason)`` pairs)."""
        self.n_skipped += len(items)
        self.skipped = (self.skipped + [SkippedImage(*s) for s in items])[:MAX_SKIPPED]

    def result(self, source: ImageSource | None = None, receptive: dict[str, ReceptiveField] | None = None
               ) -> DatasetStats:
        """The statistics so far; ``source`` names the example images (and gives their classes), ``receptive``
        gives their boxes."""
        if not self._acc:
            raise CnnscopeError(nothing_processed(self.skipped))
        return self.partial(source, receptive)

    def partial(self, source: ImageSource | None = None, receptive: dict[str, ReceptiveField] | None = None
                ) -> DatasetStats:
        """Like :meth:`result`, but with no layers instead of an error when no image was processed yet (a shard
        of unreadable images still records them)."""
        receptive = receptive or {}
        layers = {n: self._acc[n].result(receptive.get(n)) for n in self.layers if n in self._acc}
        for n, by_class in self._by_class.items():
            layers[n].by_class = by_class.result()
        used = sorted(used_ids(layers.values()))
        names = {i: source.name(i) if source is not None else f"image {i}" for i in used}
        labels = {i: lab for i in used if (lab := source.label(i)) is not None} if source is not None else {}
        m = self.model
        return DatasetStats(model=m.name, input_size=tuple(m.input_size), resize_mode=m.resize_mode,
                            source=source.describe() if source is not None else {"kind": "batches"},
                            images=self.images, id_ranges=self.ranges, names=names, skipped=self.skipped,
                            n_skipped=self.n_skipped, k=self.k, bottom_k=self.bottom_k,
                            band_samples=self.band_samples, seed=self.seed, bins=self.bins, layers=layers,
                            labels=labels, fingerprint=fingerprint(m))


def nothing_processed(skipped: list[SkippedImage]) -> str:
    """The error of a pass that could read no image."""
    return ("no image was processed (all were unreadable or the source is empty)"
            + (f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""))


def _overlaps(new: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> bool:
    """Whether any of the ``[start, stop)`` intervals ``new`` meets the sorted, disjoint ``ranges``."""
    starts = [a for a, _ in ranges]
    for a, b in new:
        k = bisect.bisect_right(starts, a) - 1
        if (k >= 0 and ranges[k][1] > a) or (k + 1 < len(ranges) and ranges[k + 1][0] < b):
            return True
    return False


def collect_statistics(model: ModelLike, source: object, layers: str | Iterable[str], *,
                       pre_activation: bool = False, k: int = 9, bottom_k: int | None = None, band_samples: int = 6,
                       bins: LogBins | None = None, seed: int = 0, batch_size: int | None = None, num_workers: int = 0,
                       progress: bool = False, receptive_field: str | None = "auto", channels_last: bool = True,
                       by_class: bool = True, class_histograms: bool = False, workdir: str | Path | None = None,
                       shard_size: int | None = None, engine: str | Engine | None = None, address: str | None = None
                       ) -> DatasetStats:
    """One pass over a source of images collecting per-channel statistics of several layers.

    The model runs without gradients in temporary eval mode; forward passes stop after the deepest requested
    layer. Nothing about the model changes.

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module`` (wrapped by :func:`cnnscope.as_model`).
        source: anything :func:`~cnnscope.dataset.sources.open_source` accepts (folder, glob, list, Dataset,
            ``"samples:N"``, an ``ImageSource`` or a subset of one).
        layers: one dotted layer name or several, with ``[B, C, h, w]`` outputs.
        pre_activation: rank the inputs of activation modules (every layer must be one) instead of the layers'
            outputs; the output histogram and moments then describe the activations' outputs.
        k, bottom_k: examples kept per channel at each end (``bottom_k`` defaults to ``k``).
        band_samples: uniform samples kept per channel and sampling band.
        bins: histogram bins (the default covers ``1e-3 .. 1e4`` in magnitude).
        seed: seed of the band sampling (results merge only with equal seeds).
        batch_size: images per forward pass (``None``: a default for the model's device).
        num_workers: ``DataLoader`` workers reading images.
        progress: show a progress bar.
        receptive_field: how to measure example boxes (``"auto"``, ``"fast"``, ``"exact"``; ``None`` = no boxes).
        channels_last: hand the batches to the model in channels-last memory format (faster convolutions on CPU,
            and the statistics read such activations without copies); ``False``: contiguous ``NCHW`` batches, for
            models that need them. The statistics are exact either way (the two formats' convolutions may round
            differently in the last bits).
        by_class: on a labelled source (class folders, a manifest with labels, ...), keep statistics per class
            (``stats[layer].by_class``: images, mean of each image's maximum, largest value; see
            :meth:`DatasetStats.top_classes`) and each example's class. ``False``: the examples still carry their
            class, no per-class statistics are kept.
        class_histograms: with ``by_class``, also a histogram of the values per class and channel (memory
            ``classes x channels x bins x 8`` bytes per layer; refused above 1 GiB).
        workdir: a work folder that persists the pass shard by shard (:mod:`.shards`): a rerun with the same
            model, layers, settings and images loads the finished shards and computes only the rest; the result
            equals one uninterrupted pass. ``None``: in memory only.
        shard_size: images per shard with ``workdir`` (default :data:`~.shards.SHARD_IMAGES`, rounded up to a
            multiple of the batch size).
        engine, address: where the shards run with ``workdir`` (:func:`cnnscope.engine.get_engine`: ``"local"``,
            the default, or ``"ray"`` with ``address`` ``"auto"`` / ``HOST:PORT``).

    Returns:
        :class:`DatasetStats` (every number a CPU tensor); unreadable images are skipped and listed in ``skipped``
        (:class:`~.sources.SkippedImage`, the first 100) and counted in ``n_skipped``. The global random state
        (torch, numpy, ``random``) is not touched.

    Raises:
        CnnscopeError: ``workdir`` holds a pass of another model, layers, settings or image set (named), or the
            source has no identity; ``shard_size`` / ``engine`` / ``address`` without ``workdir``.
    """
    if workdir is not None:
        from .shards import sharded_statistics

        return sharded_statistics(model, source, layers, workdir=workdir, shard_size=shard_size, engine=engine,
                                  address=address, pre_activation=pre_activation, k=k, bottom_k=bottom_k,
                                  band_samples=band_samples, bins=bins, seed=seed, batch_size=batch_size,
                                  num_workers=num_workers, progress=progress, receptive_field=receptive_field,
                                  channels_last=channels_last, by_class=by_class, class_histograms=class_histograms)
    if shard_size is not None or engine not in (None, "local") or address is not None:
        raise CnnscopeError("shard_size, engine and address need a work folder (workdir=...) for the shards")
    m = as_model(model)
    src = open_source(source)
    acc = StatisticsAccumulator(m, layers, pre_activation=pre_activation, k=k, bottom_k=bottom_k,
                                band_samples=band_samples, bins=bins, seed=seed,
                                classes=src.classes if by_class else None, class_histograms=class_histograms)
    receptive = None
    if receptive_field is not None:
        receptive = receptive_fields(m.module, acc.layers, m.input_size, method=receptive_field, progress=progress)
    run_pass(acc, src, batch_size=batch_size, num_workers=num_workers, progress=progress,
             channels_last=channels_last)
    return acc.result(src, receptive)


def run_pass(acc: StatisticsAccumulator, source: ImageSource, *, batch_size: int | None = None,
             num_workers: int = 0, progress: bool = False, channels_last: bool = True) -> None:
    """Feed every image of ``source`` to ``acc`` (its model, layers and settings), batch by batch; unreadable
    images are recorded with :meth:`StatisticsAccumulator.skip`. The loop of :func:`collect_statistics` and of
    each shard of a pass in a work folder."""
    m, src, pre_activation = acc.model, source, acc.pre_activation
    outputs = [n for n in acc.layers if not pre_activation or acc.post[n] == "captured"]  # outputs that are read
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(evaluating(m.module))
        pre_cap = stack.enter_context(Capture(m.module, acc.layers, pre_activation=True, stop_early=False)
                                      ) if pre_activation else None
        out_cap = stack.enter_context(Capture(m.module, outputs, stop_early=False)) if outputs else None
        # the driver sees every layer and ends each forward after the deepest; its hooks are registered last, so
        # the captures above have recorded a layer before the driver stops there. It keeps references, no copies.
        driver = stack.enter_context(Capture(m.module, acc.layers, clone=False))
        for batch in iterate_batches(m, src, batch_size=resolve_batch_size(batch_size, m.device, cpu=CPU_BATCH,
                                                                           gpu=GPU_BATCH),
                                     num_workers=num_workers, progress=progress, description="statistics"):
            if batch.skipped:
                acc.skip(batch.skipped)
            if batch.ids.numel() == 0:
                continue
            for cap in (pre_cap, out_cap):
                if cap is not None:
                    cap.reset()
            driver.run(batch.tensor(m).contiguous(memory_format=fmt))
            labels = torch.tensor([src.label_index(i) for i in batch.ids.tolist()], dtype=torch.int64) \
                if acc.classes is not None else None
            if pre_cap is None:
                acc.add(batch.ids, {n: out_cap[n] for n in acc.layers}, labels=labels)  # type: ignore[index]
            else:
                acc.add(batch.ids, {n: pre_cap[n] for n in acc.layers},
                        {n: out_cap[n] for n in outputs}, labels=labels)  # type: ignore[index]


def crop(image: np.ndarray, box: tuple[int, int, int, int], *, size: tuple[int, int] | None = None,
         fill: int = 128) -> np.ndarray:
    """Cut ``box`` out of a fitted image; with ``size`` (the full receptive-field size) a box clipped by the image
    border is padded with ``fill`` on that side, so every crop shows the same scale.

    Shape:
        - image: ``[H, W, 3]`` uint8; output: ``[bottom - top, right - left, 3]`` or ``size + (3,)``.
    """
    top, left, bottom, right = box
    if bottom <= top or right <= left:
        return np.full((1, 1, 3), fill, np.uint8) if size is None else np.full(size + (3,), fill, np.uint8)
    patch = image[top:bottom, left:right]
    if size is None:
        return np.ascontiguousarray(patch)
    h, w = image.shape[:2]
    fh, fw = max(size[0], patch.shape[0]), max(size[1], patch.shape[1])
    out = np.full((fh, fw, 3), fill, np.uint8)
    dy = fh - patch.shape[0] if top == 0 and bottom < h else (fh - patch.shape[0]) // 2 if top == 0 else 0
    dx = fw - patch.shape[1] if left == 0 and right < w else (fw - patch.shape[1]) // 2 if left == 0 else 0
    out[dy:dy + patch.shape[0], dx:dx + patch.shape[1]] = patch
    return out


def example_crops(model: ModelLike, examples: list[Example], *, source: object, rf: ReceptiveField | None
                  ) -> np.ndarray:
    """The receptive-field crops of some examples, read again from their source and padded to the receptive
    field's size where the border clipped them.

    Args:
        model: the model of the pass (images are fitted to its input size the same way).
        examples: records from :meth:`DatasetStats.examples` / :meth:`DatasetStats.band_examples`.
        source: the source the statistics were collected from (the same ids).
        rf: the layer's :class:`ReceptiveField` (``stats[layer].rf``).

    Returns:
        ``uint8 [len(examples), h, w, 3]`` with ``(h, w) = rf.size``.

    Raises:
        CnnscopeError: ``rf`` is ``None`` (statistics collected with ``receptive_field=None`` have no boxes).
    """
    m = as_model(model)
    if rf is None:
        raise CnnscopeError("these statistics have no receptive-field boxes (collected with receptive_field=None); "
                            "collect them with receptive_field='auto' for crops")
    src = open_source(source)
    cache: dict[int, np.ndarray] = {}
    out = np.zeros((len(examples),) + rf.size + (3,), np.uint8)
    for i, ex in enumerate(examples):
        if ex.image_id not in cache:
            cache[ex.image_id] = m.fit_image(src.load(ex.image_id))
        out[i] = crop(cache[ex.image_id], ex.box, size=rf.size)
    return out


def crops(model: ModelLike, stats: DatasetStats, layer: str, *, channel: int, source: object, which: str = "top"
          ) -> np.ndarray:
    """Receptive-field crops of a channel's ``top`` or ``bottom`` examples (best first), ``uint8 [k, h, w, 3]``."""
    model = as_model(model)
    return example_crops(model, stats.examples(layer, channel, which), source=source, rf=stats[layer].rf)
