"""Top-k projections (Zeiler & Fergus 2013, Fig. 2): the strongest activations of a channel over an image set.

For every chosen channel of a layer, the ``k`` images whose strongest activation in that channel is largest
(one activation per image, at its maximum) are found in one streaming pass; each activation is then projected
to pixels alone and returned next to the image patch under its receptive field. The projection is the true
deconvnet (``method="deconvnet"``, for chains of the modules it inverts), or a gradient with a ReLU backward rule
that works on any model with ReLUs (``"rule"``: the deconvnet rule, ``"guided"``: guided backprop), or the plain
gradient (``"gradient"``, any model); see :mod:`cnnscope.zf.rule_projector`. The default ``"auto"`` runs the
true deconvnet where it applies and max-pooling gives it switches, else guided backprop
(:mod:`cnnscope.zf.projection_choice`); :attr:`TopProjections.method` and ``reason`` say which and why.

Example:
    >>> tp = top_projections(model, images, "features.10", channels="0,5,9", k=9)
    >>> e = tp.entries[5][0]            # strongest activation of channel 5
    >>> e.image_index, e.position, e.activation, e.box
    >>> tp.projection_image(e), tp.crop(e)   # uint8 pictures of the projection and the image patch
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size, track
from ..models import ModelLike, as_model
from ..units import parse_channels
from .common import crop_box, image_set, pictures
from .deconvnet import display
from .projection_choice import choose_projector, describe


@dataclass
class TopEntry:
    """One of the strongest activations of a channel.

    Attributes:
        image_index: index into :attr:`TopProjections.names`.
        channel: feature map.
        position: ``(row, col)`` in the layer's map.
        activation: its value.
        box: the receptive field in the input image, ``(top, left, bottom, right)`` half-open.
        values: the projection restricted to ``box`` (model input space, on the model's device),
            ``[C, bottom-top, right-left]``.
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
        channels: the channels, in increasing order.
        entries: ``channel -> [TopEntry]``, strongest first.
        names: image names.
        images: the images as the model saw them, ``uint8 [N, H, W, 3]`` at its input size.
        pre_activation: whether the activation module's input was searched and projected.
        method: how the activations were projected: ``"deconvnet"``, ``"rule"``, ``"guided"`` or ``"gradient"``.
        reason: why that method (``"requested"`` when the caller named it).
    """

    layer: str
    channels: list[int]
    entries: dict[int, list[TopEntry]]
    names: list[str]
    images: np.ndarray = field(repr=False)
    pre_activation: bool = False
    method: str = "deconvnet"
    reason: str = ""

    def line(self) -> str:
        """``"projection: NAME (REASON; see docs/zf.md)"``: the one line the commands print."""
        return describe(self.method, self.reason)

    def crop(self, entry: TopEntry) -> np.ndarray:
        """The image patch under the entry's receptive field, ``uint8 [h, w, 3]``."""
        return crop_box(self.images[entry.image_index], entry.box)

    def projection_image(self, entry: TopEntry, scale: float | None = None) -> np.ndarray:
        """The entry's projection over its receptive field as a ``uint8 [h, w, 3]`` picture (mid-grey = 0)."""
        return display(entry.values, scale=scale)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "names": self.names,
                "pre_activation": self.pre_activation, "method": self.method, "reason": self.reason,
                "entries": {str(c): [e.to_dict() for e in es] for c, es in self.entries.items()}}


