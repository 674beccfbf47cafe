"""The registry of artifact kinds: what the atlas computes for each unit.

An artifact kind is a small record with a ``produce(ctx, units)`` function that computes the artifacts of a
chunk of units of one layer at once (one render batch, one pass over the images) and returns
``{unit: [Artifact, ...]}``. Each producer lives in its own module of this package and imports the area that
does the work (``cnnscope.featurevis``, ``cnnscope.dataset``, ``cnnscope.stimuli``) only when it runs; a kind
whose area is missing reports itself unavailable instead of faking its artifacts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

from ..capture import LayerInfo
from ..errors import MethodError, unknown
from .records import Artifact


@dataclass(frozen=True)
class BuildOptions:
    """Settings shared by the artifact kinds (recorded in the atlas; a resumed build must use the same).

    Attributes:
        steps: optimisation steps per feature visualization.
        size: feature-visualization image size in pixels.
        recipe: feature-visualization recipe name (``None``: the featurevis default).
        seed: base seed; every random draw comes from a ``torch.Generator`` seeded from it.
        top_k: dataset examples kept per unit.
        bins: histogram bins.
        circuit_k: strongest incoming channels shown per unit.
        batch_size: units per chunk (one render batch, one dataset pass per chunk).
        image_batch: images per forward pass when streaming the dataset.
    """

    steps: int = 128
    size: int = 128
    recipe: str | None = None
    seed: int = 0
    top_k: int = 9
    bins: int = 40
    circuit_k: int = 8
    batch_size: int = 8
    image_batch: int = 16

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class BuildContext:
    """What a producer gets: the model, the layer, the options and (for dataset kinds) the images.

    Attributes:
        model: the ``LoadedModel``.
        layer: the ``LayerInfo`` of the layer being built.
        options: :class:`BuildOptions`.
        images: the build's :class:`~cnnscope.dataset.sources.ImageSource`, or ``None`` without images.
        cache: scratch space shared by every chunk of this run (e.g. one dataset pass for all its layers).
        layers: the layers this run still builds units of, in order.
    """

    model: object
    layer: LayerInfo
    options: BuildOptions
    images: object = None
    cache: dict = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)


ProduceFn = Callable[[BuildContext, list[int]], dict[int, list[Artifact]]]


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of per-unit artifact.

    Attributes:
        name: registry name (also the ``kind`` column of its artifacts).
        title: heading on the unit page.
        produce: ``(ctx, units) -> {unit: [Artifact, ...]}`` for a chunk of units of ``ctx.layer``.
        order: position on the unit page.
        requires: module that must be importable for the kind to run (the area that does the work).
        needs_images: the kind reads the build's images (dataset examples, histograms).
        optional: built only when asked for by name (not part of the default set).
        thumbnail: name of the artifact used as the unit's thumbnail on the layer page.
        description: one line for ``cnnscope atlas kinds`` and the docs.
        applies: ``(model, layer_info) -> None`` when the kind can describe that layer's units, else the reason
            (e.g. circuits need a convolution); the build then leaves the kind out for that layer and says why.
    """

    name: str
    title: str
    produce: ProduceFn
    order: int = 50
    requires: str | None = None
    needs_images: bool = False
    optional: bool = False
    thumbnail: str | None = None
    description: str = ""
    applies: Callable[[object, LayerInfo], str | None] | None = None

    def unavailable(self) -> str | None:
        """Why the kind cannot run here, or ``None`` when it can."""
        if self.requires is None:
            return None
        try:
            found = importlib.util.find_spec(self.requires) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"needs {self.requires}, which this installation of cnnscope lacks"


KINDS: dict[str, ArtifactKind] = {}


def register_kind(kind: ArtifactKind) -> ArtifactKind:
    """Add ``kind`` to the registry (replacing one of the same name) and return it."""
    KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    KINDS.pop(name, None)


def get_kind(name: str) -> ArtifactKind:
    """The kind called ``name``; unknown names raise :class:`MethodError` with close matches."""
    _load_builtin()
    if name not in KINDS:
        raise MethodError(unknown("artifact kind", name, sorted(KINDS)))
    return KINDS[name]


def list_kinds() -> list[ArtifactKind]:
    """Every registered kind in page order."""
    _load_builtin()
    return sorted(KINDS.values(), key=lambda k: (k.order, k.name))


def default_kinds(with_images: bool) -> list[str]:
    """Kinds built when none are named: the available non-optional ones (dataset kinds only with images)."""
    return [k.name for k in list_kinds()
            if not k.optional and k.unavailable() is None and (with_images or not k.needs_images)]


_BUILTIN = ("featurevis_kind", "dataset_kind", "circuit_kind", "tuning_kind")
_loaded = False


def _load_builtin() -> None:
    """Import the producer modules of this package (each registers its kinds)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN:
        if importlib.util.find_spec(f"{__package__}.{mod}") is not None:
            importlib.import_module(f"{__package__}.{mod}")
