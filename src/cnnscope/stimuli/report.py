"""The tuning report of one layer: dataset statistics, heatmaps, the orientation family and joint tuning curves.

It wires the stimuli area to the dataset area: the per-channel mean/std that turn activations into "standard
deviations above the dataset mean" and the top dataset examples whose rotations give the joint tuning curves come
from one :func:`cnnscope.dataset.collect_statistics` pass, read the same way as the tuning (``pre_activation``).
``cnnscope tuning`` and the demo draw its figures (:func:`cnnscope.plot.stimuli.tuning_report_figures`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..capture import resolve_layers
from ..errors import CnnscopeError
from ..models import ModelLike, as_model
from ..outputs import atomic_path, write_text
from .curves import stimulus_class
from .families import Family, discover_family, find_family
from .joint import JointTuning, centered_crop, joint_tuning
from .responses import rf_centers, rf_offset
from .tuning import TuningMap, default_orientations, tuning_map


@dataclass
class TuningReport:
    """What :func:`tuning_report` measured.

    Attributes:
        model, layer: names; pre_activation: whether the values are an activation module's inputs.
        size: stimulus size in pixels; offset: where the stimuli were drawn (the receptive-field centre).
        receptive_field: the layer's receptive-field side in pixels (``None`` when not measured).
        dataset: ``{"images", "source"}`` of the statistics pass, or ``None`` (raw activations, no joint tuning).
        tuning: the tuning map of every measured channel; family: the selected (or named) channels.
        joint: joint tuning curves of the family, or ``None``.
        named: whether the channels were named (the map is then part of :meth:`to_dict`).
    """

    model: str
    layer: str
    pre_activation: bool
    size: int
    offset: tuple[float, float]
    receptive_field: int | None
    dataset: dict | None
    tuning: TuningMap
    family: Family
    joint: JointTuning | None
    named: bool

    def to_dict(self) -> dict:
        return {"model": self.model, "layer": self.layer, "pre_activation": self.pre_activation, "size": self.size,
                "offset": list(self.offset), "receptive_field": self.receptive_field, "dataset": self.dataset,
                "family": self.family.to_dict(), "tuning": self.tuning.to_dict() if self.named else None,
                "joint": None if self.joint is None else self.joint.to_dict()}

    def save(self, out: str | Path) -> list[Path]:
        """Write ``tuning.json`` (:meth:`to_dict`) and ``tuning.npz`` (the raw and z-scored heatmaps of every
        measured channel, the family, the joint curves) into ``out``."""
        out = Path(out)
        t = self.tuning
        arrays = {"channels": t.channels.numpy(), "orientations": t.orientations.numpy(), "levels": t.levels.numpy(),
                  "raw": t.raw.numpy(), "values": t.values.numpy(), "family": np.asarray(self.family.channels),
                  "joint_curves": np.zeros(0) if self.joint is None else self.joint.curves.numpy()}
        with atomic_path(out / "tuning.npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        write_text(out / "tuning.json", json.dumps(self.to_dict(), indent=2, default=str))
        return [out / "tuning.json", out / "tuning.npz"]


def tuning_report(model: ModelLike, layer: str, *, channels: Sequence[int] | str | None = None, family: int = 8,
                  min_selectivity: float = 0.3, kind: str = "curve", step: float = 10.0,
                  levels: Sequence[float] | None = None, param: str | None = None, size: int | None = None,
                  source: object = "samples", pre_activation: bool = False, examples: int = 6,
                  joint_step: float = 5.0, double: bool = False, batch_size: int | None = None,
                  progress: bool = False, **stimulus: object) -> TuningReport:
    """Measure the tuning of ``layer``: the family of its most orientation-tuned channels (or the named
    ``channels``), their heatmaps and radial curves, and joint tuning curves from their rotated top examples.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        layer: dotted layer name.
        channels: measure these channels (all of them form the family); default: discover ``family`` channels
            among every channel of the layer with selectivity at least ``min_selectivity``.
        kind, step, levels, param, stimulus: the stimuli (``step``: orientation step in degrees).
        size: stimulus size (default: 1.5 x the receptive field, at most the input size).
        source: images for the dataset mean/std and the top examples (anything
            :func:`cnnscope.dataset.open_source` reads); ``None``: raw activations and no joint tuning.
        pre_activation: read the input of the activation module ``layer`` (as the article) everywhere.
        examples: top dataset examples per channel rotated for the joint tuning curves (0 = none).
        joint_step: rotation step of the joint tuning curves in degrees (0 = none).
        double: keep double-curve channels in the discovered family (:func:`~cnnscope.stimuli.find_family`).
        batch_size: images per forward pass (``None``: defaults for the model's device).
        progress: show progress bars.

    Raises:
        CnnscopeError: no channel of the layer reaches ``min_selectivity``.
    """
    from ..capture.receptive_field import receptive_fields

    m = as_model(model)
    resolve_layers(m.module, layer)
    mean = std = stats = rf_full = src = None
    if source is not None:
        from ..dataset import collect_statistics, open_source

        src = open_source(source)
        stats = collect_statistics(m, src, [layer], pre_activation=pre_activation, k=max(1, examples),
                                   batch_size=batch_size, progress=progress)
        ls = stats[layer]
        mean, std, rf_full = ls.mean, ls.std, ls.rf
    if rf_full is None and size is None:
        rf_full = receptive_fields(m.module, layer, m.input_size)[layer]
    rf_side = max(rf_full.size) if rf_full is not None else None
    size = size or min(min(m.input_size), max(32, math.ceil(1.5 * rf_side / 16) * 16))  # type: ignore[operator]
    offset = rf_offset(m, layer, size=size, rf=rf_full)
    common = dict(kind=kind, orientations=default_orientations(step, stimulus_class(kind).period), levels=levels,
                  param=param, mean=mean, std=std, size=size, offset=offset, pre_activation=pre_activation,
                  batch_size=batch_size, progress=progress, **stimulus)
    if channels is not None:
        tmap = tuning_map(m, layer, channels=channels, **common)  # type: ignore[arg-type]
        fam = find_family(tmap, None, min_selectivity=0.0, min_peak=-math.inf)  # every named channel
    else:
        fam, tmap = discover_family(m, layer, k=family, min_selectivity=min_selectivity, double=double, **common)
        if not len(fam):
            raise CnnscopeError(f"no channel of {layer!r} has orientation selectivity >= {min_selectivity}; "
                                "lower min_selectivity or name the channels")
    joint = None
    if stats is not None and rf_full is not None and joint_step > 0 and examples > 0:
        cy, cx = rf_centers(rf_full)
        side = math.ceil(rf_side * math.sqrt(2))  # type: ignore[operator]
        fitted: dict[int, np.ndarray] = {}
        crops: dict[int, list[np.ndarray]] = {}
        for c in fam.channels:
            for ex in stats.examples(layer, c, "top"):
                if not math.isfinite(ex.value):
                    continue
                if ex.image_id not in fitted:
                    fitted[ex.image_id] = m.fit_image(src.load(ex.image_id))  # type: ignore[union-attr]
                crops.setdefault(c, []).append(centered_crop(fitted[ex.image_id], (cy[ex.y], cx[ex.x]), side))
        if crops:
            joint = joint_tuning(m, crops, layer, channels=fam.channels, step=joint_step, out_size=rf_side,
                                 mean=mean, std=std, pre_activation=pre_activation, batch_size=batch_size,
                                 progress=progress)
    from ..dataset.sources import skipped_dicts

    dataset = None if stats is None else {"images": stats.images, "source": stats.source,
                                          "skipped": skipped_dicts(stats.skipped), "n_skipped": stats.n_skipped}
    return TuningReport(model=m.name, layer=layer, pre_activation=pre_activation, size=int(size),
                        offset=(float(offset[0]), float(offset[1])), receptive_field=rf_side, dataset=dataset,
                        tuning=tmap, family=fam, joint=joint, named=channels is not None)

