"""The Microscope model set as presets: names that load a pretrained network with its layers worth studying.

``inceptionv1`` (torchvision's GoogLeNet with the Lucid/Microscope layer names as aliases), ``alexnet``, ``vgg16``,
``vgg19``, ``resnet50`` (torchvision, ``DEFAULT`` weights from the torch hub cache, downloaded when online) and the
embedded EfficientNet-Lite0/Lite1/Lite2. torchvision's GoogLeNet weights were trained by torchvision, not the
weights of Lucid's InceptionV1 (the network of the Distill articles and OpenAI Microscope): the names match, the
units do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Lucid/Microscope names of InceptionV1's layers -> torchvision GoogLeNet's. The max-pool layers keep torchvision's
#: names: Lucid's ``maxpool1``/``maxpool4`` are torchvision's names of other layers.
INCEPTION_ALIASES: dict[str, str] = {
    "conv2d0": "conv1", "conv2d1": "conv2", "conv2d2": "conv3",
    "mixed3a": "inception3a", "mixed3b": "inception3b",
    "mixed4a": "inception4a", "mixed4b": "inception4b", "mixed4c": "inception4c", "mixed4d": "inception4d",
    "mixed4e": "inception4e", "mixed5a": "inception5a", "mixed5b": "inception5b",
}

_LITE_BLOCKS = tuple(f"blocks.{i}" for i in range(7))


@dataclass(frozen=True)
class Preset:
    """A named model of the Microscope set.

    Attributes:
        name: what ``load_model`` and the CLI take (``"inceptionv1"``).
        source: ``"torchvision"`` or ``"embedded"``.
        arch: the architecture in that source.
        study_layers: layers worth studying, as dotted ``named_modules()`` names (the default layers of commands
            that need some and were given none).
        aliases: other names of layers (``{alias: dotted name}``).
        summary: one line for ``cnnscope models``.
    """

    name: str
    source: str
    arch: str
    study_layers: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    summary: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("inceptionv1", "torchvision", "googlenet", tuple(f"inception{b}" for b in
                                                              ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")),
           INCEPTION_ALIASES, "GoogLeNet (InceptionV1) with torchvision's weights and Lucid's layer names"),
    Preset("alexnet", "torchvision", "alexnet", ("features.1", "features.4", "features.7", "features.9", "features.11"),
           summary="AlexNet, ReLUs of its five convolutions"),
    Preset("vgg16", "torchvision", "vgg16", ("features.3", "features.8", "features.15", "features.22", "features.29"),
           summary="VGG-16, the last ReLU of each block"),
    Preset("vgg19", "torchvision", "vgg19", ("features.3", "features.8", "features.17", "features.26", "features.35"),
           summary="VGG-19, the last ReLU of each block"),
    Preset("resnet50", "torchvision", "resnet50", ("layer1", "layer2", "layer3", "layer4"),
           summary="ResNet-50, its four stages"),
    Preset("efficientnet_lite0", "embedded", "efficientnet_lite0", _LITE_BLOCKS,
           summary="EfficientNet-Lite0, embedded (224 px)"),
    Preset("efficientnet_lite1", "embedded", "efficientnet_lite1", _LITE_BLOCKS,
           summary="EfficientNet-Lite1, extra 'lite' (240 px)"),
    Preset("efficientnet_lite2", "embedded", "efficientnet_lite2", _LITE_BLOCKS,
           summary="EfficientNet-Lite2, extra 'lite' (260 px)"),
)}

#: aliases every model of an architecture gets, whatever its weights (``torchvision:googlenet`` too)
ARCH_ALIASES: dict[tuple[str, str], dict[str, str]] = {("torchvision", "googlenet"): INCEPTION_ALIASES}
