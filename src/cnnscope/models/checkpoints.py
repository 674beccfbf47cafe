"""Model and weights files: what a file holds, read with one clear error for every kind of file.

A file is one of: a TorchScript archive (``torch.jit.save``: a whole model, loaded as a model), a ``torch.save``
archive or legacy pickle holding tensors only (a state_dict or a checkpoint dict: read with ``weights_only``), or
one that also holds pickled Python objects (``torch.save(model)``, checkpoints with custom classes). Unpickling such
a file can run code, so it is read only when the caller says it trusts the file (``trust_pickle=True``, CLI
``--trust-pickle``). Anything else is "not a PyTorch checkpoint", said in one line.

Weights files are loaded strictly, with two exceptions said in the docs (docs/models.md): the auxiliary training
heads of torchvision's GoogLeNet/Inception-v3 (``aux1.``, ``aux2.``, ``AuxLogits.``), absent from the models cnnscope
builds, are dropped from the file; and :func:`~cnnscope.models.load_model` reads the class count off the classifier's
weight (:func:`classifier_key`) when ``num_classes`` is not given.
"""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError

#: key prefixes of the auxiliary classifiers torchvision's official GoogLeNet / Inception-v3 state_dicts carry
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")

TRUST_HINT = "--trust-pickle (Python: trust_pickle=True)"


def file_kind(path: str | Path) -> str:
    """``"torchscript"``, ``"torch"`` (a ``torch.save`` zip archive), ``"legacy"`` (an old pickle or tar format) or
    ``"other"`` (not something PyTorch wrote).

    Raises:
        ModelError: the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"file {p} does not exist" if not p.exists() else f"{p} is not a file")
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (OSError, zipfile.BadZipFile):
            return "other"
        if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        return "torch" if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) else "other"
    with p.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # a pickle protocol marker: torch's format before 1.6
        return "legacy"
    return "legacy" if tarfile.is_tarfile(p) else "other"


def _not_torch(p: Path) -> ModelError:
    return ModelError(f"{p} is not a PyTorch checkpoint (expected a file written by torch.save or torch.jit.save)")


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> object:
    """What a weights file holds (``torch.load`` on the CPU), with one error for every reader.

    Args:
        path: a ``torch.save`` file.
        trust_pickle: also read files that hold pickled Python objects (``torch.save(model)``); only for files
            you trust, since unpickling can run code.

    Raises:
        ModelError: the file is missing, is not a PyTorch checkpoint, is a TorchScript model, holds pickled objects
            while ``trust_pickle`` is off, or cannot be read.
    """
    p = Path(path)
    kind = file_kind(p)
    if kind == "other" and p.suffix.lower() == ".safetensors":
        return _read_safetensors(p)
    if kind == "other":
        raise _not_torch(p)
    if kind == "torchscript":
        raise ModelError(f"{p} is a TorchScript model (torch.jit.save), not a weights file; give it as the model "
                         f"itself (cnnscope predict {p} IMAGE; Python: cnnscope.load_model('{p}'))")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise ModelError(f"cannot read {p}: it is damaged or not a PyTorch checkpoint ({_first_line(exc)})"
                             ) from None
    except Exception as exc:  # noqa: BLE001 - torch reports damaged files with many exception types
        raise ModelError(f"cannot read {p}: it is damaged or not a PyTorch checkpoint ({_first_line(exc)})") from None
    if not trust_pickle:
        raise ModelError(f"{p} holds pickled Python objects besides tensors (e.g. a whole model saved with "
                         f"torch.save(model)); unpickling can run code, so cnnscope reads it only with {TRUST_HINT}, "
                         "for a file you trust")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a missing class, a damaged file: one line either way
        raise ModelError(f"cannot unpickle {p}: {_first_line(exc)} (the code that defined its classes must be "
                         "importable; or save a state_dict instead)") from None


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (tensors only, nothing to unpickle: the format timm's Hugging Face weights use)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(f"{p} is a safetensors file; reading it needs the package safetensors (pip install "
                         "safetensors)") from None
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged header or a truncated file: one line
        raise ModelError(f"cannot read {p}: it is damaged or not a safetensors file ({_first_line(exc)})") from None


#: ``format`` values of training checkpoints that hold their architecture -> the reader that rebuilds the model
#: (imported only when such a file is met; the reader lives with the code that writes the format)
CHECKPOINT_FORMATS: dict[str, str] = {"cnnscope-zf-smallconvnet-1": "cnnscope.zf.train:load_checkpoint"}


def checkpoint_format(path: str | Path) -> str | None:
    """The ``format`` of a training checkpoint that holds its architecture (:data:`CHECKPOINT_FORMATS`), or
    ``None`` for any other file (whatever it is: :func:`read_model_file` says)."""
    try:
        if file_kind(path) not in ("torch", "legacy"):
            return None
        obj = read_checkpoint(path)
    except ModelError:
        return None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    return fmt if isinstance(fmt, str) and fmt in CHECKPOINT_FORMATS else None


def read_training_checkpoint(path: str | Path, fmt: str, device: torch.device | str = "cpu"):
    """The ``LoadedModel`` of a training checkpoint in format ``fmt`` (see :data:`CHECKPOINT_FORMATS`)."""
    import importlib

    module, _, func = CHECKPOINT_FORMATS[fmt].partition(":")
    return getattr(importlib.import_module(module), func)(path, device=device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict in a weights file: a plain one, one under a checkpoint key (``state_dict``, ``model``, ...),
    or a pickled module's (``trust_pickle``); ``module.``/``model.``/``_orig_mod.`` prefixes are removed.

    Raises:
        ModelError: as :func:`read_checkpoint`, or the file holds no state_dict.
    """
    p = Path(path)
    obj = read_checkpoint(p, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                obj = obj[key].state_dict() if isinstance(obj[key], nn.Module) else obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p} holds no state_dict (expected a dict of tensors, or a checkpoint with a "
                         "'state_dict'/'model' entry)")
    for pre in ("module.", "model.", "_orig_mod."):
        if all(k.startswith(pre) for k in obj):
            obj = {k[len(pre):]: v for k, v in obj.items()}
    return obj


