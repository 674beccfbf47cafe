"""The atlas: a per-unit "microscope" of a model, stored in one SQLite file and built resumably.

``build_atlas(model, out, layers, channels=...)`` computes, for each unit, the artifacts of every registered
artifact kind (feature visualizations, dataset examples, histograms, circuits, tuning) and stores each unit
atomically; ``AtlasStore(out)`` reads it back (the web viewer, ``cnnscope serve``, does so read-only). A new kind
is one :class:`ArtifactKind` subclass decorated with :func:`register_kind` (see :mod:`cnnscope.atlas.kinds`).
"""

from .build import BuildReport, build_atlas
from .kinds import KINDS, ArtifactKind, BuildContext, BuildOptions, get_kind, list_kinds, register_kind
from .records import Artifact, ArtifactRecord, AtlasError, AtlasVersionError, LayerRecord, NotInAtlas
from .store import SCHEMA_VERSION, AtlasStore, open_atlas

__all__ = ["KINDS", "SCHEMA_VERSION", "Artifact", "ArtifactKind", "ArtifactRecord", "AtlasError", "AtlasStore",
           "AtlasVersionError", "BuildContext", "BuildOptions", "BuildReport", "LayerRecord", "NotInAtlas",
           "build_atlas", "get_kind", "list_kinds", "open_atlas", "register_kind"]
