"""``evaluate()``: every requested metric for every requested method on one batch of images, as a table.

Each method's maps are computed once (per image, for the classes decided on the clean images) and shared by
all per-method metrics; the sanity check runs all methods together on its own copy of the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CnnscopeError, MethodError, unknown
from .common import TargetLike, check_images, compute_maps, resolve_targets
from .deletion_insertion import RISE_STEP, CurveResult, deletion, insertion
from .methods import explainer
from .pointing import PointingResult, pointing_game
from .report import MetricTable
from .road import PERCENTAGES, RoadResult, road
from .sanity import SanityResult, sanity_check


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
        table: per-image values of every (method, metric) pair.
        curves: ``method -> {"deletion"|"insertion": CurveResult}``.
        road: ``method -> RoadResult``.
        sanity: the :class:`SanityResult` (all methods), when requested.
        pointing: ``method -> PointingResult``, when regions were given.
        maps: ``method -> [B, H, W]`` maps that were scored.
        images: image names; targets: ``[B]`` classes scored.
        settings: the protocol options used.
    """

    table: MetricTable
    curves: dict[str, dict[str, CurveResult]] = field(default_factory=dict)
    road: dict[str, RoadResult] = field(default_factory=dict)
    sanity: SanityResult | None = None
    pointing: dict[str, PointingResult] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    targets: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)


@dataclass
class _Run:
    module: nn.Module
    x: torch.Tensor
    targets: torch.Tensor
    names: list[str]
    opts: dict[str, Any]
    result: Evaluation


def _deletion(run: _Run, method: str, maps: torch.Tensor) -> None:
    o = run.opts
    res = deletion(run.module, run.x, maps, target=run.targets, step=o["step"], substrate=o["deletion_substrate"],
                   max_batch=o["max_batch"], progress=o["progress"])
    run.result.curves.setdefault(method, {})["deletion"] = res
    run.result.table.extend(method, "deletion_auc", run.names, res.auc)


def _insertion(run: _Run, method: str, maps: torch.Tensor) -> None:
    o = run.opts
    res = insertion(run.module, run.x, maps, target=run.targets, step=o["step"],
                    substrate=o["insertion_substrate"], max_batch=o["max_batch"], progress=o["progress"])
    run.result.curves.setdefault(method, {})["insertion"] = res
    run.result.table.extend(method, "insertion_auc", run.names, res.auc)


def _road(run: _Run, method: str, maps: torch.Tensor) -> None:
    o = run.opts
    res = road(run.module, run.x, maps, target=run.targets, percentages=o["road_percentages"], noise=o["noise"],
               seed=o["seed"], max_batch=o["max_batch"], progress=o["progress"])
    run.result.road[method] = res
    run.result.table.extend(method, "road_morf", run.names, res.morf_mean)
    run.result.table.extend(method, "road_lerf", run.names, res.lerf_mean)
    run.result.table.extend(method, "road", run.names, res.combined)


def _pointing(run: _Run, method: str, maps: torch.Tensor) -> None:
    regions = run.opts["regions"]
    if regions is None:
        raise CnnscopeError("the pointing metric needs regions= (one mask or box per image)")
    res = pointing_game(maps, regions, run.opts["labels"], tolerance=run.opts["tolerance"],
                        size=tuple(run.x.shape[-2:]))
    run.result.pointing[method] = res
    run.result.table.extend(method, "pointing", run.names, res.hits.float())


def _sanity(run: _Run, explainers: Mapping[str, Callable]) -> None:
    o = run.opts
    res = sanity_check(run.module, run.x, explainers, mode=o["sanity_mode"], target=run.targets,
                       measures=("spearman_abs", "spearman", "ssim", "hog"), seed=o["seed"],
                       max_units=o["sanity_units"], max_batch=o["max_batch"], progress=o["progress"])
    run.result.sanity = res
    for m in explainers:
        run.result.table.extend(m, "sanity_spearman_abs", run.names, res.similarity[m]["spearman_abs"][-1])
        run.result.table.extend(m, "sanity_ssim", run.names, res.similarity[m]["ssim"][-1])


