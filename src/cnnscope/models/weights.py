"""Pretrained weights by name, through the libraries' own mechanisms and their standard caches.

* torchvision: a name of the architecture's weights enum (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...,
  ``torchvision.models.get_model_weights``). The file is the last part of the weights' URL, cached in
  ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``); torchvision builds the model and loads it.
* timm: ``"DEFAULT"`` (the architecture's default pretrained tag) or a tag (``"a1_in1k"``). Weights on the Hugging
  Face Hub (``hf_hub_id``) are cached in the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``) as ``model.safetensors`` or ``pytorch_model.bin``; older ones at a URL in the torch
  hub cache like torchvision's. timm builds the model and loads the cached file.

A cached file is used without any network access. A missing one is downloaded by the library when the machine is
online (``torch.hub.download_url_to_file`` and ``huggingface_hub.hf_hub_download`` write to a temporary name and
rename); when that fails, :class:`~cnnscope.errors.ModelError` says in one line which file to place in which folder,
and no partial file is left in the cache. The preprocessing (input size, resize then centre crop, mean/std,
interpolation) and the labels come from the weights' metadata.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import ModelError, unknown

#: the name that picks the architecture's default (best) pretrained weights, in both libraries
DEFAULT = "DEFAULT"

#: files timm looks for in a Hugging Face repository, in its order of preference
HF_FILES = ("model.safetensors", "pytorch_model.bin")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


def looks_like_name(weights: object) -> bool:
    """Whether ``weights`` is a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, a timm tag) rather than a file:
    a string of letters, digits, ``_.-`` with no path separator, no weights-file suffix, and no such file here."""
    from .registry import MODEL_FILE_SUFFIXES

    if not isinstance(weights, str) or not _NAME.match(weights) or Path(weights).exists():
        return False
    return Path(weights).suffix.lower() not in (*MODEL_FILE_SUFFIXES, ".safetensors")


def torch_cache() -> Path:
    """Where torch hub (and so torchvision) caches weight files: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "huggingface" / "hub"


@dataclass
class WeightsFile:
    """One set of pretrained weights and where its file is (or would be) on this machine.

    Attributes:
        source: ``"torchvision"`` or ``"timm"``.
        arch: the architecture.
        name: the weights' full name (``"IMAGENET1K_V1"``; timm: ``"resnet50.a1_in1k"``).
        file: the file's name (``"resnet18-f37072fd.pth"``, ``"model.safetensors"``).
        folder: the cache folder that holds (or would hold) it.
        path: the cached file, ``None`` when it is not here.
        origin: where it is downloaded from (a URL or ``hf-hub:REPO``).
        repo: the Hugging Face repository (``None`` for a URL).
    """

    source: str
    arch: str
    name: str
    file: str
    folder: Path
    path: Path | None
    origin: str
    repo: str | None = None

    @property
    def cached(self) -> bool:
        """Whether the file is here (no download needed)."""
        return self.path is not None

    def to_dict(self) -> dict:
        return {"name": self.name, "file": self.file, "cached": str(self.path) if self.path else None,
                "folder": str(self.folder), "origin": self.origin}


# -- torchvision -----------------------------------------------------------------------------------------------
def torchvision_enum(arch: str):
    """The weights enum of a torchvision architecture."""
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(arch)
    except (ValueError, KeyError):
        raise ModelError(f"torchvision has no pretrained weights for {arch!r}") from None


def torchvision_member(arch: str, name: str):
    """The enum member ``name`` (``"DEFAULT"``, ``"IMAGENET1K_V1"`` or ``"ResNet18_Weights.IMAGENET1K_V1"``)."""
    enum = torchvision_enum(arch)
    key = name.split(".", 1)[1] if name.startswith(f"{enum.__name__}.") else name
    names = list(enum.__members__)
    if key not in enum.__members__:
        raise ModelError(unknown(f"torchvision weights of {arch}", name, names))
    return enum[key]


def torchvision_file(arch: str, member) -> WeightsFile:  # noqa: ANN001 - a torchvision WeightsEnum member
    """Where torchvision caches ``member``'s file."""
    file = os.path.basename(urlparse(member.url).path)
    folder = torch_cache()
    path = folder / file
    return WeightsFile("torchvision", arch, member.name, file, folder, path if path.is_file() else None, member.url)


def torchvision_files(arch: str) -> list[WeightsFile]:
    """Every weights file of a torchvision architecture (``DEFAULT`` is one of them, not listed twice)."""
    enum = torchvision_enum(arch)
    return [torchvision_file(arch, enum[k]) for k in enum.__members__ if k != DEFAULT]


# -- timm ------------------------------------------------------------------------------------------------------
def timm_cfg(arch: str, name: str):
    """timm's ``PretrainedCfg`` of ``arch`` for ``"DEFAULT"`` or a tag (``"a1_in1k"``, or ``"resnet50.a1_in1k"``)."""
    import timm

    tag = "" if name == DEFAULT else name[len(arch) + 1:] if name.startswith(f"{arch}.") else name
    full = f"{arch}.{tag}" if tag else arch
    try:
        cfg = timm.models.get_pretrained_cfg(full)
    except RuntimeError:
        cfg = None
    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*") if "." in n]
    if cfg is None or (not cfg.hf_hub_id and not cfg.url):
        if not tags:
            raise ModelError(f"timm has no pretrained weights for {arch!r}")
        raise ModelError(unknown(f"timm weights of {arch}", name, [DEFAULT, *tags]))
    return cfg


def hf_repo_folder(repo: str) -> Path:
    """The Hugging Face cache folder of a model repository (``models--timm--resnet50.a1_in1k``)."""
    return hf_cache() / ("models--" + repo.replace("/", "--"))


