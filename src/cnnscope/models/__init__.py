"""Models: the named zoo (embedded pretrained default, torchvision, timm), user modules, labels, the adapter."""

from .adapter import ModelLike, as_model
from .checkpoints import read_checkpoint
from .devices import resolve_device
from .fingerprint import fingerprint
from .labels import imagenet_labels
from .loaded import IMAGENET_MEAN, IMAGENET_STD, AssumptionWarning, LoadedModel, wrap
from .registry import DEFAULT_MODEL, list_models, load_model, load_weights

__all__ = ["DEFAULT_MODEL", "IMAGENET_MEAN", "IMAGENET_STD", "AssumptionWarning", "LoadedModel", "ModelLike",
           "as_model", "fingerprint", "imagenet_labels", "list_models", "load_model", "load_weights", "read_checkpoint",
           "resolve_device", "wrap"]
