"""The registry of artifact kinds: what the atlas computes for each unit.

An artifact kind is one class, decorated with :func:`register_kind`, in one module of this package (or of any
module that is imported before the build, e.g. a test):

    @register_kind
    class MeanActivation(ArtifactKind):
        name = "mean_activation"
        title = "Mean activation"
        artifacts = {"means": "application/json"}

        def produce(self, ctx, units):
            ...  # one pass for the whole chunk of units of ctx.layer
            return {u: [numbers_artifact(self.name, "means", {...})] for u in units}

``produce(ctx, units)`` computes the artifacts of a chunk of units of one layer at once (one render batch, one
pass over the images) and returns ``{unit: [Artifact, ...]}``; the artifacts it may return are declared in
``artifacts`` (name -> MIME type), which the build checks and the viewer reads (pictures are shown, numbers are
listed). Each producer imports the area that does the work (``cnnscope.featurevis``, ``cnnscope.dataset``,
``cnnscope.stimuli``) only when it runs; a kind whose area is missing reports itself unavailable instead of faking
its artifacts. :data:`KINDS` imports every module of this package the first time it is read.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ..capture import LayerInfo
from ..registry import Registry, RegistryError
from .records import Artifact

#: MIME types an artifact may have: pictures the viewer shows, or numbers only
ARTIFACT_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "application/json")


@dataclass(frozen=True)
class BuildOptions:
    """Settings shared by the artifact kinds (recorded in the atlas; a resumed build must use the same).

    Attributes:
        steps: optimisation steps per feature visualization.
        size: feature-visualization image size in pixels.
        recipe: feature-visualization recipe name (``None``: the featurevis default).
        seed: base seed; every random draw comes from a ``torch.Generator`` seeded from it.
        diversity: pictures per unit of the ``featurevis_diversity`` kind (2..8; Olah et al. 2017, "Diversity").
        top_k: dataset examples kept per unit.
        circuit_k: strongest incoming channels shown per unit.
        pre_activation: every kind reads the input of each layer (an activation module: pre-ReLU values, as in
            *Curve Detectors*) instead of its output.
        units_per_chunk: units computed together (one render batch, one dataset pass per chunk) and the most a
            killed build loses.
        batch_size: images per forward pass (dataset images, stimuli); ``None`` picks a default by the model's
            device (:func:`cnnscope.batching.resolve_batch_size`).
    """

    steps: int = 128
    size: int = 128
    recipe: str | None = None
    seed: int = 0
    diversity: int = 4
    top_k: int = 9
    circuit_k: int = 8
    pre_activation: bool = False
    units_per_chunk: int = 8
    batch_size: int | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class BuildContext:
    """What a producer gets: the model, the layer, the options and (for dataset kinds) the build's images.

    Attributes:
        model: the ``LoadedModel``.
        layer: the ``LayerInfo`` of the layer being built.
        options: :class:`BuildOptions`.
        batch_size: images per forward pass (``options.batch_size`` resolved for the model's device).
        source: the build's images (a :class:`~cnnscope.dataset.sources.ImageSource`), or ``None``.
        cache: scratch space shared by every chunk of this run (e.g. one dataset pass for all its layers).
        layers: the layers this run still builds units of, in order.
        workdir: the folder where a dataset pass keeps its shards (inside the atlas folder: a killed build resumes
            the pass at its last finished shard), ``None`` to keep it in memory.
        engine, address: where the pass's shards run (:func:`cnnscope.engine.get_engine`).
    """

    model: object
    layer: LayerInfo
    options: BuildOptions
    batch_size: int
    source: object = None
    cache: dict = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    workdir: object = None
    engine: object = None
    address: str | None = None


class ArtifactKind:
    """One kind of per-unit artifact: subclass it, set the class attributes, write :meth:`produce`, decorate
    the class with :func:`register_kind`.

    Attributes:
        name: registry name (also the ``kind`` column of its artifacts).
        title: heading on the unit page.
        artifacts: ``{artifact name: MIME type}`` of what :meth:`produce` returns for each unit (one of
            :data:`ARTIFACT_TYPES`); images are shown on the unit page, every artifact's numbers are listed.
        order: position on the unit page.
        requires: module that must be importable for the kind to run (the area that does the work).
        needs_images: the kind reads the build's images, ``ctx.source`` (dataset examples, histograms).
        optional: built only when asked for by name (not part of the default set).
        thumbnail: name of the image artifact used as the unit's thumbnail on the layer page.
        description: one line for ``cnnscope atlas kinds`` and the docs.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    artifacts: ClassVar[Mapping[str, str]] = {}
    order: ClassVar[int] = 50
    requires: ClassVar[str | None] = None
    needs_images: ClassVar[bool] = False
    optional: ClassVar[bool] = False
    thumbnail: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def produce(self, ctx: BuildContext, units: list[int]) -> dict[int, list[Artifact]]:
        """``{unit: [Artifact, ...]}`` for a chunk of units of ``ctx.layer``."""
        raise NotImplementedError

    def applies(self, model, layer: LayerInfo) -> str | None:
        """``None`` when the kind can describe ``layer``'s units, else the reason (e.g. circuits need a
        convolution); the build then leaves the kind out for that layer and records why."""
        return None

    def aliases(self, model, layers: list[str]) -> dict[str, list[str]]:
        """``name -> all names of one tensor`` the kind's links may be stored under (kept in the atlas's meta,
        ``tensor_aliases``, so the viewer finds them under any of the names); none by default."""
        return {}

    def advice(self, model, layers: list[str], atlas_layers: list[str]) -> list[str]:
        """Lines the build prints about the chosen ``layers`` given every layer the atlas holds (e.g. a layer to add
        so circuits link); none by default."""
        return []

    def unavailable(self) -> str | None:
        """Why the kind cannot run here, or ``None`` when it can."""
        if self.requires is None:
            return None
        try:
            found = importlib.util.find_spec(self.requires) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"needs {self.requires}, which this installation of cnnscope lacks"

    def describe(self) -> dict:
        """What the viewer needs to show the kind's artifacts (recorded in the atlas, so a viewer without the
        kind's code shows them too)."""
        return {"title": self.title or self.name, "order": self.order, "thumbnail": self.thumbnail,
                "artifacts": [[n, t] for n, t in self.artifacts.items()], "description": self.description}


KINDS: Registry[type[ArtifactKind]] = Registry("artifact kind", package=__package__)


def register_kind(cls: type[ArtifactKind]) -> type[ArtifactKind]:
    """Class decorator: add an :class:`ArtifactKind` subclass to :data:`KINDS` under ``cls.name``.

    Raises:
        RegistryError: not an ``ArtifactKind`` subclass, a name already taken, no name, an artifact type outside
            :data:`ARTIFACT_TYPES`, or a thumbnail that is not one of its image artifacts.
    """
    if not (isinstance(cls, type) and issubclass(cls, ArtifactKind)):
        raise RegistryError(f"an artifact kind is a subclass of ArtifactKind, got {cls!r}")
    bad = {n: t for n, t in cls.artifacts.items() if t not in ARTIFACT_TYPES}
    if not cls.artifacts or bad:
        raise RegistryError(f"artifact kind {cls.name!r} must declare its artifacts as {{name: MIME type}} with "
                            f"types among {', '.join(ARTIFACT_TYPES)}; got {dict(cls.artifacts)!r}")
    if cls.thumbnail is not None and not cls.artifacts.get(cls.thumbnail, "").startswith("image/"):
        raise RegistryError(f"artifact kind {cls.name!r}: thumbnail {cls.thumbnail!r} is not one of its image "
                            "artifacts")
    return KINDS.register(cls)


def get_kind(name: str) -> ArtifactKind:
    """The kind called ``name``; unknown names raise :class:`~cnnscope.errors.MethodError` with close matches."""
    return KINDS.get(name)()


def list_kinds() -> list[ArtifactKind]:
    """Every registered kind in page order."""
    return sorted((cls() for _, cls in KINDS.items()), key=lambda k: (k.order, k.name))


def default_kinds(with_images: bool) -> list[str]:
    """Kinds built when none are named: the available non-optional ones (dataset kinds only with images)."""
    return [k.name for k in list_kinds()
            if not k.optional and k.unavailable() is None and (with_images or not k.needs_images)]
