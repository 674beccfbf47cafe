"""Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks* (2013), as reusable analyses.

    from cnnscope import load_model
    from cnnscope.zf import occlusion_study, project
    alex = load_model("alexnet", weights="alexnet.pth")
    p = project(alex, "cat.jpg", "features.10", channel=5)        # true deconvnet, strongest activation
    s = occlusion_study(load_model(), "cat.jpg", "blocks.5")       # Fig. 7 maps

Every analysis takes ``model`` first (a ``LoadedModel`` or a plain ``nn.Module``), then the images and the one
thing it is about; options are keyword-only (docs/CONVENTIONS.md). :func:`evolution` takes a list of checkpoints
instead of one model.

See docs/zf.md for every analysis, its paper reference, options and limits.

Every analysis returns tensors/arrays in a dataclass; figures are in :mod:`cnnscope.plot.zf`, commands in
``cnnscope deconv|top9|occlude|invariance|correspond|train|evolution|filters|featuremaps|boundary|paramgrads|
featurespace|ablate|transfer|accuracy``.
"""

from .ablate import Ablation, ablate
from .architecture import ConvNet, NetSpec
from .boundary import DecisionPlane, decision_plane
from .chain import DeconvError
from .correspondence import Correspondence, DeltaStats, correspondence, sign_consistency
from .deconvnet import DeconvNet, Projection, display, project, rule_projection
from .diagnose import FilterDiagnosis, diagnose
from .ensemble import ensemble_accuracy, ensemble_probabilities
from .evolution import Evolution, evolution
from .feature_space import FeatureSpace, feature_space
from .filters import FilterSpectrum, conv_layers, conv_weights, feature_maps, filter_images, filter_spectrum
from .invariance import TRANSFORMS, InvarianceStudy, invariance_study, register_transform
from .occlusion_study import OcclusionStudy, occlusion_study
from .param_grads import ParameterGradients, parameter_gradients
from .projection_choice import choose_projector, project_unit
from .projections import TopEntry, TopProjections, top_projections
from .steps import STEP_TYPES, inverts, unpool
from .train import SmallConvNet, TrainResult, digits_dataset, load_checkpoint, train
from .transfer import Transfer, transfer

__all__ = ["Ablation", "ConvNet", "Correspondence", "DecisionPlane", "DeconvError", "DeconvNet", "DeltaStats",
           "Evolution", "FeatureSpace", "FilterDiagnosis", "FilterSpectrum", "InvarianceStudy", "NetSpec",
           "OcclusionStudy", "ParameterGradients", "Projection", "STEP_TYPES", "SmallConvNet", "TRANSFORMS",
           "TopEntry", "TopProjections", "TrainResult", "Transfer", "ablate", "choose_projector", "conv_layers",
           "conv_weights", "correspondence", "decision_plane", "diagnose", "digits_dataset", "display",
           "ensemble_accuracy", "ensemble_probabilities", "evolution", "feature_maps", "feature_space",
           "filter_images", "filter_spectrum", "invariance_study", "inverts", "load_checkpoint", "occlusion_study",
           "parameter_gradients", "project", "project_unit", "register_transform", "rule_projection",
           "sign_consistency", "top_projections", "train", "transfer", "unpool"]
