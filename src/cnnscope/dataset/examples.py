"""Streaming unit statistics: one pass over an image source, several layers at once, fixed memory.

For every channel of every requested layer the pass keeps the top-k and bottom-k positions (image id, position,
value, receptive-field box), histograms of the pre- and post-activation values, mean/std, the fraction of positions
above zero and uniform samples per activation band (Cammarata et al., *Curve Detectors*, Distill 2020, Figs. 6-7;
OpenAI Microscope's dataset examples). Memory does not grow with the number of images, and two passes over
disjoint images merge into exactly the result of one pass (:meth:`DatasetStats.merge`).

For an activation module (``"blocks.4.0.bn1.act"``) the ranked values are its *input* (pre-activation, as the
article plots) and the post histogram is its output; for any other layer both are the layer's output.

Example:
    >>> stats = collect_statistics(model, "samples:8", ["blocks.4.0.bn1.act"], k=9)
    >>> best = stats.examples("blocks.4.0.bn1.act", 17)          # [Example(image_id, name, y, x, value, box)]
    >>> patches = crops(stats, "blocks.4.0.bn1.act", 17, source)  # uint8 receptive-field crops
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from contextlib import ExitStack

import numpy as np
import torch

from ..capture import Capture, evaluating, is_activation, resolve_layers
from ..capture.receptive_field import ReceptiveField, receptive_fields
from ..errors import CnnscopeError, LayerError
from .accumulate import LayerAccumulator
from .histograms import LogBins
from .results import (
    MAX_SKIPPED,
    DatasetStats,
    Example,
    merge_ranges,
)
from .sources import ImageSource, iterate_batches, open_source


def post_kind(module: torch.nn.Module) -> object:
    """How a layer's post-activation values are obtained (see :class:`~.accumulate.LayerAccumulator`)."""
    if not is_activation(module):
        return "same"
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
    values (``[B, C, h, w]``) and, for activation layers other than ReLU/ReLU6/Hardtanh, its outputs.
    """

    def __init__(self, model, layers: Iterable[str], *, k: int = 9, bottom_k: int | None = None,
                 band_samples: int = 6, bins: LogBins | None = None, seed: int = 0) -> None:
        if k < 1 or (bottom_k is not None and bottom_k < 1) or band_samples < 1:
            raise CnnscopeError("k, bottom_k and band_samples must be >= 1")
        self.model = model
        self.table = resolve_layers(model.module, list(layers))
        self.layers = list(self.table)
        self.pre = {n: is_activation(m) for n, m in self.table.items()}
        self.post = {n: post_kind(m) for n, m in self.table.items()}
        self.k, self.bottom_k = k, bottom_k or k
        self.band_samples, self.bins, self.seed = band_samples, bins or LogBins(), seed
        self._acc: dict[str, LayerAccumulator] = {}
        self.images = 0
        self.ranges: list[tuple[int, int]] = []
        self.skipped: list[tuple[str, str]] = []
        self.n_skipped = 0

    def add(self, ids: torch.Tensor, values: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor] | None = None
            ) -> None:
        """Add a batch: ``values[layer]`` (pre-activations or outputs) and ``outputs[layer]`` for activation layers.

        Shape:
            - ids: ``[B]`` image ids; values / outputs: ``[B, C, h, w]``.
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
                self._acc[name] = LayerAccumulator(name, c, (h, w), self.pre[name], self.post[name],
                                                   self.k, self.bottom_k, self.band_samples, self.bins, self.seed,
                                                   v.device)
            acc = self._acc[name]
            if (c, (h, w)) != (acc.channels, acc.grid):
                raise LayerError(f"layer {name!r} changed shape between batches: {(c, h, w)} vs "
                                 f"{(acc.channels, *acc.grid)}")
            pos = torch.arange(h * w, device=v.device, dtype=torch.int64)
            keys = (ids.to(v.device)[:, None] * (h * w) + pos[None, :]).reshape(-1)
            acc.update(keys, v, None if outputs is None else outputs.get(name))
        self.images += int(ids.numel())
        self.ranges = merge_ranges(self.ranges + new)

    def skip(self, items: list[tuple[str, str]]) -> None:
        """Record unreadable images."""
        self.n_skipped += len(items)
        self.skipped = (self.skipped + items)[:MAX_SKIPPED]

    def result(self, source: ImageSource | None = None, receptive: dict[str, ReceptiveField] | None = None
               ) -> DatasetStats:
        """The statistics so far; ``source`` names the example images, ``receptive`` gives their boxes."""
        if not self._acc:
            raise CnnscopeError("no image was processed (all were unreadable or the source is empty)"
                                + (f"; first problem: {self.skipped[0][0]}: {self.skipped[0][1]}"
                                   if self.skipped else ""))
        receptive = receptive or {}
        layers = {n: self._acc[n].result(receptive.get(n)) for n in self.layers}
        used = sorted({int(i) for ls in layers.values() for ex in (ls.top, ls.bottom, ls.bands)
                       for i in np.unique(ex.image_ids) if i >= 0})
        names = {i: source.name(i) if source is not None else f"image {i}" for i in used}
        m = self.model
        return DatasetStats(model=m.name, input_size=tuple(m.input_size), resize_mode=m.resize_mode,
                            source=source.describe() if source is not None else {"kind": "batches"},
                            images=self.images, id_ranges=self.ranges, names=names, skipped=self.skipped,
                            n_skipped=self.n_skipped, k=self.k, bottom_k=self.bottom_k,
                            band_samples=self.band_samples, seed=self.seed, bins=self.bins, layers=layers)


