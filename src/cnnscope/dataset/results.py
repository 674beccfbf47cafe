"""Results of a statistics pass: per-layer dataclasses, exact merging, example crops (save/load: :mod:`.results_io`).

:class:`DatasetStats` holds one :class:`LayerStats` per layer; each has, per channel, the top-k and bottom-k
:class:`Examples` (image id, position, value, receptive-field box), histograms, moments and band samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..capture.receptive_field import ReceptiveField
from ..errors import CnnscopeError, LayerError, unknown
from ..outputs import atomic_path
from .classes import ClassStats
from .histograms import LogBins
from .ranking import Kept, select
from .sources import identity_of

FORMAT = "cnnscope.dataset-stats/2"
MAX_SKIPPED = 100


@dataclass
class Example:
    """One dataset example of a unit: where in which image, and how strongly.

    Attributes:
        image_id: index of the image in its source.
        name: the image's name (path, ``chelsea#3``, ...).
        y, x: position in the layer's grid.
        value: the unit's value there (the layer's output, or its input with ``pre_activation``).
        box: ``(top, left, bottom, right)`` receptive-field box in the fitted input image (bottom/right exclusive).
        label: the image's class in a labelled source, else ``None``.
    """

    image_id: int
    name: str
    y: int
    x: int
    value: float
    box: tuple[int, int, int, int]
    label: str | None = None

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "name": self.name, "label": self.label, "y": self.y, "x": self.x,
                "value": self.value, "box": list(self.box)}


@dataclass
class Examples:
    """``k`` records per channel, best first; empty slots have ``image_ids == -1`` and ``NaN`` values (CPU tensors).

    Shape:
        - values (``float32``), image_ids (``int64``), ys, xs (``int32``): ``[C, k]`` (band samples:
          ``[C, bands, m]``); boxes (``int32``): ``[..., 4]``; priority (band samples only, ``int64``): as values.
    """

    values: torch.Tensor
    image_ids: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor
    boxes: torch.Tensor
    priority: torch.Tensor | None = None

    def keys(self, grid: tuple[int, int]) -> torch.Tensor:
        """Global position keys ``image_id * h * w + y * w + x`` (``-1`` for empty slots)."""
        h, w = grid
        key = self.image_ids * (h * w) + self.ys.to(torch.int64) * w + self.xs.to(torch.int64)
        return torch.where(self.image_ids >= 0, key, -1)


def examples_from_kept(kept: Kept, grid: tuple[int, int], rf: ReceptiveField | None, shape: tuple[int, ...],
                       negate: bool = False) -> Examples:
    """Convert ranked records to :class:`Examples` on the CPU, with positions and boxes."""
    h, w = grid
    keys = kept.keys.cpu().reshape(shape)
    filled = keys >= 0
    ids = torch.where(filled, keys // (h * w), -1)
    pos = torch.where(filled, keys % (h * w), 0)
    ys, xs = (pos // w).to(torch.int32), (pos % w).to(torch.int32)
    values = torch.where(filled, kept.payload.cpu().reshape(shape).float(), float("nan"))
    if rf is not None:
        boxes = torch.from_numpy(rf.boxes_at(ys.numpy(), xs.numpy()).astype(np.int32))
    else:
        boxes = torch.zeros(shape + (4,), dtype=torch.int32)
    boxes[~filled] = 0
    priority = None
    if negate:  # band samples: scores are negated priorities
        priority = torch.where(filled, -kept.scores.cpu().reshape(shape).to(torch.int64), -1)
    return Examples(values, ids, ys, xs, boxes, priority)


def kept_from_examples(ex: Examples, grid: tuple[int, int], band: bool = False) -> tuple[torch.Tensor, ...]:
    """Flat ``(rows, scores, keys, payload)`` of the filled records, for merging with :func:`select`."""
    keys = ex.keys(grid)
    rows_count = math.prod(keys.shape[:-1])
    keys2 = keys.reshape(rows_count, -1)
    filled = keys2 >= 0
    rows = torch.arange(rows_count)[:, None].expand_as(keys2)[filled]
    values = ex.values.reshape(rows_count, -1)[filled]
    scores = -ex.priority.reshape(rows_count, -1)[filled] if band else values  # type: ignore[union-attr]
    return rows, scores.contiguous(), keys2[filled], values


@dataclass
class Moments:
    """Streaming mean and variance per channel (Chan et al.'s parallel update), ``float64`` CPU tensors."""

    count: int
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def empty(cls, channels: int) -> Moments:
        return cls(0, torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64))

    @property
    def std(self) -> torch.Tensor:
        return torch.sqrt(self.m2 / max(self.count, 1))

    def merge(self, other: Moments) -> Moments:
        n = self.count + other.count
        if n == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        return Moments(n, mean, m2)


