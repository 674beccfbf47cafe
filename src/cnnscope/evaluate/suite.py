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

from ..batching import resolve_batch_size
from ..dataset.sources import ImageSet, skipped_dicts
from ..errors import CnnscopeError, MethodError, unknown
from ..models import LoadedModel, ModelLike, as_model
from .common import Explainer, TargetLike, compute_maps, resolve_targets
from .deletion_insertion import RISE_STEP, CurveResult, deletion, insertion
from .methods import explainers
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
        maps: ``method -> [B, H, W]`` maps that were scored (model's device).
        images: image names; targets: ``[B]`` classes scored (model's device).
        settings: the protocol options used.
        skipped: images that could not be read (given an :class:`~cnnscope.dataset.sources.ImageSet`), as
            ``{"path", "reason"}`` dicts; they are not scored.
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
    skipped: list[dict] = field(default_factory=list)

    def notes(self) -> str:
        """Markdown bullets that state the protocol settings used (for a report next to the table)."""
        s = self.settings
        lines = ["classes scored: each image's top-1 unless a target was given."]
        if any(k in s["metrics"] for k in ("deletion", "insertion")):
            rise = s["step"] == RISE_STEP and s["deletion_substrate"] == "zero" and s["insertion_substrate"] == "blur"
            proto = "RISE protocol" if rise else "CUSTOM settings (not the RISE protocol)"
            lines.append(f"deletion/insertion: {proto}: step {s['step']} px, deletion substrate "
                         f"{s['deletion_substrate']}, insertion substrate {s['insertion_substrate']}.")
        if "road" in s["metrics"]:
            lines.append(f"ROAD: percentages {s['road_percentages']}, noise {s['noise']}.")
        if "sanity" in s["metrics"]:
            lines.append(f"sanity: {s['sanity_mode']} randomization; values after the last step.")
        return "\n".join(f"- {t}" for t in lines) + "\n"


@dataclass
class _Run:
    model: LoadedModel
    x: torch.Tensor
    targets: torch.Tensor
    names: list[str]
    opts: dict[str, Any]
    result: Evaluation


def _deletion(run: _Run, method: str, maps: torch.Tensor) -> None:
    o = run.opts
    res = deletion(run.model, run.x, maps, target=run.targets, step=o["step"], substrate=o["deletion_substrate"],
                   batch_size=o["batch_size"], progress=o["progress"])
    run.result.curves.setdefault(method, {})["deletion"] = res
    run.result.table.extend(method, "deletion_auc", run.names, res.auc)


def _insertion(run: _Run, method: str, maps: torch.Tensor) -> None:
    o = run.opts
    res = insertion(run.model, run.x, maps, target=run.targets, step=o["step"],
                    substrate=o["insertion_substrate"], batch_size=o["batch_size"], progress=o["progress"])
    run.result.curves.setdefault(method, {})["insertion"] = res
    run.result.table.extend(method, "insertion_auc", run.names, res.auc)


def _road(run: _Run, method: str, maps: torch.Tensor) -> None:
    o = run.opts
    res = road(run.model, run.x, maps, target=run.targets, percentages=o["road_percentages"], noise=o["noise"],
               seed=o["seed"], batch_size=o["batch_size"], progress=o["progress"])
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


def _sanity(run: _Run, table: Mapping[str, Explainer]) -> None:
    o = run.opts
    res = sanity_check(run.model, run.x, table, mode=o["sanity_mode"], target=run.targets,
                       measures=("spearman_abs", "spearman", "ssim", "hog"), seed=o["seed"],
                       max_units=o["sanity_units"], batch_size=o["batch_size"], progress=o["progress"])
    run.result.sanity = res
    for m in table:
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
ACROSS_METHODS: dict[str, Callable[[_Run, Mapping[str, Explainer]], None]] = {"sanity": _sanity}
METRICS = tuple(PER_METHOD) + tuple(ACROSS_METHODS)
DEFAULT_METRICS = ("deletion", "insertion", "road")


def evaluate(model: ModelLike, images: object, methods: Sequence[str] | Mapping[str, Explainer], *,
             metrics: Sequence[str] = DEFAULT_METRICS, image_names: Sequence[str] | None = None,
             layer: str | None = None, target: TargetLike = None, method_options: dict[str, dict] | None = None,
             step: int = RISE_STEP, deletion_substrate: str = "zero", insertion_substrate: str = "blur",
             road_percentages: Sequence[float] = PERCENTAGES, noise: float = 0.01,
             regions: Sequence | None = None, labels: Sequence | None = None, tolerance: float = 15.0,
             sanity_mode: str = "cascading", sanity_units: int = 16, seed: int = 0, batch_size: int | None = None,
             progress: bool = False) -> Evaluation:
    """Score methods by metrics on a batch of images.

    Args:
        model: a classifier (``LoadedModel`` or ``nn.Module``; temporary eval mode; never modified, the sanity
            check works on a copy).
        images: anything :meth:`LoadedModel.batch` takes (a model-space tensor, or pictures), or an
            :class:`~cnnscope.dataset.sources.ImageSet` (``read_images("photos/")``: a folder's readable images;
            its names are the default ``image_names`` and its unreadable ones end up in ``Evaluation.skipped``).
        methods: names (attribution methods of :mod:`cnnscope.attribution`, or the baselines ``random``,
            ``random_pixel`` and ``center``) or ``name -> explainer(model, images, targets)``.
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
        seed: seeds the random baselines, ROAD's noise and the sanity check's weights.
        batch_size: images per forward pass (and per explainer call); ``None`` lets each step pick its default
            for the model's device.
        progress: progress bars.
    """
    m = as_model(model)
    bad = [k for k in metrics if k not in METRICS]
    if bad:
        raise MethodError(unknown("metric", bad[0], METRICS))
    if not methods:
        raise MethodError("evaluate() needs at least one method")
    skipped: list[dict] = []
    if isinstance(images, ImageSet):
        image_names = images.names if image_names is None else image_names
        skipped = skipped_dicts(images.skipped)
        images = images.images
    x = m.batch(images)
    bs = resolve_batch_size(batch_size, m.device)
    names = list(image_names) if image_names is not None else [f"image{i}" for i in range(x.shape[0])]
    if len(names) != x.shape[0]:
        raise CnnscopeError(f"{len(names)} image names for {x.shape[0]} images")
    table = explainers(methods, layer=layer, seed=seed, options=method_options)
    targets = resolve_targets(m, x, target, bs)
    settings = {"step": step, "deletion_substrate": deletion_substrate, "insertion_substrate": insertion_substrate,
                "road_percentages": [float(p) for p in road_percentages], "noise": float(noise),
                "tolerance": float(tolerance), "sanity_mode": sanity_mode, "sanity_units": int(sanity_units),
                "seed": int(seed), "batch_size": batch_size, "layer": layer, "metrics": list(metrics)}
    result = Evaluation(table=MetricTable(), images=names, targets=targets, settings=settings, skipped=skipped)
    run = _Run(m, x, targets, names, {**settings, "regions": regions, "labels": labels, "progress": progress},
               result)
    per_method = [k for k in metrics if k in PER_METHOD]
    for name, fn in table.items():
        t0 = time.perf_counter()
        maps = compute_maps(fn, m, x, targets, bs)
        result.table.extend(name, "seconds", names, [(time.perf_counter() - t0) / x.shape[0]] * x.shape[0])
        result.maps[name] = maps
        for metric in per_method:
            PER_METHOD[metric](run, name, maps)
    for metric in metrics:
        if metric in ACROSS_METHODS:
            ACROSS_METHODS[metric](run, table)
    return result