def top_projections(model: ModelLike, images: object, layer: str, *,
                    channels: str | int | Sequence[int] | None = None, k: int = 9, pre_activation: bool = False,
                    method: str = "auto", batch_size: int | None = None, progress: bool = False
                    ) -> TopProjections:
    """The ``k`` strongest activations of each channel over ``images``, each projected to pixels alone.

    Every image contributes at most one activation per channel, at its strongest position (``position="max"``
    of :func:`~cnnscope.zf.project`), as the paper's figures show ``k`` different images.

    Args:
        model: any image model for ``method="auto"`` or ``"gradient"`` (one that runs ReLUs for
            ``"rule"``/``"guided"``; one whose path to ``layer`` the deconvnet can invert for ``"deconvnet"``); not
            modified.
        images: the image set: anything :meth:`~cnnscope.models.LoadedModel.batch` takes, or ``name -> image``.
        layer: dotted name of a convolutional layer.
        channels: channels to analyse (``None`` = all, an int, a list or ``"0,4,8-11"``).
        k: activations per channel (the paper shows 9).
        pre_activation: search and project the input of ``layer`` (a ReLU/ReLU6 module).
        method: ``"auto"`` (the true deconvnet where the path is a chain it inverts with max-pooling, else
            guided backprop, else the plain gradient: :func:`~cnnscope.zf.projection_choice.choose_projector`),
            ``"deconvnet"`` (the true deconvnet: switches and transposed filters), ``"rule"`` (the gradient
            with the deconvnet rule ``max(g, 0)`` for every ReLU), ``"guided"`` (guided backprop of the unit) or
            ``"gradient"`` (its plain gradient, for models without ReLUs).
            The choice is made before the first forward of the image set.
        batch_size: images per forward, and projections per deconvnet backward (default by device).
        progress: show a progress bar.

    Returns:
        :class:`TopProjections`; channels whose activation never exceeds zero still get their ``k`` entries.

    Warns:
        ImageIndependentWarning: ``"deconvnet"`` or ``"rule"`` where no max-pooling runs before ``layer``.

    Raises:
        ImageError: empty or unreadable image set.
        DeconvError: ``method="deconvnet"`` and the deconvnet cannot invert the path to ``layer``.
        MethodError: unknown method.
        CnnscopeError: ``method="guided"``/``"rule"`` on a model that runs no ReLU.
    """
    m = as_model(model)
    names, items = image_set(images)
    bs = resolve_batch_size(batch_size, m.device)
    size = tuple(items[0].shape[-2:]) if isinstance(items[0], torch.Tensor) else tuple(m.input_size)
    choice = choose_projector(m, layer, method=method, input_size=size,  # type: ignore[arg-type]
                              pre_activation=pre_activation)
    net = choice.projector
    best_val = best_img = best_pos = None
    chosen: list[int] = []
    seen: list[np.ndarray] = []
    for sl in track(chunks(len(items), bs), progress, f"top-{k} {layer}", total=-(-len(items) // bs)):
        x = m.batch(items[sl])
        seen.append(pictures(m, x))
        acts = net.forward(x).activations
        if not chosen:
            chosen = parse_channels(channels, acts.shape[1])
        a = acts[:, chosen].flatten(2)  # [B, K, h*w]
        val, pos = a.max(dim=2)  # strongest position per image and channel
        img = torch.arange(sl.start, sl.stop, device=val.device).view(-1, 1).expand_as(val)
        if best_val is None:
            best_val, best_img, best_pos = val, img, pos
        else:
            best_val = torch.cat([best_val, val])
            best_img, best_pos = torch.cat([best_img, img]), torch.cat([best_pos, pos])
        kk = min(k, best_val.shape[0])
        top = best_val.topk(kk, dim=0).indices  # [kk, K]
        best_val, best_img, best_pos = (t.gather(0, top) for t in (best_val, best_img, best_pos))
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
    for sl in track(chunks(len(order), bs), progress, f"project {layer}", total=-(-len(order) // bs)):
        ids = order[sl]
        trace = net.forward(m.batch([items[i] for i in ids]))
        jobs = [(row, *job) for row, i in enumerate(ids) for job in wanted[i]]
        for js in chunks(len(jobs), bs):
            part = jobs[js]
            dev = trace.activations.device
            rows = torch.tensor([j[0] for j in part], device=dev)
            chans = torch.tensor([j[2] for j in part], device=dev)
            poss = torch.tensor([j[3] for j in part], device=dev)
            proj = net.backward(trace, rows, chans, poss)
            for n, (row, rank, ch, pos, val) in enumerate(part):
                box = net.receptive_field(pos)
                entries[ch][rank] = TopEntry(ids[row], ch, pos, val, box, crop_box(proj[n], box).clone())
    return TopProjections(layer, chosen, {c: [e for e in es if e is not None] for c, es in entries.items()},
                          names, np.concatenate(seen), bool(pre_activation), choice.method, choice.reason)
