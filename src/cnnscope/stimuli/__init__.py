"""Synthetic stimuli and tuning: the Curve Detectors toolkit (Cammarata et al., *Curve Detectors*, Distill 2020).

- :mod:`.curves`: anti-aliased curves, angles (sharp or rounded) and lines; the :data:`STIMULI` registry (a new
  kind is one class decorated with :func:`register_stimulus`).
- :mod:`.responses`: batched forward passes that read channels at one position (the receptive-field centre).
- :mod:`.tuning`: orientation x radius heatmaps (in standard deviations above the dataset mean) and radial
  tuning curves.
- :mod:`.joint`: joint tuning curves from rotated dataset examples.
- :mod:`.families`: orientation selectivity and automatic discovery of orientation-tuned families.
- :mod:`.report`: all of it for one layer, with the dataset statistics (``cnnscope tuning``).

Example:
    >>> from cnnscope import load_model
    >>> from cnnscope.stimuli import discover_family
    >>> m = load_model()
    >>> family, tmap = discover_family(m, "blocks.3.1.bn1.act", k=8, pre_activation=True, size=128)
    >>> family.channels, family.stats.preferred      # channels ordered by preferred orientation
"""

from .curves import (
    STIMULI,
    Angle,
    Curve,
    Line,
    Stimulus,
    draw,
    grid,
    make_stimulus,
    register_stimulus,
    render,
    stimulus_class,
)
from .families import Family, TuningStats, discover_family, find_family, tuning_stats
from .joint import JointTuning, centered_crop, joint_tuning, rotate_images
from .report import TuningReport, tuning_report
from .responses import rf_centers, rf_offset, stimulus_responses, unit_responses
from .tuning import TuningMap, radial_tuning, tuning_map

__all__ = ["STIMULI", "Angle", "Curve", "Family", "JointTuning", "Line", "Stimulus", "TuningMap", "TuningReport",
           "TuningStats", "centered_crop", "discover_family", "draw", "find_family", "grid", "joint_tuning",
           "make_stimulus", "radial_tuning", "register_stimulus", "render", "rf_centers", "rf_offset",
           "rotate_images", "stimulus_class", "stimulus_responses", "tuning_map", "tuning_report", "tuning_stats",
           "unit_responses"]
