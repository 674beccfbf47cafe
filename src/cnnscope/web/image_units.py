"""The explain page's unit listing: the units of one atlas layer that fire most on an uploaded picture.

A unit's value on the picture is the maximum over positions of its activation (its pre-activation when the atlas
was built with ``pre_activation``), the quantity the atlas's dataset examples rank images by, read with
:class:`~cnnscope.capture.Capture` (any layout handed out as ``[B, C, H, W]``) on the picture brought to the model's
input as the dataset pass brings its images (``LoadedModel.batch``: fitted once). Units the atlas holds are linked
to their pages with their thumbnails; the others are listed as not built.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..atlas.store import AtlasStore
from ..capture import Capture, evaluating
from ..errors import LayerError
from ..models import ModelLike, as_model
from . import views
from .explain_panel import check_cancelled

#: units listed per picture
TOP_UNITS = 12


def value_name(pre_activation: bool) -> str:
    """What the listed values are, in words (shown on the page)."""
    what = "pre-activation" if pre_activation else "activation"
    return f"maximum over positions of the unit's {what}"


def unit_values(model: ModelLike, images: object, layer: str, *, pre_activation: bool = False) -> torch.Tensor:
    """Each channel's maximum over positions of ``layer`` on ``images`` (anything ``LoadedModel.batch`` takes), on
    the CPU.

    Shape:
        - Output: ``[B, C]`` (a layer without positions, ``[B, C]``, gives its values as they are).

    Raises:
        LayerError: an unknown layer, ``pre_activation`` on a layer that is not an activation module, or a layer
            without channels.
    """
    m = as_model(model)
    x = m.batch(images)
    with torch.no_grad(), evaluating(m.module), Capture(m.module, layer, pre_activation=pre_activation) as cap:
        cap.run(x)
    v = cap[layer]
    if v.ndim not in (2, 4):
        raise LayerError(f"layer {layer!r} gives {tuple(v.shape)}, which has no channels to list; choose another "
                         "layer")
    return (v.flatten(2).amax(dim=2) if v.ndim == 4 else v).float().cpu()


def top_units(store: AtlasStore, layer: str, values: torch.Tensor, k: int = TOP_UNITS) -> list[dict]:
    """The ``k`` units with the largest ``values`` (ties: lower unit first), each ``{"unit", "value", "built",
    "url", "thumbnail"}``: ``url`` (its unit page) and ``thumbnail`` (the layer page's picture of it) only when the
    atlas holds the unit."""
    order = torch.sort(values, descending=True, stable=True).indices[:k].tolist()
    built = [u for u in order if store.has_unit(layer, u)]
    source = views.thumbnail_source(store, layer) if built else None
    thumbs = store.thumbnails(layer, source[0], source[1], built) if source else {}
    return [{"unit": u, "value": float(values[u]), "built": u in built,
             "url": views.unit_url(layer, u) if u in built else None,
             "thumbnail": views.artifact_url(thumbs[u]) if u in thumbs else None} for u in order]


def image_units(model: ModelLike, images: np.ndarray, layer: str, *, store: AtlasStore, pre_activation: bool = False,
                k: int = TOP_UNITS, cancelled: threading.Event | None = None) -> dict:
    """The listing of the explain page for one picture (``uint8 [H, W, 3]``, as uploaded): ``{"layer", "layer_url",
    "value" (what the values are), "units"}`` (see :func:`top_units`); one forward pass.

    Raises:
        Cancelled: ``cancelled`` was set (checked before and after the forward pass).
        LayerError: see :func:`unit_values`.
    """
    check_cancelled(cancelled)
    values = unit_values(model, images, layer, pre_activation=pre_activation)[0]
    check_cancelled(cancelled)
    return {"layer": layer, "layer_url": views.layer_url(layer), "value": value_name(pre_activation),
            "units": top_units(store, layer, values, k)}
