"""The model registry: ``load_model(name)`` for the embedded default, torchvision and timm architectures.

Names resolve in this order: the embedded models, then torchvision's classification models, then timm's.
Prefix a name with ``torchvision:`` or ``timm:`` to choose explicitly (``timm:resnet18``). Nothing is ever
downloaded: torchvision and timm architectures get random weights unless ``weights=PATH`` names a local
state_dict or checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, unknown
from .checkpoints import classifier_key, load_weights, read_checkpoint, read_model_file, read_state_dict
from .devices import resolve_device
from .labels import imagenet_labels
from .loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel

__all__ = ["DEFAULT_MODEL", "EMBEDDED", "list_models", "load_model", "load_weights", "read_checkpoint"]

#: Embedded models: name -> builder returning a pretrained module. The first one is the default.
EMBEDDED: dict[str, Callable[[], nn.Module]] = {}
DEFAULT_MODEL = "efficientnet_lite0"


def _register_embedded() -> None:
    from . import efficientnet_lite0

    EMBEDDED["efficientnet_lite0"] = efficientnet_lite0.build


_register_embedded()


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Classification architectures torchvision can build (random init here)."""
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


@lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every architecture name timm can build."""
    import timm

    return tuple(timm.list_models())


def list_models(include_timm: bool = True) -> list[dict]:
    """All loadable names with ``{"name", "source", "pretrained"}`` (pretrained only for embedded ones)."""
    rows = [{"name": n, "source": "embedded", "pretrained": True} for n in EMBEDDED]
    rows += [{"name": n, "source": "torchvision", "pretrained": False} for n in torchvision_names()]
    if include_timm:
        rows += [{"name": n, "source": "timm", "pretrained": False} for n in timm_names()]
    return rows


def _resolve(name: str) -> tuple[str, str]:
    if ":" in name:
        source, arch = name.split(":", 1)
        table = {"torchvision": torchvision_names, "timm": timm_names}
        if source == "embedded":
            if arch not in EMBEDDED:
                raise ModelError(unknown("embedded model", arch, EMBEDDED))
            return "embedded", arch
        if source not in table:
            raise ModelError(f"unknown model source {source!r}; use torchvision: or timm:")
        if arch not in table[source]():
            raise ModelError(unknown(f"{source} model", arch, table[source]()))
        return source, arch
    if name in EMBEDDED:
        return "embedded", name
    if name in torchvision_names():
        return "torchvision", name
    if name in timm_names():
        return "timm", name
    raise ModelError(unknown("model", name, list(EMBEDDED) + list(torchvision_names()) + list(timm_names())))


#: suffixes that make an existing file named as MODEL a model file rather than a registry name
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".pkl", ".bin", ".ckpt", ".tar")


def is_model_file(name: str | Path) -> bool:
    """Whether ``name`` names a model file: a path with a directory part or a suffix (``net.pt``, ``./net``).

    Raises:
        ModelError: ``name`` looks like such a path but there is no file there.
    """
    text = str(name)
    path = Path(text)
    if re.match(r"^[a-z][a-z0-9_-]+:", text) and not path.exists():  # a source prefix: timm:NAME, hf-hub:...
        return False
    looks = "/" in text or "\\" in text or path.suffix.lower() in MODEL_FILE_SUFFIXES
    if not looks:
        return False
    if not path.is_file():
        raise ModelError(f"model file {text} does not exist" if not path.exists() else f"{text} is not a file")
    return True


def _build(source: str, arch: str, num_classes: int | None, trained: bool
           ) -> tuple[nn.Module, tuple[int, int], tuple[float, ...], tuple[float, ...], list[str]]:
    """The module of a registry architecture, its input size, mean, std and what was set on its behalf."""
    size, mean, std = (224, 224), IMAGENET_MEAN, IMAGENET_STD
    notes: list[str] = []
    if source == "embedded":
        return EMBEDDED[arch](), size, mean, std, notes
    kwargs: dict[str, object] = {} if num_classes is None else {"num_classes": num_classes}
    if source == "torchvision":
        import torchvision

        if arch in ("googlenet", "inception_v3"):
            kwargs["init_weights"] = not trained
            kwargs["aux_logits"] = False
            if trained:  # torchvision.models.googlenet(weights=...) does the same: its trained files expect it
                kwargs["transform_input"] = True
                notes.append(f"{arch} built with transform_input=True, as torchvision does for trained weights")
        try:
            module = torchvision.models.get_model(arch, weights=None, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"cannot build torchvision model {arch!r}: {exc}") from None
        if arch == "inception_v3":
            size = (299, 299)
        return module, size, mean, std, notes
    import timm

    module = timm.create_model(arch, pretrained=False, **kwargs)
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", {}) or {}
    if "input_size" in cfg:
        size = tuple(int(s) for s in cfg["input_size"][1:])  # type: ignore[assignment]
    return module, size, tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std)), notes


def _load_file(path: str, weights: str | Path | None, device: torch.device, num_classes: int | None,
               trust_pickle: bool) -> LoadedModel:
    from .adapter import wrap_plain

    if num_classes is not None:
        raise ModelError(f"num_classes applies to architectures built by name; the model in {path} has its own "
                         "classifier")
    module = read_model_file(path, device=device, trust_pickle=trust_pickle)
    if weights is not None:
        load_weights(module, weights, trust_pickle=trust_pickle)
    module.eval()
    m = wrap_plain(module, None, name=Path(path).name)
    m.weights, m.source = str(weights or path), "file"
    return m


def load_model(name: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str | torch.device = "cpu",
               num_classes: int | None = None, *, trust_pickle: bool = False) -> LoadedModel:
    """Build a model by name (or read it from a model file), in eval mode on ``device``.

    Args:
        name: ``"efficientnet_lite0"`` (embedded, pretrained), a torchvision or timm architecture name,
            ``"torchvision:NAME"`` / ``"timm:NAME"``, or the path of a model file (a TorchScript archive, or a
            pickled module with ``trust_pickle``; a path has a directory part or a suffix such as ``.pt``). A model
            file is wrapped like a plain module (:func:`~cnnscope.models.as_model`): its input size and
            normalisation are assumed and said.
        weights: a local state_dict or checkpoint file. Without it, torchvision/timm models are RANDOM.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``; checked before anything is built.
        num_classes: output classes for torchvision/timm architectures. Default: read off the classifier's weight
            in ``weights`` (said in :attr:`LoadedModel.notes`), else 1000 (labelled with ImageNet's classes).
        trust_pickle: read files holding pickled Python objects (``torch.save(model)``); only for files you trust.

    Raises:
        ModelError: unknown name (with close matches), unknown or absent device, an unreadable file, or weights
            that do not fit.
    """
    dev = resolve_device(device)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    if is_model_file(name):
        return _load_file(str(name), weights, dev, num_classes, trust_pickle)
    source, arch = _resolve(name)
    if source == "embedded" and num_classes is not None:
        raise ModelError(f"the embedded {arch} has ImageNet's 1000 classes; num_classes applies to torchvision/timm "
                         f"architectures (timm:{arch} builds it with random weights)")
    sd = None if weights is None else read_state_dict(weights, trust_pickle=trust_pickle)
    module, size, mean, std, notes = _build(source, arch, num_classes, trained=sd is not None)
    key = classifier_key(module)
    if sd is not None and num_classes is None and source != "embedded" and key in sd and sd[key].ndim >= 1:
        found, own = int(sd[key].shape[0]), int(module.state_dict()[key].shape[0])
        if found != own:
            module, size, mean, std, notes = _build(source, arch, found, trained=True)
            notes.append(f"{found} classes, read from the shape of {key} in {weights}")
    if sd is not None:
        load_weights(module, sd, where=str(weights))
    module = module.to(dev).eval()
    n_out = int(module.state_dict()[key].shape[0]) if key is not None else num_classes or 1000
    labels = list(imagenet_labels()) if n_out == 1000 else None
    pretrained = source == "embedded" or sd is not None
    note = "embedded" if sd is None and source == "embedded" else None if sd is None else str(weights)
    m = LoadedModel(module=module, name=arch, input_size=size, mean=mean, std=std, labels=labels,
                    pretrained=pretrained, weights=note, source=source)
    m.notes.extend(notes)
    return m