#: per-method metrics: name -> ``fn(run, method, maps)``
PER_METHOD: dict[str, Callable[[_Run, str, torch.Tensor], None]] = {
    "deletion": _deletion,
    "insertion": _insertion,
    "road": _road,
    "pointing": _pointing,
}
#: metrics over all methods at once: name -> ``fn(run, explainers)``
ACROSS_METHODS: dict[str, Callable[[_Run, Mapping[str, Callable]], None]] = {"sanity": _sanity}
METRICS = tuple(PER_METHOD) + tuple(ACROSS_METHODS)
DEFAULT_METRICS = ("deletion", "insertion", "road")


def evaluate(module: nn.Module, x: torch.Tensor, methods: Sequence[str] | Mapping[str, Callable], *,
             metrics: Sequence[str] = DEFAULT_METRICS, image_names: Sequence[str] | None = None,
             layer: str | None = None, target: TargetLike = None, method_options: dict[str, dict] | None = None,
             step: int = RISE_STEP, deletion_substrate: str = "zero", insertion_substrate: str = "blur",
             road_percentages: Sequence[float] = PERCENTAGES, noise: float = 0.01,
             regions: Sequence | None = None, labels: Sequence | None = None, tolerance: float = 15.0,
             sanity_mode: str = "cascading", sanity_units: int = 16, seed: int = 0, max_batch: int = 32,
             progress: bool = False) -> Evaluation:
    """Score methods by metrics on a batch of images.

    Args:
        module: a classifier (temporary eval mode; never modified, the sanity check works on a copy).
        x: model-space images ``[B, C, H, W]``.
        methods: names (attribution methods of :mod:`cnnscope.attribution`, or the baselines ``random`` and
            ``center``) or ``name -> explainer(module, x, targets)``.
        metrics: any of :data:`METRICS` (``deletion``, ``insertion``, ``road``, ``pointing``, ``sanity``).
        image_names: names for the table (default ``image0, image1, ...``).
        layer: the CAM layer for CAM methods (automatic when ``None``).
        target: classes to explain and score (default: each image's top-1 class).
        method_options: ``method -> options`` for the attribution methods.
        step, deletion_substrate, insertion_substrate: the RISE protocol's settings (see
            :mod:`.deletion_insertion`).
        road_percentages, noise: ROAD's settings.
        regions, labels, tolerance: the pointing game's masks/boxes, classes and tolerance.
        sanity_mode: ``"cascading"`` or ``"independent"``.
        sanity_units: the most units the sanity check randomizes (see :func:`.sanity.randomization_units`).
        seed: seeds the random baseline, ROAD's noise and the sanity check's weights.
        max_batch: most images per forward pass (and per explainer call).
        progress: progress bars.
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise MethodError(unknown("metric", bad[0], METRICS))
    if not methods:
        raise MethodError("evaluate() needs at least one method")
    x = check_images(x)
    names = list(image_names) if image_names is not None else [f"image{i}" for i in range(x.shape[0])]
    if len(names) != x.shape[0]:
        raise CnnscopeError(f"{len(names)} image names for {x.shape[0]} images")
    if isinstance(methods, Mapping):
        table = dict(methods)
    else:
        opts = method_options or {}
        table = {n: explainer(n, layer=layer, seed=seed, **opts.get(n, {})) for n in dict.fromkeys(methods)}
    targets = resolve_targets(module, x, target, max_batch)
    settings = {"step": step, "deletion_substrate": deletion_substrate, "insertion_substrate": insertion_substrate,
                "road_percentages": [float(p) for p in road_percentages], "noise": float(noise),
                "tolerance": float(tolerance), "sanity_mode": sanity_mode, "sanity_units": int(sanity_units),
                "seed": int(seed),
                "max_batch": int(max_batch), "layer": layer, "metrics": list(metrics)}
    result = Evaluation(table=MetricTable(), images=names, targets=targets, settings=settings)
    run = _Run(module, x, targets, names, {**settings, "regions": regions, "labels": labels,
                                             "progress": progress}, result)
    per_method = [m for m in metrics if m in PER_METHOD]
    for name, fn in table.items():
        t0 = time.perf_counter()
        maps = compute_maps(fn, module, x, targets, max_batch)
        result.table.extend(name, "seconds", names, [(time.perf_counter() - t0) / x.shape[0]] * x.shape[0])
        result.maps[name] = maps
        for metric in per_method:
            PER_METHOD[metric](run, name, maps)
    for metric in metrics:
        if metric in ACROSS_METHODS:
            ACROSS_METHODS[metric](run, table)
    return result
