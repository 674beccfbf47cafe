"""Spatial attribution of a unit on one image (Cammarata et al., *Curve Detectors*, Distill 2020, Figs. 8 and 10).

For a unit at one position, :func:`cnnscope.dataset.circuits.attribution` gives the tensor ``W ⊙ h_prev`` over
the unit's kernel window: one ``kh x kw`` map per previous-layer channel, all of them summing exactly to the
unit's pre-activation minus its bias. :func:`spatial_attribution` keeps the maps of the ``k`` strongest input
channels and renders each of those channels with :func:`cnnscope.featurevis.render`; :meth:`SpatialAttribution.mosaic`
draws, for every input channel, its ``kh x kw`` grid of tiles, each tile the channel's visualization blended over
white with opacity ``|attribution| / max |attribution|`` (one scale for the whole picture), as the article does.
``cnnscope circuit --spatial`` writes the figure and the numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CnnscopeError, LayerError
from ..models import ModelLike, as_model
from .circuits import Attribution, attribution, feeding_layer, feeding_layers

#: tile background where the attribution is zero
WHITE = 255


@dataclass
class SpatialAttribution:
    """The per-position attribution of a unit's strongest inputs, with their visualizations.

    Attributes:
        attribution: the full :class:`~cnnscope.dataset.circuits.Attribution` (all input channels).
        channels: the ``k`` input channels kept (indices of the convolution's input), strongest ``|sum|`` first.
        maps: ``float32 [k, kh, kw]`` (CPU): weight x activation at each position of the kernel window.
        from_layer: the layer whose channels were rendered (``None`` when not rendered).
        renders: ``uint8 [k, S, S, 3]``, each input channel's feature visualization, or ``None``.
    """

    attribution: Attribution
    channels: list[int]
    maps: torch.Tensor
    from_layer: str | None = None
    renders: np.ndarray | None = None

    @property
    def total(self) -> torch.Tensor:
        """``[kh, kw]``: the attribution of every input channel at each window position (sums to value - bias)."""
        return self.attribution.tensor.sum(dim=0).cpu()

    def alpha(self) -> torch.Tensor:
        """``[k, kh, kw]`` opacities in [0, 1]: ``|maps|`` over its maximum (all zero for an all-zero map)."""
        top = float(self.maps.abs().max()) if self.maps.numel() else 0.0
        return self.maps.abs() / top if top > 0 else torch.zeros_like(self.maps)

    def mosaic(self, tile: int = 24, gap: int = 6) -> np.ndarray:
        """One picture: per input channel (left to right), a ``kh x kw`` grid of ``tile``-pixel tiles, each the
        channel's visualization (flat grey without renders) over white with opacity :meth:`alpha`.

        Shape:
            - Output: ``uint8 [kh * tile, k * kw * tile + (k - 1) * gap, 3]``.
        """
        k, kh, kw = self.maps.shape
        alpha = self.alpha().numpy()
        out = np.full((kh * tile, max(0, k * kw * tile + (k - 1) * gap), 3), WHITE, np.float64)
        for i in range(k):
            pic = np.full((tile, tile, 3), 128.0) if self.renders is None else _resize(self.renders[i], tile)
            left = i * (kw * tile + gap)
            for r in range(kh):
                for c in range(kw):
                    a = alpha[i, r, c]
                    out[r * tile:(r + 1) * tile, left + c * tile:left + (c + 1) * tile] = a * pic + (1 - a) * WHITE
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    def to_dict(self) -> dict:
        attr = self.attribution
        return {"layer": attr.connection.layer, "channel": attr.connection.channel, "conv": attr.connection.conv,
                "from_layer": self.from_layer, "position": list(attr.position), "value": attr.value,
                "bias": attr.connection.bias, "sum": float(attr.tensor.sum()), "total": self.total.tolist(),
                "inputs": [{"input_channel": c, "contribution": float(m.sum()), "map": m.tolist()}
                           for c, m in zip(self.channels, self.maps)]}


def _resize(picture: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(picture).resize((side, side), Image.BILINEAR), np.float64)


def spatial_attribution(model: ModelLike, images: object, layer: str, *, channel: int,
                        position: tuple[int, int] | str = "max", k: int = 6, visualize: bool = True,
                        from_layer: str | None = None, steps: int = 64, size: int = 64, seed: int = 0,
                        progress: bool = False) -> SpatialAttribution:
    """The per-position activation x weight maps of a unit's ``k`` strongest inputs on one image, with each input
    channel's feature visualization.

    Like :func:`~cnnscope.dataset.circuits.attribution` it reads the unit's pre-activation (no
    ``pre_activation`` choice).

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; not modified.
        images: exactly one image (see :func:`~cnnscope.dataset.circuits.attribution`).
        layer, channel: the unit (a ``Conv2d``, a batch norm after one, or the activation after those).
        position: ``"max"``, ``"center"`` or ``(row, col)`` in the unit's layer.
        k: input channels kept, by ``|sum of their map|``.
        visualize: render the kept channels (``channel`` objectives on ``from_layer``).
        from_layer: the layer whose output is the convolution's input (default: found by
            :func:`~cnnscope.dataset.circuits.feeding_layer`).
        steps, size, seed, progress: of :func:`cnnscope.featurevis.render` (small by default: tiles are small).

    Raises:
        CnnscopeError: ``k < 1``. LayerError/ImageError: as :func:`~cnnscope.dataset.circuits.attribution`.
    """
    m = as_model(model)
    if k < 1:
        raise CnnscopeError(f"k must be >= 1 input channels, got {k}")
    attr = attribution(m, images, layer, channel=channel, position=position)
    sums = attr.contributions.cpu()
    order = torch.argsort(-sums.abs(), stable=True)[:k]
    channels = [int(attr.connection.inputs[i]) for i in order.tolist()]
    maps = attr.tensor.cpu()[order].float()
    renders = None
    if visualize:
        from ..featurevis import channel as channel_objective
        from ..featurevis import render

        conv = attr.connection.conv
        if from_layer is not None and from_layer not in feeding_layers(m, conv):
            raise LayerError(f"{from_layer!r} does not output the input of {conv!r}; the attributed channels are "
                             f"{conv!r}'s input channels (try {feeding_layer(m, conv)!r})")
        if from_layer is None:
            try:
                from_layer = feeding_layer(m, conv)
            except LayerError:
                warnings.warn(f"no named layer outputs the input of {conv!r} (the model input?): "
                              "tiles are flat grey", stacklevel=2)
        if from_layer is not None:
            res = render(m, [channel_objective(from_layer, c) for c in channels], steps=steps, size=size,
                         seed=seed, progress=progress)
            renders = res.images
    return SpatialAttribution(attribution=attr, channels=channels, maps=maps,
                              from_layer=from_layer if renders is not None else None, renders=renders)
