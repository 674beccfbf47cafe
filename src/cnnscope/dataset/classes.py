"""Statistics per class of a labelled image source (class folders, manifests with labels, shards with ``.cls``
members, Hugging Face datasets with a label column): which classes fire a unit, and histograms grouped by class.

Per class and channel a pass keeps the number of images, the sum of each image's maximum and mean of the channel,
the largest value and, on request, the histogram of the values over the pass's bins. Like every dataset statistic
they are a monoid (sums and maxima), so passes over disjoint images merge exactly, and the class histograms add up
to the layer's histogram over the labelled images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CnnscopeError, unknown
from .histograms import LogBins

#: the largest class histogram (``classes x channels x bins`` counts, bytes) a pass keeps per layer
MAX_CLASS_HISTOGRAM_BYTES = 1 << 30


@dataclass
class ClassStats:
    """One layer's statistics per class (CPU tensors; ``K`` classes, ``C`` channels).

    Attributes:
        classes: the class names (``K``).
        images: ``int64 [K]`` images of each class in the pass (unlabelled images are in no class).
        max_sum, mean_sum: ``float64 [K, C]`` sums over a class's images of each image's maximum / mean value.
        maximum: ``float32 [K, C]`` the largest value in a class's images (``-inf`` for a class without images).
        hist: ``int64 [K, C, n_bins]`` counts of the values per class, or ``None`` (not requested).
    """

    classes: list[str]
    images: torch.Tensor
    max_sum: torch.Tensor
    mean_sum: torch.Tensor
    maximum: torch.Tensor
    hist: torch.Tensor | None = None

    @property
    def mean_max(self) -> torch.Tensor:
        """``float64 [K, C]``: the mean over a class's images of each image's maximum (``NaN`` without images)."""
        return self.max_sum / self.images[:, None].double()

    def index(self, name: str) -> int:
        if name not in self.classes:
            raise CnnscopeError(unknown("class", name, self.classes))
        return self.classes.index(name)

    def ranked(self, channel: int, n: int | None = None) -> list[dict]:
        """The classes that fire ``channel`` most: ranked by the mean of their images' maxima (classes with
        images only), each ``{"class", "images", "mean_max", "mean", "max"}``."""
        count = self.images
        seen = torch.nonzero(count > 0).squeeze(1)
        score = self.mean_max[seen, channel]
        order = seen[torch.argsort(-score, stable=True)][:n]
        return [{"class": self.classes[k], "images": int(count[k]), "mean_max": float(self.mean_max[k, channel]),
                 "mean": float(self.mean_sum[k, channel] / count[k]), "max": float(self.maximum[k, channel])}
                for k in order.tolist()]

    def merge(self, other: ClassStats) -> ClassStats:
        if self.classes != other.classes:
            raise CnnscopeError("cannot merge statistics of sources with different classes")
        if (self.hist is None) != (other.hist is None):
            raise CnnscopeError("cannot merge statistics with class histograms and without")
        return ClassStats(self.classes, self.images + other.images, self.max_sum + other.max_sum,
                          self.mean_sum + other.mean_sum, torch.maximum(self.maximum, other.maximum),
                          None if self.hist is None else self.hist + other.hist)


class ClassAccumulator:
    """Running :class:`ClassStats` of one layer, on the activations' device.

    Raises:
        CnnscopeError: class histograms of this size would exceed :data:`MAX_CLASS_HISTOGRAM_BYTES`.
    """

    def __init__(self, layer: str, classes: list[str], channels: int, bins: LogBins | None, device: torch.device
                 ) -> None:
        k = len(classes)
        self.classes, self.channels, self.bins = classes, channels, bins
        self.images = torch.zeros(k, dtype=torch.int64, device=device)
        self.max_sum = torch.zeros(k, channels, dtype=torch.float64, device=device)
        self.mean_sum = torch.zeros(k, channels, dtype=torch.float64, device=device)
        self.maximum = torch.full((k, channels), float("-inf"), dtype=torch.float32, device=device)
        self.hist = None
        if bins is not None:
            size = k * channels * bins.n_bins * 8
            if size > MAX_CLASS_HISTOGRAM_BYTES:
                raise CnnscopeError(f"class histograms of {layer!r} would take {size / 2 ** 30:.1f} GiB ({k} classes x "
                                    f"{channels} channels x {bins.n_bins} bins); leave them off or study fewer classes")
            self.hist = torch.zeros(k * channels * bins.n_bins, dtype=torch.int64, device=device)

    def update(self, labels: torch.Tensor, values: torch.Tensor) -> None:
        """Add a batch: ``labels`` ``[B]`` class indices (``-1``: none) and ``values`` ``[B, C, h, w]``."""
        keep = torch.nonzero(labels.to(values.device) >= 0).squeeze(1)
        if keep.numel() == 0:
            return
        lab = labels.to(values.device)[keep]
        v = values.index_select(0, keep).float()
        per_max = v.amax(dim=(2, 3))
        self.images.index_add_(0, lab, torch.ones_like(lab))
        self.max_sum.index_add_(0, lab, per_max.double())
        self.mean_sum.index_add_(0, lab, v.mean(dim=(2, 3)).double())
        self.maximum.scatter_reduce_(0, lab[:, None].expand_as(per_max), per_max, reduce="amax")
        if self.hist is not None:
            n_bins = self.bins.n_bins  # type: ignore[union-attr]
            row = (lab[:, None] * self.channels + torch.arange(self.channels, device=v.device)[None, :]) * n_bins
            flat = self.bins.lookup(v).to(torch.int64) + row[:, :, None, None]  # type: ignore[union-attr]
            self.hist += torch.bincount(flat.reshape(-1), minlength=self.hist.numel())

    def result(self) -> ClassStats:
        hist = None if self.hist is None else self.hist.view(len(self.classes), self.channels, -1).cpu()
        return ClassStats(list(self.classes), self.images.cpu(), self.max_sum.cpu(), self.mean_sum.cpu(),
                          self.maximum.cpu(), hist)
