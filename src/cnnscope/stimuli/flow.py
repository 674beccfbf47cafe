"""Flow between the orientation families of two layers (Cammarata et al., *Curve Detectors*, Distill 2020).

The article follows the curve family from one layer to the next: each curve unit of the later layer is built
mostly from earlier curve units of similar orientation. :func:`family_flow` gives that graph as an edge matrix
``[source members, target members]``:

* without images, the **weights**: the sum of the (expanded) kernel from each source channel to each target unit,
  what a uniform activation of the source channel adds to the target's pre-activation;
* with images, the **attribution**: the expanded kernel times the source layer's activations over the kernel's
  window, summed over the images (the article's activation x weight, summed over a dataset).

Between adjacent layers the expanded kernel is the folded convolution weight itself (exact); further apart it is
:func:`cnnscope.dataset.circuits.expanded_weights`, the weights through the network with its activations made
linear. ``cnnscope flow`` draws the graph (nodes in two rows ordered by preferred orientation, edges by strength
and sign) and writes the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..batching import chunks, resolve_batch_size
from ..capture import Capture, capture, evaluating
from ..errors import CnnscopeError, ImageError
from ..models import ModelLike, as_model
from ..units import parse_channels
from .families import Family

FamilyLike = Family | tuple[str, str | int | Sequence[int]]


@dataclass
class FamilyFlow:
    """The edges from each member of a source family to each member of a target family (CPU tensors).

    Attributes:
        source_layer, target_layer: the layers.
        source_channels, target_channels: the members, in the families' order (by preferred orientation).
        source_orientations, target_orientations: the members' preferred orientations (``None`` for plain channel
            lists).
        edges: ``float64 [S, T]``: weight sums, or attribution summed over the images.
        mode: ``"weights"`` or ``"attribution"``; images: how many images were summed over (0 for weights).
        position: the target units' position in their grid.
    """

    source_layer: str
    target_layer: str
    source_channels: list[int]
    target_channels: list[int]
    source_orientations: list[float] | None
    target_orientations: list[float] | None
    edges: torch.Tensor
    mode: str
    images: int
    position: tuple[int, int]

    def strongest(self, n: int = 10) -> list[tuple[int, int, float]]:
        """The ``n`` largest ``|edge|`` as ``(source channel, target channel, edge)``."""
        flat = torch.argsort(-self.edges.abs().flatten(), stable=True)[:n].tolist()
        t = len(self.target_channels)
        return [(self.source_channels[i // t], self.target_channels[i % t], float(self.edges.flatten()[i]))
                for i in flat]

    def to_dict(self) -> dict:
        return {"source_layer": self.source_layer, "target_layer": self.target_layer,
                "source_channels": self.source_channels, "target_channels": self.target_channels,
                "source_orientations": self.source_orientations, "target_orientations": self.target_orientations,
                "mode": self.mode, "images": self.images, "position": list(self.position),
                "edges": self.edges.tolist(),
                "strongest": [{"source": s, "target": t, "edge": e} for s, t, e in self.strongest()]}


def _members(m, family: FamilyLike) -> tuple[str, list[int], list[float] | None]:
    if isinstance(family, Family):
        if not len(family):
            raise CnnscopeError(f"the family of {family.layer!r} has no members")
        return family.layer, family.channels, family.stats.preferred.tolist()
    if not (isinstance(family, tuple) and len(family) == 2 and isinstance(family[0], str)):
        raise CnnscopeError(f"a family is a Family (discover_family) or (layer, channels), got {family!r}")
    layer, channels = family
    probe = torch.zeros(1, len(m.mean), *m.input_size, device=m.device, dtype=m.dtype)
    with evaluating(m.module), torch.no_grad():
        width = capture(m.module, probe, layer)[layer].shape[1]
    return layer, parse_channels(channels, width), None


def family_flow(model: ModelLike, source: FamilyLike, target: FamilyLike, *, images: object = None,
                position: tuple[int, int] | str = "center", input_size: int | tuple[int, int] | None = None,
                batch_size: int | None = None) -> FamilyFlow:
    """The edge matrix from each member of ``source`` to each member of ``target`` (a later layer).

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; not modified.
        source, target: a :class:`~cnnscope.stimuli.families.Family` (from :func:`discover_family`) or
            ``(layer, channels)``. The target units are read before their activation (circuits are linear).
        images: ``None`` for weight sums; else images (anything :meth:`~cnnscope.models.LoadedModel.batch` takes,
            all of the grid size the weights are expanded at) over which activation x weight is summed.
        position: the target units' position, ``"center"`` or ``(row, col)``.
        input_size: the input size the grids refer to (default: the model's).
        batch_size: images per forward pass (``None``: a default for the model's device).

    Raises:
        CnnscopeError: an empty family, ``target`` not after ``source``. ImageError: images of another size.
    """
    from ..dataset.circuits import expanded_weights

    m = as_model(model)
    s_layer, s_channels, s_orient = _members(m, source)
    t_layer, t_channels, t_orient = _members(m, target)
    kernels = []
    pos: tuple[int, int] = (0, 0)
    for t in t_channels:
        ew = expanded_weights(m, t_layer, channel=t, from_layer=s_layer, position=position, input_size=input_size)
        kernels.append(ew.weights[s_channels].double())  # [S, h, w]
        pos = ew.position
    kernel = torch.stack(kernels, dim=1)  # [S, T, h, w]
    if images is None:
        edges, n, mode = kernel.sum(dim=(2, 3)), 0, "weights"
    else:
        (edges, n), mode = _attribution(m, images, s_layer, s_channels, kernel, batch_size), "attribution"
    return FamilyFlow(source_layer=s_layer, target_layer=t_layer, source_channels=s_channels,
                      target_channels=t_channels, source_orientations=s_orient, target_orientations=t_orient,
                      edges=edges, mode=mode, images=n, position=(int(pos[0]), int(pos[1])))


def _attribution(m, images: object, layer: str, channels: list[int], kernel: torch.Tensor,
                 batch_size: int | None) -> tuple[torch.Tensor, int]:
    """``(sum over images of sum_{y, x} kernel[s, t] * act[s], number of images)``."""
    x = m.batch(images)
    bs = resolve_batch_size(batch_size, m.device, cpu=16, gpu=128)
    total = torch.zeros(kernel.shape[:2], dtype=torch.float64)
    index = torch.tensor(channels, device=m.device)
    with evaluating(m.module), torch.no_grad(), Capture(m.module, layer) as cap:
        for k, part in enumerate(chunks(len(x), bs)):
            if k == 0 and len(x) > 1:
                cap.run(x[:1])  # the first run of a Capture is a full forward: spend it on one image only
            cap.run(x[part])
            act = cap[layer].index_select(1, index).double().cpu()  # [B, S, h, w]
            if act.shape[2:] != kernel.shape[2:]:
                raise ImageError(f"images give a {tuple(act.shape[2:])} grid at {layer!r} but the weights were "
                                 f"expanded on {tuple(kernel.shape[2:])}; pass input_size= of the images")
            total += torch.einsum("bshw,sthw->st", act, kernel)
    return total, int(len(x))