def _overlaps(new: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> bool:
    """Whether any of the ``[start, stop)`` intervals ``new`` meets the sorted, disjoint ``ranges``."""
    starts = [a for a, _ in ranges]
    for a, b in new:
        k = bisect.bisect_right(starts, a) - 1
        if (k >= 0 and ranges[k][1] > a) or (k + 1 < len(ranges) and ranges[k + 1][0] < b):
            return True
    return False


def collect_statistics(model, images: object, layers: str | Iterable[str], *, k: int = 9,
                       bottom_k: int | None = None, band_samples: int = 6, bins: LogBins | None = None,
                       seed: int = 0, batch_size: int = 16, num_workers: int = 0, progress: bool = False,
                       receptive_field: str | None = "auto", channels_last: bool = True) -> DatasetStats:
    """One pass over ``images`` collecting per-channel statistics of several layers.

    The model runs without gradients in temporary eval mode; forward passes stop after the deepest requested
    layer. Nothing about the model changes.

    Args:
        model: a ``LoadedModel`` (``cnnscope.models.load_model`` or ``cnnscope.models.wrap``).
        images: anything :func:`~cnnscope.dataset.sources.open_source` accepts (folder, glob, list, Dataset,
            ``"samples:N"``, an ``ImageSource`` or a subset of one).
        layers: dotted layer names with ``[B, C, h, w]`` outputs.
        k, bottom_k: examples kept per channel at each end (``bottom_k`` defaults to ``k``).
        band_samples: uniform samples kept per channel and sampling band.
        bins: histogram bins (the default covers ``1e-3 .. 1e4`` in magnitude).
        seed: seed of the band sampling (results merge only with equal seeds).
        batch_size: images per forward pass (memory bound).
        num_workers: ``DataLoader`` workers reading images.
        progress: show a progress bar.
        receptive_field: how to measure example boxes (``"auto"``, ``"fast"``, ``"exact"``; ``None`` = no boxes).
        channels_last: hand the batches to the model in channels-last memory format (faster convolutions on CPU,
            and the statistics read such activations without copies); ``False``: contiguous ``NCHW`` batches, for
            models that need them. The statistics are exact either way (the two formats' convolutions may round
            differently in the last bits).

    Returns:
        :class:`DatasetStats`; unreadable images are listed in ``skipped``.
    """
    from ..models import LoadedModel

    if not isinstance(model, LoadedModel):
        raise CnnscopeError("collect_statistics() needs a LoadedModel; wrap a plain module with "
                            "cnnscope.models.wrap(module, input_size, mean, std)")
    source = open_source(images)
    acc = StatisticsAccumulator(model, layers, k=k, bottom_k=bottom_k, band_samples=band_samples, bins=bins,
                                seed=seed)
    receptive = None
    if receptive_field is not None:
        receptive = receptive_fields(model.module, acc.layers, model.input_size, method=receptive_field,
                                     progress=progress)
    act_layers = [n for n in acc.layers if acc.pre[n]]
    outputs = [n for n in acc.layers if not acc.pre[n] or acc.post[n] == "captured"]  # outputs that are read
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(evaluating(model.module))
        pre_cap = stack.enter_context(Capture(model.module, act_layers, pre_activation=True, stop_early=False)
                                      ) if act_layers else None
        out_cap = stack.enter_context(Capture(model.module, outputs, stop_early=False)) if outputs else None
        # the driver sees every layer and ends each forward after the deepest; its hooks are registered last, so
        # the captures above have recorded a layer before the driver stops there. It keeps references, no copies.
        driver = stack.enter_context(Capture(model.module, acc.layers, clone=False))
        for batch in iterate_batches(source, model, batch_size=batch_size, num_workers=num_workers,
                                     progress=progress, description="statistics"):
            if batch.skipped:
                acc.skip(batch.skipped)
            if batch.ids.numel() == 0:
                continue
            for cap in (pre_cap, out_cap):
                if cap is not None:
                    cap.reset()
            x = batch.tensor(model)
            driver.run(x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format))
            values = {n: pre_cap[n] if acc.pre[n] else out_cap[n] for n in acc.layers}  # type: ignore[index]
            acc.add(batch.ids, values, {n: out_cap[n] for n in act_layers if acc.post[n] == "captured"})
    return acc.result(source, receptive)


def crop(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int] | None = None,
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


def example_crops(examples: list[Example], source: object, model, pad: bool = True,
                  rf: ReceptiveField | None = None) -> list[np.ndarray]:
    """The receptive-field crops of some examples (``uint8 [h, w, 3]`` each), read again from their source.

    Args:
        examples: records from :meth:`DatasetStats.examples` / :meth:`DatasetStats.band_examples`.
        source: the source the statistics were collected from (the same ids).
        model: the ``LoadedModel`` (images are fitted the same way as in the pass).
        pad: pad border crops to the full receptive-field size (needs ``rf``).
        rf: the layer's :class:`ReceptiveField` (``stats[layer].rf``).
    """
    src = open_source(source)
    size = rf.size if (pad and rf is not None) else None
    cache: dict[int, np.ndarray] = {}
    out = []
    for ex in examples:
        if ex.image_id not in cache:
            cache[ex.image_id] = model.fit_image(src.load(ex.image_id))
        out.append(crop(cache[ex.image_id], ex.box, size))
    return out


def crops(stats: DatasetStats, layer: str, channel: int, source: object, model, which: str = "top",
          pad: bool = True) -> list[np.ndarray]:
    """Receptive-field crops of a channel's ``top`` or ``bottom`` examples (best first)."""
    return example_crops(stats.examples(layer, channel, which), source, model, pad=pad, rf=stats[layer].rf)
