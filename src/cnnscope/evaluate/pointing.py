"""The pointing game (Zhang, Lin, Brandt, Shen & Sclaroff, *Top-down Neural Attention by Excitation
Backprop*, ECCV 2016).

A map scores a *hit* when its maximum lies within ``tolerance`` pixels (15 in the paper) of the annotated object
(a mask or a box given by the user, at the resolution of the input image); otherwise a *miss*. The accuracy of
a class is ``hits / (hits + misses)`` over its images, and the reported score is the mean over classes.
Ties of the maximum are broken by raster order (the first maximal pixel).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnscopeError
from .common import as_maps

Box = tuple[float, float, float, float]
RegionLike = torch.Tensor | np.ndarray | Box


@dataclass
class PointingResult:
    """Pointing game outcome.

    Attributes:
        hits: ``[B]`` bool, whether each map's maximum lies within the tolerance of its region.
        points: ``[B, 2]`` ``(y, x)`` of each map's maximum.
        distances: ``[B]`` distance in pixels from the maximum to the nearest region pixel (0 inside).
        labels: class label of each image.
        per_class: ``label -> accuracy``.
        tolerance: the tolerance in pixels.
    """

    hits: torch.Tensor
    points: torch.Tensor
    distances: torch.Tensor
    labels: list
    per_class: dict
    tolerance: float

    @property
    def accuracy(self) -> float:
        """Mean of the per-class accuracies (the paper's score)."""
        return float(np.mean(list(self.per_class.values())))

    @property
    def overall(self) -> float:
        """Fraction of hits over all images."""
        return float(self.hits.float().mean())


def region_mask(region: RegionLike, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A region as a bool ``[H, W]`` mask.

    A box is ``(x0, y0, x1, y1)`` in pixels, covering ``x0 <= x < x1`` and ``y0 <= y < y1`` (array-slice
    convention; for inclusive VOC boxes pass ``x1 + 1, y1 + 1``). A mask must have the image's size.
    """
    h, w = size
    if isinstance(region, (tuple, list)):
        if len(region) != 4:
            raise CnnscopeError(f"a box is (x0, y0, x1, y1), got {region!r}")
        x0, y0, x1, y1 = (float(v) for v in region)
        if not (x1 > x0 and y1 > y0):
            raise CnnscopeError(f"empty box {region!r}: need x1 > x0 and y1 > y0")
        ys = torch.arange(h, device=device).view(-1, 1)
        xs = torch.arange(w, device=device).view(1, -1)
        return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    m = torch.as_tensor(np.asarray(region) if isinstance(region, np.ndarray) else region).to(device)
    if m.ndim != 2 or tuple(m.shape) != (h, w):
        raise CnnscopeError(f"a region mask must be [H, W] = {(h, w)}, got {tuple(m.shape)}")
    return m.bool()


def distance_to_region(point: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from ``(y, x)`` to the nearest ``True`` pixel of ``mask`` (``inf`` for an empty one)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return torch.tensor(float("inf"), device=mask.device)
    d2 = (ys.float() - point[0].float()) ** 2 + (xs.float() - point[1].float()) ** 2
    return d2.min().sqrt()


def pointing_game(maps: torch.Tensor | np.ndarray, regions: Sequence[RegionLike] | torch.Tensor,
                  labels: Sequence | None = None, *, tolerance: float = 15.0,
                  size: tuple[int, int] | None = None) -> PointingResult:
    """Score saliency maps by whether their maximum points at the annotated object.

    Args:
        maps: one saliency map per image; upsampled (bilinear) to ``size``.
        regions: one mask (``[H, W]`` bool) or box ``(x0, y0, x1, y1)`` per image, in input pixels.
        labels: class of each image, for per-class accuracy (all one class when ``None``).
        tolerance: hit radius in pixels (15 in the paper).
        size: ``(H, W)`` of the image the regions refer to; default: the first mask's size (required with
            boxes only).

    Shape:
        - maps: ``[B, h, w]`` (or ``[B, 1, h, w]``); regions: ``B`` masks ``[H, W]``/boxes, or ``[B, H, W]``.
    """
    regions = list(regions)
    if size is None:
        first = next((r for r in regions if not isinstance(r, (tuple, list))), None)
        if first is None:
            raise CnnscopeError("pointing_game() with boxes only needs size=(H, W) of the input image")
        size = tuple(int(s) for s in np.shape(first)[-2:])  # type: ignore[assignment]
    device = maps.device if isinstance(maps, torch.Tensor) else torch.device("cpu")
    m = as_maps(maps, len(regions), size, device)
    labels = list(labels) if labels is not None else ["all"] * len(regions)
    if len(labels) != len(regions):
        raise CnnscopeError(f"got {len(labels)} labels for {len(regions)} images")
    flat_max = m.reshape(m.shape[0], -1).argmax(dim=1)
    points = torch.stack([flat_max // size[1], flat_max % size[1]], dim=1)
    dists = torch.stack([distance_to_region(points[i], region_mask(r, size, device))
                         for i, r in enumerate(regions)])
    hits = dists <= float(tolerance)
    per_class: dict = {}
    for lab in dict.fromkeys(labels):
        sel = torch.tensor([lb == lab for lb in labels], device=device)
        per_class[lab] = float(hits[sel].float().mean())
    return PointingResult(hits=hits, points=points, distances=dists, labels=labels, per_class=per_class,
                          tolerance=float(tolerance))


def load_regions(path: str | Path, image_sizes: Mapping[str, tuple[int, int]], size: tuple[int, int]
                 ) -> tuple[list[Box], list]:
    """Boxes and labels of named images from a JSON file, scaled from each image's pixels to ``size``.

    The file maps image names to ``[x0, y0, x1, y1]`` or to ``{"box": [x0, y0, x1, y1], "label": ...}`` in the
    original image's pixels (images without a label get ``"all"``).

    Args:
        path: the JSON file.
        image_sizes: ``name -> (H, W)`` of each original image, in the order of the batch.
        size: ``(H, W)`` of the model input the images were resized to.

    Raises:
        CnnscopeError: unreadable file, or an image without a box.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CnnscopeError(f"cannot read regions file {path}: {exc}") from None
    boxes: list[Box] = []
    labels: list = []
    for name, (h, w) in image_sizes.items():
        if name not in data:
            raise CnnscopeError(f"regions file {path} has no box for image {name!r}")
        entry = data[name]
        box = entry["box"] if isinstance(entry, dict) else entry
        sy, sx = size[0] / h, size[1] / w
        x0, y0, x1, y1 = (float(v) for v in box)
        boxes.append((x0 * sx, y0 * sy, x1 * sx, y1 * sy))
        labels.append(entry.get("label", "all") if isinstance(entry, dict) else "all")
    return boxes, labels
