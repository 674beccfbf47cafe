"""Top-k projections (Zeiler & Fergus 2013, Fig. 2): the strongest activations of a channel over an image set.

For every chosen channel of a layer, the ``k`` images whose strongest activation in that channel is largest
(one activation per image, at its maximum) are found in one streaming pass; each activation is then projected
to pixels alone with the true deconvnet and returned next to the image patch under its receptive field.

Example:
    >>> tp = top_projections(model, images, "features.10", channels=[0, 5, 9], k=9)
    >>> e = tp.entries[5][0]            # strongest activation of channel 5
    >>> e.image_index, e.position, e.activation, e.box
    >>> tp.projection_image(e), tp.crop(e)   # uint8 pictures of the projection and the image patch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import LayerError
from ..images import ImageLike
from .common import chunks, crop_box, image_set, model_space, pixels, progress_bar
from .deconvnet import DeconvNet, display


@dataclass
class TopEntry:
    """One of the strongest activations of a channel.

    Attributes:
        image_index: index into :attr:`TopProjections.names`.
        channel: feature map.
        position: ``(row, col)`` in the layer's map.
        activation: its value.
        box: the receptive field in the input image, ``(top, left, bottom, right)`` half-open.
        values: the projection restricted to ``box`` (model input space), ``[C, bottom-top, right-left]``.
    """

    image_index: int
    channel: int
    position: tuple[int, int]
    activation: float
    box: tuple[int, int, int, int]
    values: torch.Tensor

    def to_dict(self) -> dict:
        return {"image_index": self.image_index, "channel": self.channel, "position": list(self.position),
                "activation": self.activation, "box": list(self.box)}


@dataclass
class TopProjections:
    """The result of :func:`top_projections`.

    Attributes:
        layer: the layer.
        channels: the channels, in the order asked.
        entries: ``channel -> [TopEntry]``, strongest first.
        names: image names.
        images: the images as the model saw them (``uint8 [H, W, 3]`` at its input size).
    """

    layer: str
    channels: list[int]
    entries: dict[int, list[TopEntry]]
    names: list[str]
    images: list[np.ndarray] = field(repr=False)

    def crop(self, entry: TopEntry) -> np.ndarray:
        """The image patch under the entry's receptive field, ``uint8``."""
        return crop_box(self.images[entry.image_index], entry.box)

    def projection_image(self, entry: TopEntry, scale: float | None = None) -> np.ndarray:
        """The entry's projection over its receptive field as an ``uint8`` picture (mid-grey = 0)."""
        return display(entry.values, scale)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "names": self.names,
                "entries": {str(c): [e.to_dict() for e in es] for c, es in self.entries.items()}}


def _channels(channels: Sequence[int] | int | None, n: int, layer: str) -> list[int]:
    if channels is None:
        return list(range(n))
    chosen = [int(channels)] if isinstance(channels, int) else [int(c) for c in channels]
    if not chosen:
        raise LayerError("no channels given")
    bad = [c for c in chosen if not 0 <= c < n]
    if bad:
        raise LayerError(f"channels {bad} are out of range: layer {layer!r} has {n} channels (0..{n - 1})")
    return list(dict.fromkeys(chosen))


def top_projections(model, images: Sequence[ImageLike] | Mapping[str, ImageLike], layer: str,
                    channels: Sequence[int] | int | None = None, k: int = 9, batch_size: int = 16,
                    progress: bool = False) -> TopProjections:
    """The ``k`` strongest activations of each channel over ``images``, each projected to pixels alone.

    Args:
        model: a :class:`~cnnscope.models.LoadedModel` whose path to ``layer`` the deconvnet can invert.
        images: the image set (paths, arrays, PIL images, or ``name -> image``).
        layer: dotted name of a convolutional layer.
        channels: channels to analyse (default: all of them).
        k: activations per channel (the paper shows 9).
        batch_size: images per forward and projections per backward (the memory bound).
        progress: show a progress bar.

    Returns:
        :class:`TopProjections`; channels whose activation never exceeds zero still get their ``k`` entries.

    Raises:
        ImageError: empty or unreadable image set.
        DeconvError: the deconvnet cannot invert the path to ``layer``.
    """
    names, arrays = image_set(images)
    fitted = [model.fit_image(a) for a in arrays]
    net = DeconvNet(model.module, layer, model.input_size, len(model.mean))
    dev = model.device
    best_val = best_img = best_pos = None
    chosen: list[int] = []
    bar = progress_bar(len(fitted), progress, f"top-{k} {layer}")
    for sl in chunks(len(fitted), batch_size):
        acts = net.forward(model_space(model, pixels(fitted[sl], dev))).activations
        if not chosen:
            chosen = _channels(channels, acts.shape[1], layer)
        a = acts[:, chosen].flatten(2)  # [B, K, h*w]
        val, pos = a.max(dim=2)  # strongest position per image and channel
        img = torch.arange(sl.start, sl.stop, device=dev).view(-1, 1).expand_as(val)
        if best_val is None:
            best_val, best_img, best_pos = val, img, pos
        else:
            best_val = torch.cat([best_val, val])
            best_img, best_pos = torch.cat([best_img, img]), torch.cat([best_pos, pos])
        kk = min(k, best_val.shape[0])
        top = best_val.topk(kk, dim=0).indices  # [kk, K]
        best_val, best_img, best_pos = (t.gather(0, top) for t in (best_val, best_img, best_pos))
        bar.update(sl.stop - sl.start)
    width = acts.shape[-1]
    # second pass: project the winners, grouped by image
    wanted: dict[int, list[tuple[int, int, tuple[int, int], float]]] = {}
    for j, ch in enumerate(chosen):
        for rank in range(best_val.shape[0]):
            i = int(best_img[rank, j])
            p = int(best_pos[rank, j])
            wanted.setdefault(i, []).append((rank, ch, divmod(p, width), float(best_val[rank, j])))
    entries: dict[int, list[TopEntry | None]] = {c: [None] * best_val.shape[0] for c in chosen}
    order = sorted(wanted)
    bar.total = len(fitted) + len(order)
    for sl in chunks(len(order), batch_size):
        ids = order[sl]
        trace = net.forward(model_space(model, pixels([fitted[i] for i in ids], dev)))
        jobs = [(row, *job) for row, i in enumerate(ids) for job in wanted[i]]
        for js in chunks(len(jobs), batch_size):
            part = jobs[js]
            rows = torch.tensor([j[0] for j in part], device=dev)
            chans = torch.tensor([j[2] for j in part], device=dev)
            poss = torch.tensor([j[3] for j in part], device=dev)
            proj = net.backward(trace, rows, chans, poss)
            for n, (row, rank, ch, pos, val) in enumerate(part):
                box = net.receptive_field(pos)
                entries[ch][rank] = TopEntry(ids[row], ch, pos, val, box, crop_box(proj[n], box).clone())
        bar.update(len(ids))
    bar.close()
    return TopProjections(layer, chosen, {c: [e for e in es if e is not None] for c, es in entries.items()},
                          names, fitted)
