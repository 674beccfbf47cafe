"""Evaluation: can this explanation be trusted?

::

    from cnnscope import load_model, sample_images
    from cnnscope.evaluate import deletion, insertion, road, evaluate, explainer
    m = load_model()
    photos = [sample_images()[n] for n in ("chelsea", "coffee")]
    gradcam = explainer("gradcam")                  # any attribution method, or "random" / "center"
    deletion(m, photos, gradcam).auc                # RISE deletion AUC per image (lower is better)
    insertion(m, photos, gradcam).auc               # RISE insertion AUC per image (higher is better)
    road(m, photos, gradcam).combined               # ROAD (LeRF - MoRF) / 2 (higher is better)
    ev = evaluate(m, photos, ["gradcam", "saliency", "random"], metrics=["deletion", "insertion", "sanity"])
    ev.table.to_markdown()                          # the Markdown table, a string

Every metric takes ``model`` first (a ``LoadedModel`` or an ``nn.Module``), then images (anything
``LoadedModel.batch`` takes) and maps (tensors/arrays at any resolution) or an explainer
``explainer(model, images, targets) -> maps``.
"""

from .common import Explainer, auc, pixel_ranks
from .deletion_insertion import RISE_STEP, CurveResult, deletion, insertion
from .featurevis_quality import FeatureVisQuality, featurevis_quality
from .methods import BASELINES, CenterMap, MethodExplainer, RandomMap, available_methods, explainer, explainers
from .pointing import PointingResult, load_regions, pointing_game
from .report import COLUMNS, MetricTable, save_table
from .road import PERCENTAGES, RoadResult, linear_imputation_system, noisy_linear_impute, road
from .sanity import MODES, SanityResult, randomization_units, sanity_check
from .similarity import SIMILARITIES, average_ranks, hog_correlation, spearman, spearman_abs, ssim
from .substrates import SUBSTRATES
from .suite import DEFAULT_METRICS, METRICS, Evaluation, evaluate

__all__ = [
    "BASELINES", "COLUMNS", "DEFAULT_METRICS", "METRICS", "MODES", "PERCENTAGES", "RISE_STEP", "SIMILARITIES",
    "SUBSTRATES", "CenterMap", "CurveResult", "Evaluation", "Explainer", "FeatureVisQuality", "MethodExplainer",
    "MetricTable", "PointingResult", "RandomMap", "RoadResult", "SanityResult", "auc", "available_methods",
    "average_ranks", "deletion", "evaluate", "explainer", "explainers", "featurevis_quality", "hog_correlation",
    "insertion", "linear_imputation_system", "load_regions", "noisy_linear_impute", "pixel_ranks", "pointing_game",
    "randomization_units", "road", "sanity_check", "save_table", "spearman", "spearman_abs", "ssim",
]
