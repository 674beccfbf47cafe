"""Image sources for dataset passes: folders, globs, path lists, class folders, manifests, WebDataset ``.tar``
shards, Hugging Face datasets on disk, ``torch`` datasets and the sample photos.

Every source is indexable: image ``i`` of a source always has the same *image id* ``i``, so statistics can name
their examples by id and fetch the crop later. Labelled sources (class folders, manifests with a ``label``, shards
with ``.cls`` members, Hugging Face datasets with a label column, torchvision-style datasets) give each image's
class. A source's *identity* (a hash of its resolved members with sizes and modification times) is stored with
statistics and atlases, so another image set of the same size is never taken for this one.
:func:`iterate_batches` streams a source through ``DataLoader`` workers, fits every image to the model's input size,
and skips (and reports) anything unreadable.

Unreadable images follow one policy everywhere (dataset passes, ``evaluate``, atlas builds): the image is skipped,
its path and the reason are recorded as a :class:`SkippedImage`, the results carry the list (``skipped``, as
``{path, reason}`` in JSON) and the commands print it on stderr (:func:`skipped_lines`). Entries found unreadable
while a source is indexed (a bad manifest row, a tar sample without an image, a shard that ends early) are
reported the same way. Only when nothing at all can be read is it an error. :func:`read_images` loads a whole
(small) source into memory under that policy.

Example:
    >>> src = open_source("photos/")                      # every image below photos/, recursively
    >>> src = open_source("classes:imagenet/val")          # one subfolder per class
    >>> src = open_source("shards/train-{0000..0146}.tar")  # WebDataset shards
    >>> for batch in iterate_batches(model, src, batch_size=16):
    ...     x = batch.tensor(model)                        # model-space [B, C, H, W] on the model's device
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ...errors import ImageError
from .base import (
    SHOWN_SKIPPED,
    ImageSource,
    SkippedImage,
    Subset,
    as_skipped,
    identity_of,
    load_or_skip,
    skipped_dicts,
    skipped_lines,
    unreadable_reason,
)
from .files import MANIFEST_SUFFIXES, FileSource, class_folders, folder, glob_files, manifest
from .memory import DatasetSource, SampleSource
from .shards import TarShards, expand_braces
from .stream import Batch, ImageSet, fitter_of, iterate_batches, read_images

GLOB_CHARS = "*?["
MAX_REPORTED = 100

__all__ = ["MANIFEST_SUFFIXES", "SHOWN_SKIPPED", "Batch", "DatasetSource", "FileSource", "ImageSet", "ImageSource",
           "SampleSource", "SkippedImage", "Subset", "TarShards", "as_skipped", "class_folders", "expand_braces",
           "fitter_of", "folder", "glob_files", "identity_of", "iterate_batches", "load_or_skip", "manifest",
           "open_source", "read_images", "skipped_dicts", "skipped_lines", "unreadable_reason"]

SPELLINGS = ("a folder, a glob, an image file, classes:FOLDER, a .csv/.jsonl manifest, WebDataset shards "
             "('shards/train-{0000..0146}.tar'), hf:PATH or 'samples'")


def open_source(spec: object, *, crops: int | None = None, seed: int = 0) -> ImageSource:
    """Turn what a user gave into an :class:`ImageSource`. Each kind has its own spelling; nothing is guessed
    from the images.

    Args:
        spec: an ``ImageSource``; a ``torch`` ``Dataset``; a list of paths; or text:

            - a folder (every image below it, recursively), a glob (``"data/**/*.jpg"``) or one image file;
            - ``"classes:FOLDER"``: one subfolder per class (the ImageFolder layout; each image's class is kept);
            - a manifest ``*.csv`` (header with ``path`` and optionally ``label``) or ``*.jsonl``
              (``{"path": ..., "label": ...}`` per line), paths relative to the manifest's folder;
            - WebDataset shards: text ending in ``.tar``, with brace groups or a glob
              (``"shards/train-{0000..0146}.tar"``);
            - ``"hf:PATH"``: a Hugging Face dataset on disk (``save_to_disk`` folder, ``.parquet`` files or an
              ``imagefolder`` folder; extra ``hf``);
            - ``"samples"`` (the skimage photos), ``"samples:N"`` (N random crops/flips per photo) or
              ``"sample:chelsea,coffee"``.
        crops: random crops per photo for the sample set (overrides ``samples:N``).
        seed: seed of the sample crops.

    Raises:
        ImageError: nothing readable can be found there.
    """
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, Dataset):
        return DatasetSource(spec)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ImageError("empty list of images")
        return FileSource(list(spec))  # type: ignore[arg-type]
    if not isinstance(spec, (str, Path)):
        raise ImageError(f"cannot read images from an object of type {type(spec).__name__}; give {SPELLINGS}, a "
                         "list of paths or a torch Dataset")
    text = str(spec)
    if text == "samples" or text.startswith("samples:"):
        n = text.split(":", 1)[1] if ":" in text else "0"
        if not n.isdigit():
            raise ImageError(f"{text}: samples:N needs a number of crops per photo")
        return SampleSource(crops=int(n) if crops is None else crops, seed=seed)
    if text.startswith("sample:"):
        return SampleSource(names=text.split(":", 1)[1].split(","), crops=crops or 0, seed=seed)
    if text.startswith("classes:"):
        return class_folders(text.split(":", 1)[1])
    if text.startswith("hf:"):
        from .hf import HFSource

        return HFSource(text.split(":", 1)[1])
    lower = text.lower()
    if lower.endswith(".tar"):
        return TarShards(text)
    if lower.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise ImageError(f"{text}: compressed tar shards are not read (random access needs plain .tar files, as "
                         "WebDataset writes them); decompress them first")
    path = Path(text)
    if lower.endswith(MANIFEST_SUFFIXES):
        return manifest(path)
    if path.is_dir():
        return folder(path)
    if path.is_file():
        return FileSource([path], origin=f"file:{path.resolve()}")
    if any(ch in text for ch in GLOB_CHARS):
        return glob_files(text)
    raise ImageError(f"{text}: no such file or folder (give {SPELLINGS})")