def timm_file(arch: str, cfg) -> WeightsFile:  # noqa: ANN001 - a timm PretrainedCfg
    """Where timm's weights of ``cfg`` are cached (the Hugging Face cache, or the torch hub cache for a URL)."""
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        folder = hf_repo_folder(repo)
        for file in HF_FILES:
            found = try_to_load_from_cache(repo, file, cache_dir=hf_cache(), revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return WeightsFile("timm", arch, name, file, folder, Path(found), f"hf-hub:{repo}", repo)
        return WeightsFile("timm", arch, name, HF_FILES[0], folder, None, f"hf-hub:{repo}", repo)
    file = os.path.basename(urlparse(cfg.url).path)
    folder = torch_cache()
    path = folder / file
    return WeightsFile("timm", arch, name, file, folder, path if path.is_file() else None, cfg.url)


# -- fetching --------------------------------------------------------------------------------------------------
def _missing(wf: WeightsFile, why: str) -> ModelError:
    where = (f"the Hugging Face cache {wf.folder.parent} (huggingface-cli download {wf.repo} {wf.file} on a machine "
             f"online, then copy its folder {wf.folder.name} there; or pass the file itself as --weights PATH)"
             if wf.repo else f"{wf.folder} (from {wf.origin})")
    return ModelError(f"the {wf.source} weights {wf.name} of {wf.arch} are not on this machine and could not be "
                      f"downloaded ({why}): place {wf.file} in {where}")


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def download_url(url: str, dst: Path, progress: bool) -> None:
    """torch hub's download: to a temporary name beside ``dst``, renamed when complete (removed on failure)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=None, progress=progress)


def hf_reachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached (``HF_HUB_OFFLINE``, no route to its host), or ``None``: one quick
    connection, so an offline machine is told at once instead of after huggingface_hub's retries."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {host}: {exc.strerror or exc}"
    return None


def download_hf(repo: str, file: str, cache: Path) -> str:
    """huggingface_hub's download into ``cache`` (its own ``.incomplete`` file, renamed when complete).

    Raises:
        ConnectionError: the hub cannot be reached (:func:`hf_reachable`).
    """
    why = hf_reachable()
    if why is not None:
        raise ConnectionError(why)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, file, cache_dir=str(cache))


def fetch(wf: WeightsFile, *, progress: bool = False) -> Path:
    """The weights file of ``wf``: the cached one, or downloaded by the library into its cache.

    Raises:
        ModelError: not cached and the download failed (offline): one line naming the file and the folder.
    """
    if wf.path is not None:
        return wf.path
    if wf.repo is None:
        try:
            download_url(wf.origin, wf.folder / wf.file, progress)
        except Exception as exc:  # noqa: BLE001 - no network, a proxy, a full disk: one line whatever the reason
            raise _missing(wf, _why(exc)) from None
        wf.path = wf.folder / wf.file
        return wf.path
    before = set(wf.folder.rglob("*.incomplete")) if wf.folder.is_dir() else set()
    errors = []
    for file in HF_FILES:
        try:
            wf.path, wf.file = Path(download_hf(wf.repo, file, hf_cache())), file
            return wf.path
        except Exception as exc:  # noqa: BLE001 - as above; a missing entry tries timm's next file name
            errors.append(exc)
            if type(exc).__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                break
    if wf.folder.is_dir():  # huggingface_hub keeps interrupted downloads for resuming; nothing half-written stays
        for left in set(wf.folder.rglob("*.incomplete")) - before:
            left.unlink(missing_ok=True)
    wf.file = HF_FILES[0]
    raise _missing(wf, _why(errors[0]))


# -- preprocessing from the metadata ---------------------------------------------------------------------------
@dataclass
class Preprocessing:
    """How the weights' own pipeline feeds pictures: resize the shorter side, centre-crop, normalise."""

    input_size: tuple[int, int]
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


def _interp(value: object) -> str:
    text = str(getattr(value, "value", value)).lower()
    return text if text in ("bilinear", "bicubic", "nearest") else "bilinear"


def torchvision_preprocessing(member) -> Preprocessing:  # noqa: ANN001 - a torchvision WeightsEnum member
    """From ``member.transforms()`` (torchvision's ``ImageClassification``: resize, centre crop, normalise)."""
    t = member.transforms()
    crop = [int(v) for v in t.crop_size]
    size = (crop[0], crop[-1])
    resize = int(t.resize_size[0]) if t.resize_size else max(size)
    return Preprocessing(size, resize, tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std),
                         _interp(t.interpolation))


def timm_preprocessing(module) -> Preprocessing:  # noqa: ANN001 - a timm model
    """From timm's ``resolve_data_config`` (``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=module)
    size = (int(cfg["input_size"][1]), int(cfg["input_size"][2]))
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    resize = math.floor(max(size) / crop_pct)  # timm's transforms_imagenet_eval
    return Preprocessing(size, resize, tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]),
                         _interp(cfg.get("interpolation", "bilinear")))


def timm_labels(module, num_classes: int) -> list[str] | None:  # noqa: ANN001 - a timm model
    """Class names of a timm model's outputs: ImageNet's for 1000 classes, timm's ImageNet subset descriptions for
    the larger ImageNet label sets (11k, 12k, 21k), else ``None``."""
    from .labels import imagenet_labels

    if num_classes == 1000:
        return list(imagenet_labels())
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        return list(ImageNetInfo(subset).label_descriptions()) if subset else None
    except Exception:  # noqa: BLE001 - no label set timm knows: unlabelled outputs, never wrong ones
        return None
