"""Feature evolution during training (Zeiler & Fergus 2013, Fig. 4).

For each checkpoint of a training run and each chosen channel, the strongest activation over an image set is
projected to pixels (``method="auto"``: the true deconvnet where it applies, else guided backprop; see
:mod:`cnnscope.zf.projection_choice`); laid out as channels x checkpoints it shows how lower-layer features
settle within a few epochs while upper layers keep changing.

Example:
    >>> ev = evolution(["run/epoch_001.pt", "run/epoch_005.pt"], images, "features.6", channels="0-2")
    >>> ev.entries[1][2].values    # checkpoint 1, channel 2: the projection over its receptive field
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..batching import track
from ..errors import CnnscopeError
from ..models import LoadedModel, as_model
from .common import crop_box, image_set
from .projection_choice import describe
from .projections import TopEntry, top_projections
from .rule_projector import check_method
from .train import load_checkpoint


@dataclass
class Evolution:
    """Strongest projection per checkpoint and channel.

    Attributes:
        layer: the layer.
        channels: the channels (columns of :attr:`entries`).
        epochs: the epoch of each checkpoint (fractional for step checkpoints; ``None`` when a model does not say).
        sources: where each checkpoint came from.
        entries: ``[checkpoint][channel]`` :class:`~cnnscope.zf.projections.TopEntry`.
        images: the images as the models saw them, ``uint8 [N, H, W, 3]``.
        method, reason: the projection used and why (the same architecture at every checkpoint: one choice).
    """

    layer: str
    channels: list[int]
    epochs: list[float | None]
    sources: list[str]
    entries: list[list[TopEntry]]
    images: np.ndarray = field(repr=False)
    method: str = "deconvnet"
    reason: str = ""

    def line(self) -> str:
        """``"projection: NAME (REASON; see docs/zf.md)"``: the one line the commands print."""
        return describe(self.method, self.reason)

    def crop(self, entry: TopEntry) -> np.ndarray:
        """The image patch under the entry's receptive field, ``uint8``."""
        return crop_box(self.images[entry.image_index], entry.box)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "epochs": self.epochs, "sources": self.sources,
                "method": self.method, "reason": self.reason,
                "entries": [[e.to_dict() for e in row] for row in self.entries]}


def evolution(checkpoints: Sequence[str | Path | LoadedModel | torch.nn.Module], images: object, layer: str, *,
              channels: str | int | Sequence[int] | None = None, pre_activation: bool = False, method: str = "auto",
              batch_size: int | None = None, device: str | torch.device = "cpu", progress: bool = False
              ) -> Evolution:
    """Project each channel's strongest activation at every checkpoint.

    The first argument is a list of models, not one model: the analysis compares the same architecture at
    several points of a training run, so it is the one function of :mod:`cnnscope.zf` that does not take
    ``model`` first. ``device`` is where checkpoint *files* are loaded (models given as objects stay where they
    are), as for every function that creates a model.

    Args:
        checkpoints: ``cnnscope train`` checkpoint files or models (``LoadedModel`` or ``nn.Module``), in training
            order.
        images: the image set searched for the strongest activation (e.g. the run's test images), as for
            :func:`~cnnscope.zf.top_projections`.
        layer: a layer of the models' feature stack.
        channels: the channels to follow (``None`` = all, an int, a list or ``"0,4,8-11"``).
        pre_activation: follow the input of ``layer`` (a ReLU/ReLU6 module).
        method: the projection, as for :func:`~cnnscope.zf.top_projections` (default ``"auto"``).
        batch_size: images per forward (default by device).
        device: where to load checkpoint files.
        progress: show a progress bar over the checkpoints.

    Raises:
        CnnscopeError: no checkpoints; ImageError: empty image set.
    """
    if not checkpoints:
        raise CnnscopeError("no checkpoints given; train with `cnnscope train --checkpoints 1,2,5` first")
    check_method(method)
    _, items = image_set(images)  # loaded once for every checkpoint
    rows: list[list[TopEntry]] = []
    epochs: list[float | None] = []
    sources: list[str] = []
    seen = None
    for ck in track(checkpoints, progress, "evolution"):
        is_file = isinstance(ck, (str, Path))
        m = load_checkpoint(ck, device=device) if is_file else as_model(ck)
        tp = top_projections(m, items, layer, channels=channels, k=1, pre_activation=pre_activation,
                             method=method, batch_size=batch_size)
        rows.append([tp.entries[c][0] for c in tp.channels])
        epochs.append(m.extra.get("epoch"))
        sources.append(str(ck) if is_file else m.name)
        seen = tp
    return Evolution(layer, list(seen.channels), epochs, sources, rows, seen.images,  # type: ignore[union-attr]
                     seen.method, seen.reason)  # type: ignore[union-attr]
