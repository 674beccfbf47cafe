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

import torch

from ..errors import CnnscopeError
from ..featurevis import Jitter, Objective, Pipeline, RandomRotate, RenderResult, high_frequency_share, measure
from ..featurevis.render import as_objectives
from ..images import to_float
from ..models import LoadedModel, ModelLike, as_model


@dataclass
class FeatureVisQuality:
    """Quality figures of ``N`` rendered images (``float64 [N]`` tensors on the CPU: each value is compared with
    statistics over a dataset).

    Attributes:
        activation, ratio, z, kept, high_freq: see the module docstring.
        dataset_max, dataset_mean, dataset_std: statistics of each image's objective over the dataset.
        labels: each image's objective.
        settings: jitter, angles, transforms and cutoff used.
    """

    activation: torch.Tensor
    ratio: torch.Tensor
    z: torch.Tensor
    kept: torch.Tensor
    high_freq: torch.Tensor
    dataset_max: torch.Tensor
    dataset_mean: torch.Tensor
    dataset_std: torch.Tensor
    labels: list[str]
    settings: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One JSON-ready dict per image."""
        keys = ("activation", "ratio", "z", "kept", "high_freq", "dataset_max", "dataset_mean", "dataset_std")
        return [{"objective": lab, **{k: float(getattr(self, k)[i]) for k in keys}}
                for i, lab in enumerate(self.labels)]


def _pictures01(m: LoadedModel, images: object) -> torch.Tensor:
    """Pictures as float ``[N, C, H, W]`` in [0, 1] on the model's device, at their own size.

    ``uint8`` pictures (``[H, W, 3]``, ``[N, H, W, 3]`` or a list) are converted as they are; float tensors are in
    the model's input space (:meth:`LoadedModel.batch` checks them) and are mapped back to [0, 1].
    """
    if isinstance(images, torch.Tensor) or (isinstance(images, (list, tuple)) and images
                                            and isinstance(images[0], torch.Tensor)):
        return m.denormalize(m.batch(images))
    return to_float(images, device=m.device)


def _objectives_for(renders: object, objective: object, n: int) -> list[Objective]:
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


def featurevis_quality(model: ModelLike, renders: RenderResult | object, *, dataset: object = None,
                       objective: object = None, dataset_activations: object = None,
                       jitter: int = 8, angles: Sequence[float] = tuple(range(-5, 6)), n_transforms: int = 8,
                       cutoff: float = 0.5, seed: int = 0, batch_size: int | None = None) -> FeatureVisQuality:
    """Activation ratio and z-score against a dataset, robustness to jitter/rotation, high-frequency share.

    Args:
        model: the model the renders were made for (``LoadedModel`` or ``nn.Module``; its normalisation turns
            pictures into inputs).
        renders: a :class:`~cnnscope.featurevis.RenderResult` (its objectives are read from its spec), or
            pictures (``uint8 [N, H, W, 3]``, a list of ``[H, W, 3]``) or a model-space float tensor, at any size
            the model accepts (not resized).
        dataset: real images to compare with: anything :meth:`LoadedModel.batch` takes (pictures are resized to
            the model's input size).
        objective: an objective or one per image (required unless ``renders`` is a ``RenderResult``).
        dataset_activations: precomputed objective values on the dataset instead of ``dataset``: ``[M]`` for
            one objective shared by all images, or ``[N, M]``.
        jitter: the jitter transform's range ``d`` (shifts in ``[-d//2, d//2]`` pixels).
        angles: rotation angles (degrees) drawn from uniformly.
        n_transforms: random transforms per image.
        cutoff: high-frequency cutoff as a fraction of the Nyquist frequency.
        seed: seeds the transform generators (image ``i`` uses ``seed + i``).
        batch_size: images per forward pass; ``None`` picks :func:`~cnnscope.featurevis.measure`'s default for the
            model's device.

    Shape:
        - Output: :class:`FeatureVisQuality` with ``[N]`` tensors.
    """
    m = as_model(model)
    x = _pictures01(m, renders.images if isinstance(renders, RenderResult) else renders)
    n = x.shape[0]
    objs = _objectives_for(renders, objective, n)
    act = _cpu64(measure(m, m.to_input(x), objs, batch_size=batch_size))
    if dataset_activations is not None:
        ds = _cpu64(dataset_activations)
        ds = ds.expand(n, ds.shape[-1]) if ds.ndim == 1 else ds
        if ds.ndim != 2 or ds.shape[0] != n or ds.shape[1] < 2:
            raise CnnscopeError(f"dataset_activations must be [M] or [{n}, M] with M >= 2, got "
                                f"{list(ds.shape)}")
    elif dataset is not None:
        unique = {repr(o.spec()): o for o in objs}
        table = _cpu64(measure(m, dataset, list(unique.values()), pairwise=True, batch_size=batch_size))
        if table.shape[1] < 2:
            raise CnnscopeError("the dataset needs at least 2 images for a mean and a std")
        row = {key: k for k, key in enumerate(unique)}
        ds = table[[row[repr(o.spec())] for o in objs]]
    else:
        raise CnnscopeError("featurevis_quality() needs dataset images or dataset_activations")
    d_max, d_mean, d_std = ds.max(dim=1).values, ds.mean(dim=1), ds.std(dim=1)
    pipeline = Pipeline([Jitter(jitter), RandomRotate(list(angles))])
    gens = [torch.Generator(device=m.device).manual_seed(int(seed) + i) for i in range(n)]
    moved = torch.zeros(n, dtype=torch.float64)
    for _ in range(int(n_transforms)):
        with torch.no_grad():
            moved += _cpu64(measure(m, m.to_input(pipeline(x, gens)), objs, batch_size=batch_size))
    settings = {"jitter": int(jitter), "angles": [float(a) for a in angles], "n_transforms": int(n_transforms),
                "cutoff": float(cutoff), "seed": int(seed), "dataset_size": int(ds.shape[1])}
    return FeatureVisQuality(activation=act, ratio=act / d_max, z=(act - d_mean) / d_std,
                             kept=moved / max(int(n_transforms), 1) / act,
                             high_freq=_cpu64(high_frequency_share(x, cutoff=cutoff)), dataset_max=d_max,
                             dataset_mean=d_mean, dataset_std=d_std, labels=[repr(o) for o in objs],
                             settings=settings)


def _cpu64(values: object) -> torch.Tensor:
    """float64 on the CPU."""
    return torch.as_tensor(values).detach().to("cpu", torch.float64)
