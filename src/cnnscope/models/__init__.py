"""Models: the named zoo (embedded pretrained default, torchvision, timm), user modules, labels, the adapter."""

from .adapter import ModelLike, as_model
from .fingerprint import fingerprint
from .labels import imagenet_labels
from .loaded import IMAGENET_MEAN, IMAGENET_STD, AssumptionWarning, LoadedModel, wrap
from .registry import DEFAULT_MODEL, list_models, load_model, load_weights

__all__ = ["DEFAULT_MODEL", "IMAGENET_MEAN", "IMAGENET_STD", "AssumptionWarning", "LoadedModel", "ModelLike",
           "as_model", "fingerprint", "imagenet_labels", "list_models", "load_model", "load_weights", "wrap"]
