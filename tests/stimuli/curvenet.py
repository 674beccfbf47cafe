"""The hand-built curve-detecting CNN, now in the library (:mod:`cnnscope.stimuli.curvenet`); re-exported here so
the tests that import it from ``tests.stimuli.curvenet`` keep working."""

from cnnscope.stimuli.curvenet import CurveNet, arc_template, blob_template, curve_network

__all__ = ["CurveNet", "arc_template", "blob_template", "curve_network"]
