"""The capture layer: the only code in cnnscope that registers hooks on a model (docs/ARCHITECTURE.md, rule 1)."""

from .capture import REUSE_MODES, Capture, capture, declare_layout, declared_layouts
from .conv_bn import conv_bn_pairs
from .layers import LayerInfo, input_channels, list_layers
from .layout import LayoutProbe
from .patch import patch_outputs
from .relu_rules import RULES, NoReLUError, relu_modules, relu_rule
from .state import (
                    ACTIVATION_TYPES,
                    StopForward,
                    canonical_layer,
                    check_hookable,
                    evaluating,
                    first_tensor,
                    is_activation,
                    layer_aliases,
                    layer_names,
                    module_device,
                    module_dtype,
                    module_of,
                    module_state,
                    resolve_layers,
                    set_layer_aliases,
)
from .timing import LayerTime, layer_times

__all__ = ["ACTIVATION_TYPES", "Capture", "LayerInfo", "LayerTime", "LayoutProbe", "NoReLUError", "REUSE_MODES",
           "RULES", "StopForward", "capture", "conv_bn_pairs",
           "declare_layout", "declared_layouts", "evaluating", "first_tensor", "input_channels",
           "is_activation", "layer_names", "layer_times", "list_layers", "module_device", "module_dtype", "module_of",
           "module_state", "patch_outputs", "relu_modules", "relu_rule", "resolve_layers",
           "canonical_layer", "check_hookable", "layer_aliases", "set_layer_aliases"]
