"""Attribution: which pixels (or which positions of a layer) made the network produce its answer.

    from cnnscope import load_model, unit
    from cnnscope.attribution import attribute
    m = load_model()
    a = attribute(m, "photo.jpg", "gradcam")         # top-1 class, layer chosen automatically
    a.values.shape, a.layer                          # [1, 1, 7, 7], 'bn2'
    attribute(m, "photo.jpg", "integrated_gradients", target="tabby", n_steps=32)
    attribute(m, "photo.jpg", "saliency", target=unit("blocks.5.0", 12))

Every method is one class registered with :func:`register_method` (:func:`list_methods` reads the registry);
:func:`attribute` returns an :class:`Attribution` with raw signed values, and :mod:`.display` turns them into
heatmaps and overlays.
"""

from .base import COMMON_OPTIONS, METHODS, Attribution, Method, attribute, get_method, list_methods, register_method
from .baselines import make_baseline
from .cam import CamMethod, auto_layer
from .display import colorize, display_options, overlay, to_heatmap, upsample
from .explain import Explanation, explain
from .gradient import COMPLETENESS_THRESHOLD, CompletenessWarning, GradientMethod, quadrature
from .perturbation import rise_masks, window_starts
from .targets import Target, TargetError

__all__ = ["COMMON_OPTIONS", "COMPLETENESS_THRESHOLD", "METHODS", "Attribution", "CamMethod", "CompletenessWarning",
           "Explanation", "GradientMethod", "Method",
           "Target", "TargetError", "attribute", "auto_layer", "colorize", "display_options", "explain",
           "get_method", "list_methods", "make_baseline", "overlay", "quadrature",
           "register_method", "rise_masks", "to_heatmap", "upsample", "window_starts"]
