"""Models: the named zoo (embedded pretrained default, torchvision, timm), user modules, labels."""

from .labels import imagenet_labels
from .loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, wrap
from .registry import DEFAULT_MODEL, list_models, load_model, load_weights

__all__ = ["DEFAULT_MODEL", "IMAGENET_MEAN", "IMAGENET_STD", "LoadedModel", "imagenet_labels", "list_models",
           "load_model", "load_weights", "wrap"]
