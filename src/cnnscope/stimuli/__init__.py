"""Synthetic stimuli and tuning: the Curve Detectors toolkit (Cammarata et al., *Curve Detectors*, Distill 2020).

- :mod:`.curves`: anti-aliased curves, angles (sharp or rounded) and lines; the :data:`STIMULI` registry.
- :mod:`.responses`: batched forward passes that read units at their receptive-field centre.
- :mod:`.tuning`: orientation x radius heatmaps (in standard deviations above the dataset mean) and radial
  tuning curves.
- :mod:`.joint`: joint tuning curves from rotated dataset examples.
- :mod:`.families`: orientation selectivity and automatic discovery of orientation-tuned families.

Example:
    >>> from cnnscope import load_model
    >>> from cnnscope.stimuli import discover_family
    >>> m = load_model()
    >>> family, tmap = discover_family(m, "blocks.3.1.bn1.act", k=8, pre_activation=True, size=128)
    >>> family.units, family.stats.preferred          # units ordered by preferred orientation
"""

from .curves import STIMULI, Angle, Curve, Line, Stimulus, grid, make_stimulus, render, stimulus_class
from .families import Family, TuningStats, discover_family, find_family, tuning_stats
from .joint import JointTuning, centered_crop, joint_tuning, rotate_images
from .responses import rf_centers, rf_offset, stimulus_responses, unit_responses
from .tuning import TuningMap, radial_tuning, tuning_map

__all__ = ["STIMULI", "Angle", "Curve", "Family", "JointTuning", "Line", "Stimulus", "TuningMap", "TuningStats",
           "centered_crop", "discover_family", "find_family", "grid", "joint_tuning", "make_stimulus",
           "radial_tuning", "render", "rf_centers", "rf_offset", "rotate_images", "stimulus_class",
           "stimulus_responses", "tuning_map", "tuning_stats", "unit_responses"]
