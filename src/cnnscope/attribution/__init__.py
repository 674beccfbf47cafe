"""Attribution: which pixels (or which positions of a layer) made the network produce its answer.

    from cnnscope import load_model
    from cnnscope.attribution import attribute, unit
    m = load_model()
    x = m.preprocess("photo.jpg")
    a = attribute(m, x, "gradcam")                  # top-1 class, layer chosen automatically
    a.values.shape, a.layer                          # [1, 1, 7, 7], 'bn2'
    attribute(m, x, "integrated_gradients", target="tabby", n_steps=32)
    attribute(m, x, "saliency", target=unit("blocks.5.0", 12))

Every method is registered by name (:func:`list_methods`); :func:`attribute` returns an :class:`Attribution`
with raw signed values, and :mod:`.display` turns them into heatmaps and overlays.
"""

from . import cam, gradient, perturbation  # noqa: F401 - registers the methods
from .base import COMMON_OPTIONS, METHODS, Attribution, Method, attribute, get_method, list_methods, register
from .baselines import make_baseline
from .cam import CamMethod, auto_layer, layer_gradients
from .display import colorize, display_options, overlay, to_heatmap, upsample
from .explain import Explanation, explain
from .gradient import GradientMethod, input_gradients, quadrature
from .perturbation import rise_masks, window_starts
from .targets import Target, TargetError, Unit, parse_target, unit

__all__ = ["COMMON_OPTIONS", "METHODS", "Attribution", "CamMethod", "Explanation", "GradientMethod", "Method",
           "Target", "TargetError", "Unit", "attribute", "auto_layer", "colorize", "display_options", "explain",
           "get_method", "input_gradients", "layer_gradients", "list_methods", "make_baseline",
           "overlay", "parse_target", "quadrature", "register", "rise_masks", "to_heatmap", "unit", "upsample",
           "window_starts"]