def classifier_key(module: nn.Module) -> str | None:
    """State-dict key of the classifier's weight: the last ``Linear``/``Conv2d`` registered (``None`` if none)."""
    last = None
    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = name
    return None if last is None else f"{last}.weight" if last else "weight"


def load_weights(module: nn.Module, weights: str | Path | dict[str, torch.Tensor], *,
                 trust_pickle: bool = False, where: str | None = None) -> None:
    """Load a state_dict (or the file holding one) into ``module`` strictly, with a readable error on mismatch.

    The auxiliary heads of official GoogLeNet/Inception-v3 files (:data:`AUX_PREFIXES`) are dropped when ``module``
    has none: they only serve training and never change the model's output.

    Args:
        module: the module to load into.
        weights: a state_dict, or a file holding one (see :func:`read_state_dict`).
        trust_pickle: see :func:`read_checkpoint`.
        where: the file a given state_dict came from, for the error message.

    Raises:
        ModelError: the file cannot be read (see :func:`read_checkpoint`) or its tensors do not fit ``module``.
    """
    where = where or ("the state_dict" if isinstance(weights, dict) else str(weights))
    sd = dict(weights) if isinstance(weights, dict) else read_state_dict(weights, trust_pickle=trust_pickle)
    own = module.state_dict()
    for pre in AUX_PREFIXES:
        if not any(k.startswith(pre) for k in own):
            sd = {k: v for k, v in sd.items() if not k.startswith(pre)}
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
        raise ModelError(f"weights in {where} do not fit this architecture: " + ", ".join(parts))
    module.load_state_dict(sd, strict=True)


def read_model_file(path: str | Path, *, device: torch.device | str = "cpu", trust_pickle: bool = False
                    ) -> nn.Module:
    """The module in a model file: a TorchScript archive, or a pickled module (``trust_pickle``), on ``device``.

    Raises:
        ModelError: the file holds weights only (name the architecture and give the file as weights), or see
            :func:`read_checkpoint`.
    """
    p = Path(path)
    if file_kind(p) == "torchscript":
        try:
            return torch.jit.load(str(p), map_location=device)
        except Exception as exc:  # noqa: BLE001 - a damaged archive or one built by a newer PyTorch
            raise ModelError(f"cannot load the TorchScript model {p}: {_first_line(exc)}") from None
    obj = read_checkpoint(p, trust_pickle=trust_pickle)
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        obj = obj["model"]
    if not isinstance(obj, nn.Module):
        raise ModelError(f"{p} holds weights only, not a model; name the architecture and give the file as weights "
                         f"(cnnscope predict resnet18 IMAGE --weights {p}; Python: load_model('resnet18', "
                         f"weights='{p}'))")
    return obj.to(device)
