"""Dataset and circuit analysis (Cammarata et al., *Curve Detectors*, Distill 2020; OpenAI Microscope).

- :mod:`.sources`: image sources (folders, globs, lists, class folders ``classes:DIR``, CSV/JSONL manifests, tar
  shards, Hugging Face datasets on disk ``hf:PATH``, ``Dataset``s, the sample photos), their identities and batched
  loading; :mod:`.classes`: per-class statistics when a source has labels.
- :mod:`.examples`: the streaming statistics pass (top/bottom-k examples with receptive-field boxes, mergeable
  histograms, moments, band samples) and example crops; results in :mod:`.results`.
- :mod:`.spectrum`: activation spectrum (density, contribution to the expected value, examples per band).
- :mod:`.circuits`: weights from the previous layer, activation x weight attribution, expanded weights.
- :mod:`.factorize`: NMF of one image's or many images' activations.

Every function that takes a model takes it first (a ``LoadedModel`` or an ``nn.Module``); statistics are CPU
tensors, crops are ``uint8 [N, h, w, 3]`` pictures.
"""

from .circuits import attribution, connection, expanded_weights, feeding_layer, render_attribution
from .classes import ClassStats
from .examples import StatisticsAccumulator, collect_statistics, crop, crops, example_crops
from .factorize import factorize_dataset, factorize_image
from .histograms import LogBins
from .labels import ActivationBand, LabelReport, activation_bands, label_report
from .results import DatasetStats, Example, Examples, LayerStats
from .sources import ImageSource, SampleSource, iterate_batches, open_source
from .spatial_attribution import SpatialAttribution, spatial_attribution
from .spectrum import spectrum

__all__ = ["ActivationBand", "ClassStats", "DatasetStats", "Example", "Examples", "ImageSource", "LabelReport",
           "LayerStats", "LogBins", "SampleSource", "SpatialAttribution", "StatisticsAccumulator",
           "activation_bands", "attribution", "collect_statistics", "connection", "crop", "crops", "example_crops",
           "expanded_weights", "factorize_dataset", "factorize_image", "feeding_layer", "iterate_batches",
           "label_report", "open_source", "render_attribution", "spatial_attribution", "spectrum"]
