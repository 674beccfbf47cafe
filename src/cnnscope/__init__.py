"""cnnscope: see what a convolutional network sees and learns.

The core API in a few lines::

    import cnnscope
    m = cnnscope.load_model()                       # embedded ImageNet-pretrained EfficientNet-Lite0
    m.predict(cnnscope.sample_images()["chelsea"])  # [[(285, 'Egyptian cat', 0.6...), ...]]
    cnnscope.list_layers(m.module, m.input_size)    # names, kinds and output shapes
    with cnnscope.Capture(m, "blocks.4.0") as cap:
        cap.run(m.preprocess("photo.jpg"))
    cap["blocks.4.0"].shape                          # torch.Size([1, 112, 14, 14])
"""

from .capture import Capture, LayerInfo, capture, list_layers, relu_rule
from .errors import CnnscopeError, ImageError, LayerError, MethodError, ModelError
from .images import load_image, sample_images
from .models import AssumptionWarning, LoadedModel, ModelLike, as_model, imagenet_labels, list_models, load_model, wrap
from .units import Unit, parse_channels, unit

__version__ = "0.1.0"

__all__ = ["AssumptionWarning", "Capture", "CnnscopeError", "ImageError", "LayerError", "LayerInfo", "LoadedModel",
           "MethodError", "ModelError", "ModelLike", "Unit", "__version__", "as_model", "capture", "imagenet_labels",
           "list_layers", "list_models", "load_image", "load_model", "parse_channels", "relu_rule", "sample_images",
           "unit", "wrap"]
