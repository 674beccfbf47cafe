"""WebDataset ``.tar`` shards read by member offsets, so every image keeps a stable id and can be read again.

Why ``tarfile`` and not the ``webdataset`` package: a webdataset pipeline streams samples once, in order; the
statistics pass and the example crops need *random access by image id* (crops are read back long after the pass,
``DataLoader`` workers split the ids). Indexing the shards once (one header walk per shard: member name, data
offset, size) gives exactly that, with no extra dependency; the standard library reads the headers and a plain
``seek`` + ``read`` fetches an image. Shards must be uncompressed ``.tar`` files, as WebDataset writes them.

Layout (the WebDataset convention): the members of one sample share a *key*, the member path up to the first dot
of its file name (``n01440764/x_12.jpg`` and ``n01440764/x_12.cls`` form sample ``n01440764/x_12``). The image is
the member with an image suffix (``jpg``, ``jpeg``, ``png``, ``webp``, ...; the first in the shard when there are
several), the label the text of a ``.cls`` member. A sample without an image, or a shard that ends early, is
reported as skipped.
"""

from __future__ import annotations

import glob as globlib
import re
import tarfile
from pathlib import Path

import numpy as np

from ...errors import ImageError
from ...images import IMAGE_SUFFIXES
from .base import Labelled, SkippedImage, class_table, decode_image, file_entry, hash_entries

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` matching the ``{`` at ``start`` (``-1``: none)."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return -1


def _split_top(body: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    return parts + [cur]


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion as WebDataset spells shard lists: ``train-{0000..0146}.tar`` (numeric ranges,
    zero-padded to the wider bound when a bound has a leading zero), ``{a,b}`` alternatives, nested and several
    groups. A group that is neither (``{x}``) stays as written."""
    for start, ch in enumerate(pattern):
        if ch != "{":
            continue
        end = _closing(pattern, start)
        if end < 0:
            break
        body, head, tail = pattern[start + 1:end], pattern[:start], pattern[end + 1:]
        rng = _RANGE.match(body)
        if rng:
            a, b = int(rng.group(1)), int(rng.group(2))
            pad = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in rng.groups())
            width = max(len(s) for s in rng.groups()) if pad else 0
            step = 1 if b >= a else -1
            items = [str(v).zfill(width) for v in range(a, b + step, step)]
        else:
            items = _split_top(body)
            if len(items) < 2:
                rest = expand_braces(tail)
                return [head + "{" + body + "}" + r for r in rest]
        return [head + x for it in items for x in expand_braces(it + tail)]
    return [pattern]


def shard_paths(spec: str) -> list[str]:
    """The shard files of a spec: brace groups expanded, then each piece globbed (``*`` patterns); pieces that
    match nothing are kept (they are reported as missing shards)."""
    out: list[str] = []
    for piece in expand_braces(spec):
        if any(c in piece for c in "*?["):
            out += sorted(globlib.glob(piece))
        else:
            out.append(piece)
    return out


def _key_ext(member: str) -> tuple[str, str]:
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (folder + "/" if folder else "") + stem, ext.lower() if dot else ""


IMAGE_EXTS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)


class TarShards(Labelled):
    """Images in WebDataset ``.tar`` shards (see the module docstring), indexed once when opened.

    Args:
        spec: one shard, a brace pattern (``'shards/train-{0000..0146}.tar'``) or a glob of ``.tar`` files.

    Raises:
        ImageError: no shard can be read, or the shards hold no image.
    """

    kind = "tar"

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.shards = shard_paths(spec)
        self.entries: list[tuple[int, str, int, int]] = []  # (shard, member, data offset, size)
        self._problems: list[SkippedImage] = []
        self._members: list[str] = []  # identity lines
        labels: list[str | None] = []
        for s, path in enumerate(self.shards):
            labels += self._index(s, path)
        if not self.entries:
            first = f" ({self._problems[0].path}: {self._problems[0].reason})" if self._problems else ""
            raise ImageError(f"{spec}: no image in {len(self.shards)} tar shard(s){first}")
        self.classes, self.targets = class_table(labels)
        self._identity: str | None = None

    def _index(self, s: int, path: str) -> list[str | None]:
        """Add the samples of shard ``s``; return their labels."""
        if not Path(path).is_file():
            self._problems.append(SkippedImage(path, "no such shard"))
            return []
        resolved = Path(path).resolve()
        samples: dict[str, dict] = {}
        order: list[str] = []
        try:
            with tarfile.open(path, "r:") as tf:
                while True:
                    try:
                        info = tf.next()
                    except tarfile.TarError as exc:
                        self._problems.append(SkippedImage(path, f"shard ends early after {len(order)} samples "
                                                                 f"({exc}); the rest of it is skipped"))
                        break
                    if info is None:
                        break
                    if not info.isfile():
                        continue
                    key, ext = _key_ext(info.name)
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    if ext in IMAGE_EXTS and "image" not in samples[key]:
                        samples[key]["image"] = (info.name, info.offset_data, info.size)
                    elif ext == "cls":
                        fh = tf.extractfile(info)
                        samples[key]["label"] = fh.read().decode("utf-8", "replace").strip() if fh else None
                    self._members.append(f"{resolved}::{info.name}\t{info.size}\t{info.mtime}")
        except (tarfile.TarError, OSError) as exc:
            self._problems.append(SkippedImage(path, f"not a readable tar file ({exc})"))
            return []
        labels = []
        for key in order:
            got = samples[key]
            if "image" not in got:
                self._problems.append(SkippedImage(f"{path}:{key}", "the sample has no image member "
                                                   f"({', '.join(IMAGE_EXTS)})"))
                continue
            name, offset, size = got["image"]
            self.entries.append((s, name, offset, size))
            labels.append(got.get("label") or None)
        return labels

    def __len__(self) -> int:
        return len(self.entries)

    def name(self, index: int) -> str:
        s, member, _, _ = self.entries[index]
        return f"{self.shards[s]}:{member}"

    def load(self, index: int) -> np.ndarray:
        s, _, offset, size = self.entries[index]
        where = self.name(index)
        try:
            with open(self.shards[s], "rb") as fh:
                fh.seek(offset)
                data = fh.read(size)
        except OSError as exc:
            raise ImageError(f"{where}: unreadable ({exc})") from None
        if len(data) != size:
            raise ImageError(f"{where}: truncated member ({len(data)} of {size} bytes)")
        return decode_image(data, where)

    def identity(self) -> str:
        """``sha256`` of the shards (resolved path, size, modification time) and their members (name, size,
        modification time in the tar header)."""
        if self._identity is None:
            self._identity = hash_entries([file_entry(p) for p in self.shards] + self._members)
        return self._identity

    def problems(self) -> list[SkippedImage]:
        return list(self._problems)

    def describe(self) -> dict:
        return {**super().describe(), "shards": len(self.shards), "origin": f"tar:{self.spec}"}
