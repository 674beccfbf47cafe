"""cnnscope: see what a convolutional network sees and learns.

The core API in a few lines::

    import cnnscope
    m = cnnscope.load_model()                       # embedded ImageNet-pretrained EfficientNet-Lite0
    m.predict(cnnscope.sample_images()["chelsea"])  # [[(285, 'Egyptian cat', 0.6...), ...]]
    cnnscope.list_layers(m.module, m.input_size)    # names, kinds and output shapes
    with cnnscope.Capture(m.module, "blocks.4.0") as cap:
        cap.run(m.preprocess("photo.jpg"))
    cap["blocks.4.0"].shape                          # torch.Size([1, 112, 14, 14])
"""

from .capture import Capture, LayerInfo, capture, list_layers, relu_rule
from .errors import CnnscopeError, ImageError, LayerError, MethodError, ModelError
from .images import load_image, sample_images
from .models import LoadedModel, imagenet_labels, list_models, load_model, wrap

__version__ = "0.1.0"

__all__ = ["Capture", "CnnscopeError", "ImageError", "LayerError", "LayerInfo", "LoadedModel", "MethodError",
           "ModelError", "__version__", "capture", "imagenet_labels", "list_layers", "list_models", "load_image",
           "load_model", "relu_rule", "sample_images", "wrap"]