@dataclass
class LayerStats:
    """Everything one pass learned about the channels of one layer (every number a CPU tensor).

    Attributes:
        layer: dotted layer name.
        pre_activation: whether the values are the inputs of the activation module (pre-ReLU) rather than the
            layer's outputs.
        grid: ``(h, w)`` of the layer.
        top, bottom: the ``k`` largest / smallest values per channel (bottom: smallest first).
        hist: ``int64 [C, n_bins]`` counts of the values over ``bins``; hist_output: the same of the layer's
            output (``hist`` itself unless ``pre_activation``).
        moments, moments_output: mean/std of the values and of the output.
        positive: ``int64 [C]`` positions with value ``> 0``.
        minimum, maximum: ``float32 [C]``.
        bands: uniform samples per channel and sampling band (``[C, n_bands, m]``).
        rf: the layer's receptive-field boxes (``None`` when not measured).
        by_class: statistics per class of a labelled source (:class:`~.classes.ClassStats`), or ``None``.
    """

    layer: str
    pre_activation: bool
    grid: tuple[int, int]
    top: Examples
    bottom: Examples
    hist: torch.Tensor
    hist_output: torch.Tensor
    moments: Moments
    moments_output: Moments
    positive: torch.Tensor
    minimum: torch.Tensor
    maximum: torch.Tensor
    bands: Examples
    rf: ReceptiveField | None = None
    by_class: ClassStats | None = None

    @property
    def channels(self) -> int:
        return int(self.hist.shape[0])

    @property
    def count(self) -> int:
        """Positions seen per channel (images x h x w)."""
        return self.moments.count

    @property
    def mean(self) -> torch.Tensor:
        return self.moments.mean

    @property
    def std(self) -> torch.Tensor:
        return self.moments.std

    @property
    def fraction_positive(self) -> torch.Tensor:
        return self.positive.double() / max(self.count, 1)

    def strongest(self, n: int) -> list[int]:
        """The ``n`` channels with the largest maximum, strongest first."""
        return torch.argsort(-self.maximum, stable=True)[:n].tolist()

    def check_channel(self, channel: int) -> int:
        if not 0 <= channel < self.channels:
            raise LayerError(f"channel {channel} is out of range for layer {self.layer!r} ({self.channels} "
                             "channels)")
        return int(channel)


