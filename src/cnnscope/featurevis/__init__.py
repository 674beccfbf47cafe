"""Feature visualization by optimisation (Olah, Mordvintsev, Schubert, *Feature Visualization*, Distill 2017).

::

    from cnnscope import load_model, unit
    from cnnscope.featurevis import channel, render, total_variation
    m = load_model()
    res = render(m, [channel("blocks.4.0", c) for c in range(8)], recipe="lucid", steps=256)
    res.images.shape, res.activations           # (8, 128, 128, 3) uint8, a float32 tensor [8]
    render(m, channel("blocks.4.0", 3) - 1.0 * total_variation(), recipe="plain")  # penalty weights of order 1
    render(m, unit("blocks.4.0", 3, position="center"))   # a cnnscope.Unit: its neuron
    render(m, channel("blocks.4.0", 3), init="photo.jpg")  # start from a picture (a learned prior)
    interpolate(m, channel("blocks.4.0", 3), channel("blocks.4.0", 7), frames=6)  # frames sharing parameters
    semantic_dictionary(m, "photo.jpg", "blocks.4.0", k=3)  # each position's top units, visualized

Objectives are data with an algebra (:mod:`.objectives`, :mod:`.penalties`), registered by
:func:`register_objective` in :data:`OBJECTIVES` (:mod:`.registry`: specs, command-line text, listing);
parameterizations (:mod:`.param`) and transforms (:mod:`.transforms`) are ``nn.Module``\\ s; recipes
(:mod:`.recipes`) bundle them.
"""

from .algebra import OBJECTIVES, register_objective
from .dictionary import SemanticDictionary, semantic_dictionary
from .filters import BilateralBlur, GaussianBlur
from .interpolate import Interpolation, SharedFourierImage, interpolate
from .objectives import (
    INPUT,
    OUTPUT,
    Objective,
    channel,
    class_logit,
    direction,
    direction_neuron,
    diversity,
    from_unit,
    layer,
    neuron,
    unit_objectives,
)
from .param import PARAMS, FourierImage, ImageParam, MacoImage, PixelImage, make_param, register_param
from .penalties import blur, l1, l2, total_variation
from .recipes import CLASS_RECIPE, DEFAULT_RECIPE, OPTIMIZERS, RECIPES, Recipe, get_recipe, register_recipe
from .registry import describe_objectives, from_spec, parse_objective
from .render import RenderResult, measure, render
from .spectra import high_frequency_share, natural_magnitude
from .transforms import (
    PRESETS,
    CropBack,
    Jitter,
    Noise,
    Pad,
    Pipeline,
    RandomCrop,
    RandomRotate,
    RandomScale,
    Resize,
    Transform,
    register_preset,
    standard,
)

__all__ = [
    "CLASS_RECIPE", "DEFAULT_RECIPE", "INPUT", "OBJECTIVES", "OPTIMIZERS", "OUTPUT", "PARAMS", "PRESETS", "RECIPES",
    "BilateralBlur", "CropBack", "FourierImage", "GaussianBlur", "ImageParam", "Interpolation", "Jitter", "MacoImage",
    "Noise", "SemanticDictionary", "SharedFourierImage",
    "Objective", "Pad", "Pipeline", "PixelImage", "RandomCrop", "RandomRotate", "RandomScale", "Recipe", "Resize",
    "RenderResult", "Transform", "blur", "channel", "class_logit", "describe_objectives", "direction",
    "direction_neuron", "diversity", "from_spec", "from_unit", "get_recipe", "high_frequency_share", "interpolate",
    "l1", "l2", "layer", "make_param", "measure", "natural_magnitude", "neuron", "parse_objective",
    "register_objective", "register_param", "register_preset", "register_recipe", "render", "semantic_dictionary",
    "standard", "total_variation",
    "unit_objectives",
]
