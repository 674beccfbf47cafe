"""``interpolate``: frames between two objectives that share part of their parameterization (Olah et al. 2017,
the article's interpolation figure), so consecutive frames line up.

Frame ``i`` of ``n`` maximises ``(1 - t_i) * a + t_i * b`` with ``t_i = i / (n - 1)``. Every frame's image is
``sigmoid(colour(irfft2(scale * (shared + own_i))))`` (:class:`SharedFourierImage`): one Fourier spectrum common to
all frames plus one per frame. The shared spectrum collects the gradient of every frame, so what the frames have in
common is drawn once, in the same place, and each frame's own spectrum adds what its mixture needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from .param import FourierImage, per_image
from .recipes import get_recipe
from .render import ObjectivesLike, RenderResult, as_objectives, measure, render
from .spectra import to_rgb

#: offset between the frames' seed and the seed of the shared spectrum
SHARED_SEED_OFFSET = 0x5A4ED


class SharedFourierImage(FourierImage):
    """:class:`~cnnscope.featurevis.param.FourierImage` frames plus one spectrum that all frames share.

    Image ``i`` is ``sigmoid(colour(irfft2(scale * (shared + spectrum_i))))``; ``shared`` is drawn from
    ``seeds[0] + SHARED_SEED_OFFSET``. Not in :data:`~cnnscope.featurevis.PARAMS`: its images depend on the rest of
    the batch by design (``interpolate`` renders all frames in one batch).
    """

    name = "shared_fourier"

    def __init__(self, seeds: Sequence[int], size: int | Sequence[int], device: torch.device | str = "cpu",
                 sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True) -> None:
        super().__init__(seeds, size, device, sd=sd, decay_power=decay_power, decorrelate=decorrelate)
        h, w = self.size
        shape = (3, h, w // 2 + 1, 2)
        self.shared = nn.Parameter(per_image([self.seeds[0] + SHARED_SEED_OFFSET], shape, self.device) * self.sd)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.spectrum + self.shared).contiguous()) * self.scale
        x = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        return torch.sigmoid(to_rgb(x) if self.decorrelate else x)

    def set_image_(self, x: torch.Tensor) -> None:
        super().set_image_(x)
        with torch.no_grad():
            self.spectrum.sub_(self.shared)


@dataclass
class Interpolation:
    """What :func:`interpolate` returns.

    Attributes:
        images: ``uint8 [frames, H, W, 3]``, frame 0 = objective ``a``, the last = ``b``.
        t: ``float [frames]`` mixing weights (``b``'s share of each frame's objective).
        values_a, values_b: ``float32 [frames]`` (CPU): ``a`` and ``b`` measured on each frame's final image.
        render: the underlying :class:`~cnnscope.featurevis.render.RenderResult` (trace, spec, timing).
        labels: ``repr`` of ``a`` and ``b``.
    """

    images: np.ndarray
    t: list[float]
    values_a: torch.Tensor
    values_b: torch.Tensor
    render: RenderResult
    labels: tuple[str, str]

    def __len__(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the pixels)."""
        return {"a": self.labels[0], "b": self.labels[1], "t": list(self.t),
                "values_a": self.values_a.tolist(), "values_b": self.values_b.tolist(),
                "spec": self.render.spec, "timing": dict(self.render.timing)}


def interpolate(model: ModelLike, a: ObjectivesLike, b: ObjectivesLike, *, frames: int = 6,
                recipe: str | None = "lucid", steps: int | None = None, size: int | Sequence[int] | str | None = None,
                seed: int = 0, progress: bool = False, **render_options: Any) -> Interpolation:
    """Render ``frames`` images from objective ``a`` to objective ``b`` with a shared parameterization.

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module``.
        a, b: one objective each (an objective, a :class:`~cnnscope.Unit`, a spec or ``"KIND:ARG"`` text).
        frames: images, at least 2 (frame ``i`` maximises ``(1 - t) * a + t * b``, ``t = i / (frames - 1)``).
        recipe: the recipe whose transforms, optimiser and learning rate are used (its parameterization is replaced
            by :class:`SharedFourierImage`, with the recipe's ``decay_power``/``decorrelate`` when it is Fourier).
        steps, size, seed, progress: as :func:`~cnnscope.featurevis.render` (every frame starts from the same
            seed, so the frames differ only by their objectives).
        **render_options: other :func:`~cnnscope.featurevis.render` options (``amp``, ``transforms``, ``lr``...).

    Returns:
        :class:`Interpolation`.

    Raises:
        CnnscopeError: fewer than 2 frames, or ``a``/``b`` holding more than one objective.
        LayerError, MethodError: as :func:`~cnnscope.featurevis.render`.
    """
    m = as_model(model)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise CnnscopeError(f"frames must be an integer of at least 2, got {frames!r}")
    pair = []
    for name, obj in (("a", a), ("b", b)):
        objs = as_objectives(obj)
        if len(objs) != 1:
            raise CnnscopeError(f"interpolate takes one objective as {name}, got {len(objs)}")
        pair.append(objs[0])
    oa, ob = pair
    for key in ("param", "param_options", "batch_size", "engine", "diversity"):
        if key in render_options:
            raise CnnscopeError(f"interpolate sets {key} itself (one batch of frames, shared parameterization)")
    ts = [i / (frames - 1) for i in range(frames)]
    objs = [(1 - t) * oa + t * ob for t in ts]
    chosen = get_recipe(recipe)
    options = {k: v for k, v in dict(chosen.param_options).items() if k in ("sd", "decay_power", "decorrelate")} \
        if chosen.param == "fourier" else {}
    res = render(m, objs, recipe=chosen, steps=steps, size=size, seed=seed, batch_size=frames, progress=progress,
                 param=SharedFourierImage, param_options=options, **render_options)
    values = measure(m, res.images, [oa, ob], pairwise=True).float().cpu()
    return Interpolation(images=res.images, t=ts, values_a=values[0], values_b=values[1], render=res,
                         labels=(repr(oa), repr(ob)))


__all__ = ["Interpolation", "SharedFourierImage", "interpolate"]
