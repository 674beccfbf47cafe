"""Records of the atlas: what is written (:class:`Artifact`), what is read back, and the atlas errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CnnscopeError


class AtlasError(CnnscopeError):
    """A missing, unreadable or inconsistent atlas."""


class AtlasVersionError(AtlasError):
    """The atlas was written with another schema version than this cnnscope reads."""


class NotInAtlas(AtlasError, KeyError):
    """A layer, unit or artifact the atlas does not hold (the message lists close matches)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Artifact:
    """One artifact of a unit, to be written.

    Attributes:
        kind: the artifact kind that made it (``"featurevis"``, ``"examples"``, ...).
        name: its name within the kind (``"channel"``, ``"crops"``, ...).
        mime: ``"image/png"`` for pictures, ``"application/json"`` for numbers only.
        data: the bytes (PNG), or ``None`` when the artifact is only numbers.
        numbers: the JSON-ready numbers behind it (scores, bin counts, weights, ...).
        provenance: spec/recipe, seed, timings; :meth:`AtlasStore.write_unit` adds the cnnscope version.
        facts: numbers the viewer sorts and filters a layer's units by (``{"mean": 0.4, "dead": 0.0}``), stored
            per unit in their own table (the first artifact that names a fact wins).
        images: whole images the artifact refers to (:class:`AtlasImage`: the dataset examples' source images),
            stored once per atlas.
        links: the unit's strongest inputs, ``({"layer", "unit", "weight", "norm"}, ...)``, stored as edges so the
            viewer lists a unit's outgoing units too (``layer`` ``None`` when the input is not an atlas layer).
    """

    kind: str
    name: str
    mime: str = "image/png"
    data: bytes | None = None
    numbers: object = None
    provenance: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    images: tuple = ()
    links: tuple = ()


@dataclass(frozen=True)
class AtlasImage:
    """A whole image of the build's source as the model saw it (fitted to its input size), stored once per atlas
    so the viewer can show a dataset example in its image with the receptive-field box drawn.

    Attributes:
        image_id: the image's index in the build's source (the examples' ``image_id``).
        name: its name in the source; label: its class in a labelled source, else ``None``.
        mime: ``"image/jpeg"``; data: the encoded bytes; width, height: pixels.
    """

    image_id: int
    name: str
    label: str | None
    mime: str
    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class ArtifactRecord:
    """An artifact as stored (bytes are read separately with :meth:`AtlasStore.artifact_bytes`)."""

    id: int
    layer: str
    unit: int
    kind: str
    name: str
    mime: str
    sha256: str | None
    size: int
    numbers: object
    provenance: dict
    file: str | None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "layer", "unit", "kind", "name", "mime", "sha256", "size",
                                              "numbers", "provenance")}


@dataclass(frozen=True)
class LayerRecord:
    """A layer of the atlas: its output shape, channel count and how many units are planned and built."""

    name: str
    position: int
    kind: str
    shape: tuple[int, ...]
    channels: int
    planned: tuple[int, ...]
    built: int

    def to_dict(self) -> dict:
        return {"name": self.name, "position": self.position, "kind": self.kind, "shape": list(self.shape),
                "channels": self.channels, "planned": len(self.planned), "built": self.built}


def dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=jsonable)


def jsonable(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()  # numpy arrays/scalars and tensors
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def cnnscope_version() -> str:
    from .. import __version__

    return __version__


def format_units(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    out: list[str] = []
    vals = sorted(values)
    k = 0
    while k < len(vals):
        j = k
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[k]) if j == k else f"{vals[k]}-{vals[j]}")
        k = j + 1
    return ", ".join(out)

