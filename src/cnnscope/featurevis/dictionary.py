"""``semantic_dictionary``: the activation vector at each position of an image, shown as its strongest units with
their feature visualizations (Olah et al., *The Building Blocks of Interpretability*, Distill 2018; the
*Feature Visualization* article's closing section).

At every position ``(row, col)`` of ``layer``'s output on one image the channels are sorted by activation
(descending, ties by channel index); the top ``k`` are the position's entries. Each unit that appears is rendered
once (its channel objective) and the entries point at those renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..capture import Capture, evaluating
from ..errors import CnnscopeError, ImageError, LayerError
from ..models import ModelLike, as_model
from .objectives import channel
from .render import RenderResult, render


@dataclass
class SemanticDictionary:
    """What :func:`semantic_dictionary` returns.

    Attributes:
        layer: the layer read.
        image: ``uint8 [H, W, 3]``: the picture as the model saw it.
        activations: ``float32 [C, h, w]`` (CPU): the layer's activations (pooled to ``grid`` when given).
        top_units: ``int64 [h, w, k]``: channels by decreasing activation at each position.
        top_values: ``float32 [h, w, k]``: their activations.
        units: every channel that appears in ``top_units``, ascending.
        images: ``uint8 [len(units), S, S, 3]``: the feature visualization of each of ``units`` (empty when
            ``visualize=False``).
        render: the :class:`~cnnscope.featurevis.render.RenderResult` of those images (``None`` without them).
        pre_activation: whether the input of an activation module was read.
    """

    layer: str
    image: np.ndarray
    activations: torch.Tensor
    top_units: torch.Tensor
    top_values: torch.Tensor
    units: list[int]
    images: np.ndarray
    render: RenderResult | None = None
    pre_activation: bool = False
    spec: dict = field(default_factory=dict)

    def image_of(self, unit: int) -> np.ndarray:
        """The feature visualization of channel ``unit`` (one of :attr:`units`)."""
        if unit not in self.units or not len(self.images):
            raise CnnscopeError(f"channel {unit} has no visualization here (rendered: {self.units[:8]}...)")
        return self.images[self.units.index(unit)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per position its units and values, the rendered units, the render's spec."""
        h, w, _ = self.top_units.shape
        positions = [{"row": r, "col": c, "units": self.top_units[r, c].tolist(),
                      "values": [round(float(v), 6) for v in self.top_values[r, c]],
                      "norm": float(self.activations[:, r, c].norm())} for r in range(h) for c in range(w)]
        return {"layer": self.layer, "pre_activation": self.pre_activation, "grid": [h, w],
                "k": int(self.top_units.shape[-1]), "units": list(self.units), "positions": positions,
                "spec": dict(self.spec), "render": None if self.render is None else self.render.to_dict()}


def semantic_dictionary(model: ModelLike, images: object, layer: str, *, k: int = 3,
                        grid: int | Sequence[int] | None = None, pre_activation: bool = False,
                        visualize: bool = True, recipe: str | None = None, steps: int | None = None,
                        size: int | Sequence[int] | None = 64, seed: int = 0, batch_size: int | None = None,
                        progress: bool = False) -> SemanticDictionary:
    """Per position of an image, the top ``k`` units of ``layer`` and their feature visualizations.

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module``.
        images: one image: a picture (path, PIL image, ``uint8 [H, W, 3]``, brought to the model's input size) or a
            model-space tensor ``[1, C, H, W]`` (anything :meth:`~cnnscope.models.LoadedModel.batch` takes that holds
            one image).
        layer: a convolutional layer (its output is read as ``[C, H, W]``; see ``layout`` in docs/CONVENTIONS.md).
        k: units per position.
        grid: average the activations over blocks to a ``grid`` or ``(rows, cols)`` map first (fewer cells for
            deep images); ``None`` keeps the layer's own grid.
        pre_activation: read the input of an activation module (``layer`` must be one).
        visualize: render every listed unit (``False``: the numbers only).
        recipe, steps, size, seed, batch_size, progress: the renders' options (:func:`render`; default 64 px).

    Returns:
        :class:`SemanticDictionary`.

    Raises:
        ImageError: not exactly one image.
        LayerError: unknown layer, a layer without a spatial map, ``k`` larger than its channels.
    """
    m = as_model(model)
    x = m.batch(images)
    if x.shape[0] != 1:
        raise ImageError(f"semantic_dictionary reads one image, got {x.shape[0]}; call it once per image")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CnnscopeError(f"k must be a positive number of units per position, got {k!r}")
    with evaluating(m.module), torch.no_grad(), \
            Capture(m, layer, pre_activation=pre_activation, layout="nchw") as cap:
        cap.run(x)
        acts = cap.activations[cap.names[0]].float()
    if acts.ndim != 4:
        raise LayerError(f"layer {layer!r} gives {tuple(acts.shape[1:])} per image; semantic_dictionary needs a "
                         "[C, H, W] map (a convolutional layer)")
    if grid is not None:
        gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
        acts = F.adaptive_avg_pool2d(acts, (gh, gw))
    a = acts[0].cpu()
    if k > a.shape[0]:
        raise LayerError(f"k={k} but layer {layer!r} has {a.shape[0]} channels")
    values, order = torch.sort(a.permute(1, 2, 0), dim=-1, descending=True, stable=True)
    top_units, top_values = order[..., :k].contiguous(), values[..., :k].contiguous()
    units = sorted({int(u) for u in top_units.flatten().tolist()})
    res = None
    pictures = np.zeros((0, 1, 1, 3), np.uint8)
    if visualize:
        res = render(m, [channel(layer, u, pre_activation=pre_activation) for u in units], recipe=recipe,
                     steps=steps, size=size, seed=seed, batch_size=batch_size, progress=progress)
        pictures = res.images
    seen = m.deprocess(x)
    spec = {"model": m.name, "k": k, "grid": None if grid is None else list(top_units.shape[:2]),
            "visualize": visualize}
    return SemanticDictionary(layer=layer, image=seen, activations=a, top_units=top_units, top_values=top_values,
                              units=units, images=pictures, render=res, pre_activation=pre_activation, spec=spec)


__all__ = ["SemanticDictionary", "semantic_dictionary"]
