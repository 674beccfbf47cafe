"""Synthetic stimuli and tuning: the Curve Detectors toolkit (Cammarata et al., *Curve Detectors*, Distill 2020).

- :mod:`.curves`: anti-aliased curves, angles (sharp or rounded) and lines; the :data:`STIMULI` registry (a new
  kind is one class decorated with :func:`register_stimulus`).
- :mod:`.responses`: batched forward passes that read channels at one position (the receptive-field centre).
- :mod:`.tuning`: orientation x radius heatmaps (in standard deviations above the dataset mean) and radial
  tuning curves.
- :mod:`.joint`: joint tuning curves from rotated dataset examples.
- :mod:`.families`: orientation selectivity and automatic discovery of orientation-tuned families.
- :mod:`.report`: all of it for one layer, with the dataset statistics (``cnnscope tuning``).
- :mod:`.combing`: combing (short perpendicular teeth along an arc) and concentric-ring stimuli.
- :mod:`.flow`: the attribution between the curve families of two layers, as a graph.
- :mod:`.editing`: unit ablation and weight editing (undone afterwards) with the tuning before and after.
- :mod:`.spline`: differentiable Bezier curve stimuli optimised to the curve a unit prefers.
- :mod:`.tracing`: curves traced in an image along a family's strongest response, compared with Canny edges.
- :mod:`.curvenet`: the hand-built curve-detector network; :mod:`.equivariance`: weight-level equivariance.

Example:
    >>> from cnnscope import load_model
    >>> from cnnscope.stimuli import discover_family
    >>> m = load_model()
    >>> family, tmap = discover_family(m, "blocks.3.1.bn1.act", k=8, pre_activation=True, size=128)
    >>> family.channels, family.stats.preferred      # channels ordered by preferred orientation
"""

from .combing import Comb, Concentric
from .curvenet import CurveNet, curve_network
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
from .editing import EditEffect, WeightEdit, edit_effect, edited
from .equivariance import Equivariance, kernel_equivariance, weight_equivariance
from .families import (
    UNIT_CLASSES,
    Family,
    TuningStats,
    UnitClasses,
    classify_units,
    concentric_ratios,
    discover_family,
    find_family,
    tuning_stats,
)
from .flow import FamilyFlow, family_flow
from .joint import JointTuning, centered_crop, joint_tuning, rotate_images
from .report import TuningReport, tuning_report
from .responses import rf_centers, rf_offset, stimulus_responses, unit_responses
from .spline import PreferredCurve, prefer_curve
from .tracing import Traces, compare_with_canny, family_maps, trace_curves
from .tuning import TuningMap, radial_tuning, tuning_map

__all__ = ["Angle", "Comb", "Concentric", "Curve", "CurveNet", "EditEffect", "Equivariance", "Family", "FamilyFlow",
           "JointTuning", "Line", "PreferredCurve", "STIMULI", "Stimulus", "Traces", "TuningMap", "TuningReport",
           "TuningStats", "UNIT_CLASSES", "UnitClasses", "WeightEdit", "centered_crop", "classify_units",
           "compare_with_canny", "concentric_ratios", "curve_network", "discover_family", "draw", "edit_effect",
           "edited", "family_flow", "family_maps", "find_family", "grid", "joint_tuning", "kernel_equivariance",
           "make_stimulus", "prefer_curve", "radial_tuning", "register_stimulus", "render", "rf_centers",
           "rf_offset", "rotate_images", "stimulus_class", "stimulus_responses", "trace_curves", "tuning_map",
           "tuning_report", "tuning_stats", "unit_responses", "weight_equivariance"]
