"""Plan an atlas build before spending on it: time a few units and images, extrapolate time and storage.

:func:`plan_build` runs the build's own artifact kinds (``cnnscope.atlas.kinds``) on a sample: the first chunk of
units of a few layers spread over the requested ones, with fewer feature-visualization steps (render time is
proportional to the steps), and the dataset pass over a few images. Per-unit seconds and bytes are interpolated
between the sampled layers by depth and multiplied by the units of every layer; the dataset pass by the images.
The time on ``k`` workers is the time here divided by ``k`` (units and image shards are independent pieces;
docs/scale.md). This module sits above ``atlas`` (it imports it when called): it is the planning side of a build.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from ..units import parse_channels

#: feature-visualization kinds are timed with at most this many steps, then scaled to the build's steps
SAMPLE_STEPS = 4


@dataclass
class KindPlan:
    """One artifact kind of a plan: units it describes, seconds and bytes per unit (averaged over the layers),
    seconds and bytes in all."""

    name: str
    units: int
    seconds_per_unit: float
    bytes_per_unit: float
    seconds: float
    bytes: float


@dataclass
class BuildPlan:
    """What :func:`plan_build` returns.

    Attributes:
        layers: ``layer -> units`` of the build.
        kinds: one :class:`KindPlan` per artifact kind.
        images: images of the dataset pass (0 without dataset kinds).
        seconds_per_image: the dataset pass over every layer, per image.
        workers: the ``k`` of "about N/k h on k workers".
        sampled: what was timed (layers, units, steps, images) and how long the sampling took.
    """

    layers: dict[str, int]
    kinds: list[KindPlan]
    images: int = 0
    seconds_per_image: float = 0.0
    workers: int = 1
    sampled: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> int:
        return sum(self.layers.values())

    @property
    def pass_seconds(self) -> float:
        return self.images * self.seconds_per_image

    @property
    def seconds(self) -> float:
        """Expected seconds of the whole build in this process."""
        return sum(k.seconds for k in self.kinds) + self.pass_seconds

    @property
    def bytes(self) -> float:
        return sum(k.bytes for k in self.kinds)

    def seconds_on(self, workers: int) -> float:
        """Expected seconds on ``workers`` workers like this process."""
        return self.seconds / max(1, workers)

    def lines(self) -> list[str]:
        """The plan as text: a summary line, then one line per kind and one for the dataset pass."""
        k, n = self.workers, len(self.kinds)
        out = [f"{self.units:,} units x {n} kind{'s' if n != 1 else ''}, about {human_bytes(self.bytes)}, about "
               f"{human_seconds(self.seconds)} on this machine; about {human_seconds(self.seconds_on(k))} on {k} "
               f"worker{'s' if k != 1 else ''}"]
        for kp in self.kinds:
            out.append(f"  {kp.name}: {kp.units:,} units x {kp.seconds_per_unit:.3g} s, "
                       f"{human_bytes(kp.bytes_per_unit)} each -> {human_seconds(kp.seconds)}, "
                       f"{human_bytes(kp.bytes)}")
        if self.images:
            out.append(f"  dataset pass: {self.images:,} images x {self.seconds_per_image:.3g} s -> "
                       f"{human_seconds(self.pass_seconds)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"layers": dict(self.layers), "units": self.units, "kinds": [dataclasses.asdict(k) for k in self.kinds],
                "images": self.images, "seconds_per_image": self.seconds_per_image, "seconds": self.seconds,
                "bytes": self.bytes, "workers": self.workers, "seconds_on_workers": self.seconds_on(self.workers),
                "sampled": dict(self.sampled)}


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def human_seconds(s: float) -> str:
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _artifact_bytes(artifacts: list) -> int:
    return sum(len(a.data or b"") + len(json.dumps(a.numbers, default=str)) for a in artifacts)


def plan_build(model: ModelLike, layers: str | list[str] | None = None, kinds: list[str] | None = None, *,
               channels: Any = None, source: object = None, options: Any = None, images: int | None = None,
               workers: int = 8, sample_layers: int = 3, sample_images: int = 4) -> BuildPlan:
    """Time a sample of an atlas build and extrapolate (see the module docstring).

    Args:
        model, layers, kinds, channels, source, options: as :func:`cnnscope.atlas.build_atlas`.
        images: images of the real dataset pass (default: every image of ``source``).
        workers: the ``k`` of the per-worker estimate.
        sample_layers: layers timed (spread over ``layers``, first and last included).
        sample_images: images of the timed dataset pass.

    Returns:
        :class:`BuildPlan`.

    Raises:
        LayerError, MethodError: as :func:`~cnnscope.atlas.build_atlas` (unknown layers or kinds).
        CnnscopeError: ``workers``, ``sample_layers`` or ``sample_images`` not positive.
    """
    from ..atlas.build import _resolve_kinds, _resolve_layers, _study_layers
    from ..atlas.images import image_source
    from ..atlas.kinds import BuildContext, BuildOptions
    from ..batching import resolve_batch_size

    for what, v in (("workers", workers), ("sample_layers", sample_layers), ("sample_images", sample_images)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CnnscopeError(f"{what} must be a positive int, got {v!r}")
    t_start = time.perf_counter()
    m = as_model(model)
    options = options or BuildOptions()
    if layers is None:
        layers = _study_layers(m, "layers=[...]")
    infos = _resolve_layers(m, [layers] if isinstance(layers, str) else list(layers))
    chosen = _resolve_kinds(kinds, source is not None)
    plans = {i.name: parse_channels(channels, i.output_shape[0]) for i in infos}
    n_images, sample = 0, None
    if source is not None:
        src = image_source(source)
        n_images = len(src) if images is None else int(images)
        sample = image_source([(src.name(i), src.load(i)) for i in range(min(sample_images, len(src)))])
    steps = min(options.steps, SAMPLE_STEPS)
    timed_opts = dataclasses.replace(options, steps=steps)
    scale = {k.name: (options.steps / steps if k.requires == "cnnscope.featurevis.render" else 1.0) for k in chosen}
    picks = sorted(set(np.linspace(0, len(infos) - 1, min(sample_layers, len(infos))).round().astype(int).tolist()))
    cache: dict = {}
    names = [i.name for i in infos]
    batch_size = resolve_batch_size(options.batch_size, m.device)
    per_image = 0.0
    timed: dict[str, dict[str, list[float]]] = {k.name: {} for k in chosen}  # kind -> layer -> [s/unit, B/unit]
    for p in picks:
        info = infos[p]
        ctx = BuildContext(model=m, layer=info, options=timed_opts, batch_size=batch_size, source=sample,
                           cache=cache, layers=names[p:])
        if sample is not None and "dataset_stats" not in cache:
            from ..atlas.dataset_kind import layer_stats

            t0 = time.perf_counter()
            layer_stats(ctx)  # one pass for every layer from the first sampled (the first) on, as the build does
            per_image = (time.perf_counter() - t0) / max(1, len(sample))
        units = plans[info.name][:options.units_per_chunk]
        for k in chosen:
            if k.applies(m, info) is not None:
                continue
            t0 = time.perf_counter()
            made = k.produce(ctx, list(units))
            secs = (time.perf_counter() - t0) * scale[k.name] / len(units)
            timed[k.name][info.name] = [secs, sum(_artifact_bytes(made[u]) for u in units) / len(units)]
    kind_plans = []
    for k in chosen:
        by_layer = timed[k.name]
        at = [names.index(n) for n in by_layer]
        units = secs = size = 0.0
        for idx, info in enumerate(infos):
            if not at or k.applies(m, info) is not None:
                continue
            n = len(plans[info.name])
            units += n
            secs += n * float(np.interp(idx, at, [v[0] for v in by_layer.values()]))
            size += n * float(np.interp(idx, at, [v[1] for v in by_layer.values()]))
        kind_plans.append(KindPlan(k.name, int(units), secs / max(units, 1), size / max(units, 1), secs, size))
    sampled = {"layers": [names[p] for p in picks], "units_per_layer": options.units_per_chunk, "steps": steps,
               "images": len(sample) if sample is not None else 0, "seconds": time.perf_counter() - t_start}
    return BuildPlan(layers={n: len(plans[n]) for n in names}, kinds=kind_plans,
                     images=n_images if any(k.needs_images for k in chosen) else 0, seconds_per_image=per_image,
                     workers=workers, sampled=sampled)


__all__ = ["BuildPlan", "KindPlan", "human_bytes", "human_seconds", "plan_build"]