@dataclass
class DatasetStats:
    """The result of :func:`~cnnscope.dataset.examples.collect_statistics`: one :class:`LayerStats` per layer.

    Attributes:
        model: the model's name; input_size / resize_mode: how images were fitted (boxes refer to that image).
        source: description of the image source; images: number of images processed.
        id_ranges: processed image ids as ``[start, stop)`` intervals (merging needs disjoint ids).
        names: image id -> name for every image an example refers to.
        skipped: :class:`~.sources.SkippedImage` ``(path, reason)`` of unreadable images (the first 100) and
            ``n_skipped`` in all.
        k, bottom_k, band_samples, seed, bins: the settings of the pass (results merge only with equal ones).
        labels: image id -> class for every example image of a labelled source.
        fingerprint: the model's :func:`~cnnscope.models.fingerprint` (class and weights), ``None`` when unknown
            (files written before it was recorded); merging refuses two different ones.
    """

    model: str
    input_size: tuple[int, int]
    resize_mode: str
    source: dict
    images: int
    id_ranges: list[tuple[int, int]]
    names: dict[int, str]
    skipped: list[tuple[str, str]]
    n_skipped: int
    k: int
    bottom_k: int
    band_samples: int
    seed: int
    bins: LogBins
    layers: dict[str, LayerStats] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    fingerprint: str | None = None

    def __getitem__(self, layer: str) -> LayerStats:
        if layer not in self.layers:
            raise LayerError(unknown("layer in these statistics", layer, list(self.layers)))
        return self.layers[layer]

    # -- records -------------------------------------------------------------------------------------
    def examples(self, layer: str, channel: int, which: str = "top") -> list[Example]:
        """The ``top`` (largest first) or ``bottom`` (smallest first) examples of one channel."""
        ls = self[layer]
        c = ls.check_channel(channel)
        if which not in ("top", "bottom"):
            raise CnnscopeError(unknown("example kind", which, ("top", "bottom")))
        ex = ls.top if which == "top" else ls.bottom
        return self._records(ex.image_ids[c], ex.values[c], ex.ys[c], ex.xs[c], ex.boxes[c])

    def _records(self, ids: torch.Tensor, vals: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                 boxes: torch.Tensor) -> list[Example]:
        return [Example(i, self.names.get(i, f"image {i}"), y, x, v, tuple(box),  # type: ignore[arg-type]
                        self.labels.get(i))
                for i, v, y, x, box in zip(ids.tolist(), vals.tolist(), ys.tolist(), xs.tolist(), boxes.tolist())
                if i >= 0]

    def band_examples(self, layer: str, channel: int, low: float, high: float, n: int | None = None
                      ) -> list[Example]:
        """A uniform random sample of positions whose value lies in ``[low, high)``.

        It comes from the sampling bands that overlap ``[low, high)``: each kept the ``band_samples`` positions of
        lowest random priority. Bands hold very different numbers of positions, so their records are not equally
        likely; but every position whose priority is below ``t``, the smallest largest-kept priority among the
        overlapping bands that are full, was kept by its band. Records outside the interval or above ``t`` are
        dropped and the rest ordered by priority, so the result is a uniform sample without replacement of the
        interval's positions (up to ``n`` records; fewer when the bands hold fewer).
        """
        ls = self[layer]
        c = ls.check_channel(channel)
        ex = ls.bands
        ids2 = ex.image_ids[c]  # [bands, m]
        prio2 = ex.priority[c]
        lower, upper = self.bins.band_bounds()
        overlap = torch.as_tensor((upper > low) & (lower < high))[: ids2.shape[0]]
        full = overlap & (ids2 >= 0).all(dim=1)
        threshold = prio2[full].amax(dim=1).min() if bool(full.any()) else None
        vals = ex.values[c].reshape(-1)
        ids = ids2.reshape(-1)
        mask = (ids >= 0) & (vals >= low) & (vals < high)
        if threshold is not None:
            mask &= prio2.reshape(-1) <= threshold
        inside = torch.nonzero(mask).squeeze(1)
        order = inside[torch.argsort(ex.priority[c].reshape(-1)[inside], stable=True)][:n]  # type: ignore[index]
        return self._records(ids[order], vals[order], ex.ys[c].reshape(-1)[order], ex.xs[c].reshape(-1)[order],
                             ex.boxes[c].reshape(-1, 4)[order])

    def band_count(self, layer: str, channel: int, low: float, high: float) -> int:
        """How many positions had a value in ``[low, high)``, from the histogram (exact at bin edges)."""
        ls = self[layer]
        c = ls.check_channel(channel)
        lower, upper = self.bins.bin_bounds()
        inside = torch.from_numpy((lower >= low) & (upper <= high))
        return int(ls.hist[c][inside].sum())

    def top_classes(self, layer: str, channel: int, n: int | None = None) -> list[dict]:
        """The classes that fire a channel most (a labelled source): ranked by the mean over each class's images of
        the channel's maximum in the image, each ``{"class", "images", "mean_max", "mean", "max", "top"}`` (``top``:
        how many of the channel's top-k examples come from that class).

        Raises:
            CnnscopeError: the statistics have no classes (an unlabelled source, or ``by_class=False``).
        """
        ls = self[layer]
        c = ls.check_channel(channel)
        if ls.by_class is None:
            raise CnnscopeError(f"these statistics of {layer!r} have no classes: collect them from a labelled source "
                                "(classes:FOLDER, a manifest with labels, shards with .cls members, hf:PATH)")
        counts: dict[str, int] = {}
        for ex in self.examples(layer, c):
            if ex.label is not None:
                counts[ex.label] = counts.get(ex.label, 0) + 1
        return [{**row, "top": counts.get(row["class"], 0)} for row in ls.by_class.ranked(c, n)]

    def examples_by_class(self, layer: str, channel: int, which: str = "top") -> dict[str | None, list[Example]]:
        """A channel's ``top`` or ``bottom`` examples grouped by class (``None``: unlabelled), each group best
        first, groups in the order of their best example."""
        groups: dict[str | None, list[Example]] = {}
        for ex in self.examples(layer, channel, which):
            groups.setdefault(ex.label, []).append(ex)
        return groups

    # -- merging ---------------------------------------------------------------------------------------
    def merge(self, other: DatasetStats) -> DatasetStats:
        """Combine two passes over disjoint images into exactly the result of one pass over both."""
        settings = ("model", "input_size", "resize_mode", "k", "bottom_k", "band_samples", "seed", "bins")
        for name in settings:
            if getattr(self, name) != getattr(other, name):
                raise CnnscopeError(f"cannot merge statistics with different {name}: {getattr(self, name)!r} vs "
                                    f"{getattr(other, name)!r}")
        if self.fingerprint is not None and other.fingerprint is not None and self.fingerprint != other.fingerprint:
            raise CnnscopeError(f"cannot merge statistics of two models with the same name {self.model!r} (weights "
                                f"fingerprints {self.fingerprint[:12]} and {other.fingerprint[:12]})")
        mine, theirs = identity_of(self.source), identity_of(other.source)
        if mine is not None and theirs is not None and mine != theirs:
            raise CnnscopeError(f"cannot merge statistics of two image sets (identities {mine[:19]} and "
                                f"{theirs[:19]}); merge passes over parts of one source")
        if list(self.layers) != list(other.layers):
            raise CnnscopeError(f"cannot merge statistics of different layers: {list(self.layers)} vs "
                                f"{list(other.layers)}")
        for a0, a1 in self.id_ranges:
            for b0, b1 in other.id_ranges:
                if a0 < b1 and b0 < a1:
                    raise CnnscopeError(f"cannot merge statistics that both contain image ids {max(a0, b0)}.."
                                        f"{min(a1, b1) - 1}; merge passes over disjoint images")
        layers = {name: _merge_layer(ls, other.layers[name]) for name, ls in self.layers.items()}
        used = used_ids(layers.values())
        names = {i: n for i, n in {**self.names, **other.names}.items() if i in used}
        source = {"kind": "merged", "parts": [self.source, other.source]}
        if mine is not None and mine == theirs:
            source["identity"] = mine
        return replace(self, source=source, labels={i: lab for i, lab in {**self.labels, **other.labels}.items()
                                                    if i in used},
                       images=self.images + other.images, id_ranges=merge_ranges(self.id_ranges + other.id_ranges),
                       names=names, skipped=(self.skipped + other.skipped)[:MAX_SKIPPED],
                       n_skipped=self.n_skipped + other.n_skipped, layers=layers,
                       fingerprint=self.fingerprint if self.fingerprint == other.fingerprint else None)

    # -- files -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` file (arrays + JSON metadata; atomically: a temporary file renamed into
        place); :meth:`load` reads it back."""
        data = self.to_bytes()
        path = Path(path)
        with atomic_path(path) as tmp:  # an interrupted save leaves no partial file
            tmp.write_bytes(data)
        return path

    def to_bytes(self) -> bytes:
        """The contents of the ``.npz`` file :meth:`save` writes (:meth:`from_bytes` reads them)."""
        from .results_io import stats_to_bytes

        return stats_to_bytes(self)

    @classmethod
    def load(cls, path: str | Path) -> DatasetStats:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CnnscopeError(f"{path}: no such statistics file")
        return cls.from_bytes(path.read_bytes(), str(path))

    @classmethod
    def from_bytes(cls, contents: bytes, name: str = "statistics", sha256: str | None = None) -> DatasetStats:
        """Read the contents of a file written by :meth:`save` (``name`` names it in errors); with ``sha256``
        (hex digest) the contents are first checked against it.

        Raises:
            CnnscopeError: a checksum that does not match (a truncated or altered file), or not a statistics file.
        """
        from .results_io import stats_from_bytes

        return stats_from_bytes(contents, name, sha256)


def used_ids(layers: Iterable[LayerStats]) -> set[int]:
    """Image ids that some example (top, bottom or band sample) of these layers refers to."""
    return {i for ls in layers for ex in (ls.top, ls.bottom, ls.bands) for i in torch.unique(ex.image_ids).tolist()
            if i >= 0}


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and coalesce ``[start, stop)`` intervals."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _merge_examples(a: Examples, b: Examples, grid: tuple[int, int], rf: ReceptiveField | None, negate_scores: bool,
                    band: bool) -> Examples:
    parts = [kept_from_examples(e, grid, band=band) for e in (a, b)]
    rows, scores, keys, payload = (torch.cat([p[i] for p in parts]) for i in range(4))
    if negate_scores:  # bottom-k ranks by -value
        scores = -scores
    shape = tuple(a.values.shape)
    kept = select(rows, scores, keys, payload, math.prod(shape[:-1]), shape[-1])
    return examples_from_kept(kept, grid, rf, shape, negate=band)


def _merge_layer(a: LayerStats, b: LayerStats) -> LayerStats:
    if a.grid != b.grid or a.channels != b.channels or a.pre_activation != b.pre_activation:
        raise CnnscopeError(f"layer {a.layer!r} has different shapes in the two statistics")
    if (a.by_class is None) != (b.by_class is None):
        raise CnnscopeError(f"layer {a.layer!r} has statistics per class in one of the two statistics only")
    rf = a.rf or b.rf
    return replace(
        a, top=_merge_examples(a.top, b.top, a.grid, rf, False, False),
        bottom=_merge_examples(a.bottom, b.bottom, a.grid, rf, True, False),
        bands=_merge_examples(a.bands, b.bands, a.grid, rf, False, True),
        hist=a.hist + b.hist, hist_output=a.hist_output + b.hist_output,
        moments=a.moments.merge(b.moments), moments_output=a.moments_output.merge(b.moments_output),
        positive=a.positive + b.positive, minimum=torch.minimum(a.minimum, b.minimum),
        maximum=torch.maximum(a.maximum, b.maximum), rf=rf,
        by_class=None if a.by_class is None or b.by_class is None else a.by_class.merge(b.by_class))
