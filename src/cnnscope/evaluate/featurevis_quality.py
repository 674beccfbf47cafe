"""Quality of feature visualizations: how strongly, how robustly and how cleanly a render excites its unit.

For each rendered image and its objective (see :mod:`cnnscope.featurevis`):

* ``activation``: the objective on the render (untransformed);
* ``ratio``: activation divided by the best activation over a set of real dataset images (> 1: the render
  beats every natural example, the usual outcome of optimisation);
* ``z``: standard deviations above the dataset mean, ``(activation - mean) / std``;
* ``kept``: robustness, the mean activation over ``n_transforms`` random small jitters and rotations divided by
  the activation (1: fully kept; near 0: the render only works pixel-aligned, a sign of adversarial noise);
* ``high_freq``: share of the spectral energy above half the Nyquist frequency (0.25 cycles per pixel), the
  "high-frequency noise" the Distill article warns about (natural photos have little there).

The activations and the frequency share come from :func:`cnnscope.featurevis.measure` and
:func:`cnnscope.featurevis.high_frequency_share`; the transforms are featurevis's ``Jitter``/``RandomRotate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..capture import module_device
from ..errors import CnnscopeError
from ..featurevis import Jitter, Objective, Pipeline, RandomRotate, RenderResult, high_frequency_share, measure
from ..featurevis.render import as_objectives
from ..models import LoadedModel


@dataclass
class FeatureVisQuality:
    """Quality figures of ``N`` rendered images (numpy ``float64 [N]`` each).

    Attributes:
        activation, ratio, z, kept, high_freq: see the module docstring.
        dataset_max, dataset_mean, dataset_std: statistics of each image's objective over the dataset.
        labels: each image's objective.
        settings: jitter, angles, transforms and cutoff used.
    """

    activation: np.ndarray
    ratio: np.ndarray
    z: np.ndarray
    kept: np.ndarray
    high_freq: np.ndarray
    dataset_max: np.ndarray
    dataset_mean: np.ndarray
    dataset_std: np.ndarray
    labels: list[str]
    settings: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One JSON-ready dict per image."""
        keys = ("activation", "ratio", "z", "kept", "high_freq", "dataset_max", "dataset_mean", "dataset_std")
        return [{"objective": lab, **{k: float(getattr(self, k)[i]) for k in keys}}
                for i, lab in enumerate(self.labels)]


def _as_unit_images(images: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` or float ``[N, 3, H, W]`` in [0, 1] -> float tensor ``[N, 3, H, W]`` in [0, 1]."""
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise CnnscopeError(f"{what} must be uint8 [N, H, W, 3] or a float [N, 3, H, W] tensor in [0, 1], "
                                f"got {arr.dtype} {arr.shape}")
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise CnnscopeError(f"{what} must be uint8 [N, H, W, 3] or a float [N, 3, H, W] tensor in [0, 1]")
    return images.detach().float()


def _objectives_for(renders: RenderResult | np.ndarray | torch.Tensor, objective: object, n: int
                    ) -> list[Objective]:
    if objective is None:
        if not isinstance(renders, RenderResult):
            raise CnnscopeError("give objective=... (one, or one per image) when renders are plain images")
        per = as_objectives(renders.spec["objectives"])
        k = int(renders.spec.get("diversity", 1) or 1)
        objs = [o for o in per for _ in range(k)]
    else:
        objs = as_objectives(objective)
    if len(objs) == 1:
        objs = objs * n
    if len(objs) != n:
        raise CnnscopeError(f"{len(objs)} objectives for {n} rendered images")
    return objs


def featurevis_quality(model: nn.Module | LoadedModel, renders: RenderResult | np.ndarray | torch.Tensor,
                       dataset: np.ndarray | torch.Tensor | None = None, *, objective: object = None,
                       dataset_activations: np.ndarray | None = None, jitter: int = 8,
                       angles: Sequence[float] = tuple(range(-5, 6)), n_transforms: int = 8, cutoff: float = 0.5,
                       seed: int = 0, batch_size: int = 32) -> FeatureVisQuality:
    """Activation ratio and z-score against a dataset, robustness to jitter/rotation, high-frequency share.

    Args:
        model: the model the renders were made for (``LoadedModel`` for its normalisation, or a module with
            ImageNet normalisation).
        renders: a :class:`~cnnscope.featurevis.RenderResult` (its objectives are read from its spec), or
            images: ``uint8 [N, H, W, 3]`` / float ``[N, 3, H, W]`` in [0, 1].
        dataset: real images to compare with (same formats; any size the model accepts).
        objective: an objective or one per image (required for plain images).
        dataset_activations: precomputed objective values on the dataset instead of ``dataset``: ``[M]`` for
            one objective shared by all images, or ``[N, M]``.
        jitter: the jitter transform's range ``d`` (shifts in ``[-d//2, d//2]`` pixels).
        angles: rotation angles (degrees) drawn from uniformly.
        n_transforms: random transforms per image.
        cutoff: high-frequency cutoff as a fraction of the Nyquist frequency.
        seed: seeds the transform generators (image ``i`` uses ``seed + i``).
        batch_size: images per forward pass.

    Shape:
        - Output: :class:`FeatureVisQuality` with ``[N]`` arrays.
    """
    device = module_device(getattr(model, "module", model))
    x = _as_unit_images(renders.images if isinstance(renders, RenderResult) else renders, "renders").to(device)
    n = x.shape[0]
    objs = _objectives_for(renders, objective, n)
    act = measure(model, objs, x, batch_size=batch_size)
    if dataset_activations is not None:
        ds = np.asarray(dataset_activations, dtype=np.float64)
        ds = np.broadcast_to(ds, (n, ds.shape[-1])) if ds.ndim == 1 else ds
        if ds.ndim != 2 or ds.shape[0] != n or ds.shape[1] < 2:
            raise CnnscopeError(f"dataset_activations must be [M] or [{n}, M] with M >= 2, got {ds.shape}")
    elif dataset is not None:
        d = _as_unit_images(dataset, "dataset")
        if d.shape[0] < 2:
            raise CnnscopeError("the dataset needs at least 2 images for a mean and a std")
        unique = {repr(o.spec()): o for o in objs}
        table = measure(model, list(unique.values()), d, pairwise=True, batch_size=batch_size)
        row = {key: k for k, key in enumerate(unique)}
        ds = np.stack([table[row[repr(o.spec())]] for o in objs])
    else:
        raise CnnscopeError("featurevis_quality() needs dataset images or dataset_activations")
    d_max, d_mean, d_std = ds.max(axis=1), ds.mean(axis=1), ds.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = act / d_max
        z = (act - d_mean) / d_std
    pipeline = Pipeline([Jitter(jitter), RandomRotate(list(angles))])
    gens = [torch.Generator(device=device).manual_seed(int(seed) + i) for i in range(n)]
    moved = np.zeros(n)
    for _ in range(int(n_transforms)):
        with torch.no_grad():
            moved += measure(model, objs, pipeline(x, gens), batch_size=batch_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = moved / max(int(n_transforms), 1) / act
    settings = {"jitter": int(jitter), "angles": [float(a) for a in angles], "n_transforms": int(n_transforms),
                "cutoff": float(cutoff), "seed": int(seed), "dataset_size": int(ds.shape[1])}
    return FeatureVisQuality(activation=act, ratio=ratio, z=z, kept=kept,
                             high_freq=high_frequency_share(x, cutoff=cutoff), dataset_max=d_max,
                             dataset_mean=d_mean, dataset_std=d_std, labels=[repr(o) for o in objs],
                             settings=settings)
