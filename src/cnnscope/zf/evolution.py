"""Feature evolution during training (Zeiler & Fergus 2013, Fig. 4).

For each checkpoint of a training run and each chosen channel, the strongest activation over an image set is
projected to pixels with the true deconvnet; laid out as channels x checkpoints it shows how lower-layer
features settle within a few epochs while upper layers keep changing.

Example:
    >>> ev = evolution(["run/epoch_001.pt", "run/epoch_005.pt"], images, "features.6", channels=[0, 1, 2])
    >>> ev.entries[1][2].values    # checkpoint 1, channel 2: the projection over its receptive field
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnscopeError
from ..images import ImageLike
from ..models import LoadedModel
from .common import crop_box, image_set, progress_bar
from .projections import TopEntry, top_projections
from .train import load_checkpoint


@dataclass
class Evolution:
    """Strongest projection per checkpoint and channel.

    Attributes:
        layer: the layer.
        channels: the channels (columns of :attr:`entries`).
        epochs: the epoch of each checkpoint (``None`` when a model does not say).
        sources: where each checkpoint came from.
        entries: ``[checkpoint][channel]`` :class:`~cnnscope.zf.projections.TopEntry`.
        images: the images as the models saw them.
    """

    layer: str
    channels: list[int]
    epochs: list[int | None]
    sources: list[str]
    entries: list[list[TopEntry]]
    images: list[np.ndarray] = field(repr=False)

    def crop(self, entry: TopEntry) -> np.ndarray:
        """The image patch under the entry's receptive field, ``uint8``."""
        return crop_box(self.images[entry.image_index], entry.box)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "epochs": self.epochs, "sources": self.sources,
                "entries": [[e.to_dict() for e in row] for row in self.entries]}


def evolution(checkpoints: Sequence[str | Path | LoadedModel], images: Sequence[ImageLike] | Mapping[str, ImageLike],
              layer: str, channels: Sequence[int], batch_size: int = 32, device: str | torch.device = "cpu",
              progress: bool = False) -> Evolution:
    """Project each channel's strongest activation at every checkpoint.

    Args:
        checkpoints: ``cnnscope train`` checkpoint files (or loaded models), in training order.
        images: the image set searched for the strongest activation (e.g. the run's test images).
        layer: a layer of the models' feature stack.
        channels: the channels to follow.
        batch_size: images per forward.
        device: where to load checkpoint files.
        progress: show a progress bar over the checkpoints.

    Raises:
        CnnscopeError: no checkpoints; ImageError: empty image set.
    """
    if not checkpoints:
        raise CnnscopeError("no checkpoints given; train with `cnnscope train --checkpoints 1,2,5` first")
    _, arrays = image_set(images)
    rows: list[list[TopEntry]] = []
    epochs: list[int | None] = []
    sources: list[str] = []
    fitted: list[np.ndarray] = []
    bar = progress_bar(len(checkpoints), progress, "evolution")
    for ck in checkpoints:
        model = ck if isinstance(ck, LoadedModel) else load_checkpoint(ck, device)
        tp = top_projections(model, arrays, layer, list(channels), k=1, batch_size=batch_size)
        rows.append([tp.entries[c][0] for c in tp.channels])
        epochs.append(model.extra.get("epoch"))
        sources.append(str(ck) if not isinstance(ck, LoadedModel) else model.name)
        fitted = tp.images
        bar.update(1)
    bar.close()
    return Evolution(layer, list(dict.fromkeys(int(c) for c in channels)), epochs, sources, rows, fitted)
