"""The model registry: ``load_model(name)`` for the embedded default, torchvision and timm architectures.

Names resolve in this order: the embedded models, then torchvision's classification models, then timm's.
Prefix a name with ``torchvision:`` or ``timm:`` to choose explicitly (``timm:resnet18``). Nothing is ever
downloaded: torchvision and timm architectures get random weights unless ``weights=PATH`` names a local
state_dict or checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, unknown
from .labels import imagenet_labels
from .loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel

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


def read_checkpoint(path: str | Path) -> object:
    """What a weights file holds (``torch.load`` on the CPU, ``weights_only``), with one error for every reader.

    Raises:
        ModelError: the file is missing or cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is reported the same way
        raise ModelError(f"cannot read weights file {p}: {exc}") from None


def _read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    obj = read_checkpoint(p)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p} holds no state_dict (expected a dict of tensors, or a checkpoint with a "
                         "'state_dict'/'model' entry)")
    prefixes = ("module.", "model.", "_orig_mod.")
    for pre in prefixes:
        if obj and all(k.startswith(pre) for k in obj):
            obj = {k[len(pre):]: v for k, v in obj.items()}
    return obj


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state_dict/checkpoint file into ``module`` strictly, with a readable error on mismatch."""
    sd = _read_checkpoint(path)
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if bad:
            parts.append(f"{len(bad)} with other shapes (e.g. {'; '.join(bad[:3])})")
        raise ModelError(f"weights in {path} do not fit this architecture: " + ", ".join(parts))
    module.load_state_dict(sd, strict=True)


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


def load_model(name: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str | torch.device = "cpu",
               num_classes: int | None = None) -> LoadedModel:
    """Build a model by name, in eval mode on ``device``.

    Args:
        name: ``"efficientnet_lite0"`` (embedded, pretrained), a torchvision or timm architecture name, or
            ``"torchvision:NAME"`` / ``"timm:NAME"``.
        weights: a local state_dict or checkpoint file. Without it, torchvision/timm models are RANDOM.
        device: where to put the model (``"cpu"``, ``"cuda"``, ...).
        num_classes: output classes for non-embedded architectures (default 1000, labelled with ImageNet).

    Raises:
        ModelError: unknown name (with close matches) or weights that do not fit.
    """
    source, arch = _resolve(name)
    size, mean, std = (224, 224), IMAGENET_MEAN, IMAGENET_STD
    if source == "embedded":
        module = EMBEDDED[arch]()
        pretrained, note = True, "embedded"
    elif source == "torchvision":
        import torchvision

        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        if arch in ("googlenet", "inception_v3"):
            kwargs["init_weights"] = True
            kwargs["aux_logits"] = False
        try:
            module = torchvision.models.get_model(arch, weights=None, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"cannot build torchvision model {arch!r}: {exc}") from None
        if arch == "inception_v3":
            size = (299, 299)
        pretrained, note = False, None
    else:
        import timm

        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        module = timm.create_model(arch, pretrained=False, **kwargs)
        cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", {}) or {}
        if "input_size" in cfg:
            size = tuple(int(s) for s in cfg["input_size"][1:])  # type: ignore[assignment]
        mean = tuple(cfg.get("mean", mean))
        std = tuple(cfg.get("std", std))
        pretrained, note = False, None
    if weights is not None:
        load_weights(module, weights)
        note = str(weights)
        pretrained = True
    module = module.to(device).eval()
    n_out = num_classes if num_classes is not None else 1000
    labels = list(imagenet_labels()) if n_out == 1000 else None
    return LoadedModel(module=module, name=arch, input_size=size, mean=mean, std=std, labels=labels,
                       pretrained=pretrained, weights=note, source=source)
