"""A configurable ZF/AlexNet-style convnet: the architecture the paper's design experiments vary.

:class:`NetSpec` says everything that defines the network (layer-1 kernel and stride, conv widths, kernels and
strides, which convs are followed by pooling, max or average pooling and its size, the fully connected head and its
dropout, the input side); :class:`ConvNet` builds it. The layout is the one the deconvnet reads
(docs/ARCHITECTURE.md, the Zeiler & Fergus toolkit): ``features`` is a plain ``Sequential`` of conv -> ReLU
[-> pool] blocks, then an adaptive average pool to ``head_pool`` x ``head_pool``, ``flatten`` and ``classifier``
(one ``Linear`` when ``fc`` is empty, otherwise ``[Dropout] Linear ReLU`` per hidden layer and a last ``Linear``).

The default spec is the small digits network of earlier versions (5x5 then 3x3 convs of 16, 32, 64 channels, a 2x2
max-pool after each); ``NetSpec.zf()`` and ``NetSpec.alexnet()`` give the two first layers the paper compares
(7x7 stride 2 and 11x11 stride 4) on the same small stack.

Layers are named ``conv1..convN`` and ``fc1..fcM`` (hidden fully connected layers) in :meth:`NetSpec.variant`,
which the ablations use: ``drop:conv3``, ``width:conv2=128``, ``kernel:conv1=7``, ``stride:conv1=2``,
``drop:fc1``, ``width:fc1=256``, ``pool:conv2=off|on``.

Example:
    >>> spec = NetSpec(widths=(32, 64, 64), kernels=(7,), strides=(2,), fc=(128,), dropout=0.5)
    >>> net = ConvNet(spec, in_channels=3, num_classes=10)
    >>> spec.variant("drop:conv3").widths
    (32, 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from ..errors import CnnscopeError

POOL_KINDS = ("max", "avg")
VARIANT_HELP = ("drop:convK, drop:fcK, width:convK=W, width:fcK=W, kernel:convK=S, stride:convK=S, "
                "pool:convK=on|off")


@dataclass(frozen=True)
class NetSpec:
    """What defines a :class:`ConvNet`.

    Attributes:
        widths: output channels of the convolutions (their number is the depth).
        kernels: kernel side of each convolution; missing trailing entries are 3 (so ``(7,)`` sets layer 1 only).
            Padding is ``kernel // 2``.
        strides: stride of each convolution; missing trailing entries are 1.
        pool_after: 1-based indices of the convolutions followed by pooling; ``None`` = every one.
        pool: ``"max"`` or ``"avg"``.
        pool_size: pooling window side; ``pool_stride`` its stride (``None`` = ``pool_size``; the paper's
            overlapping pooling is size 3 stride 2).
        fc: widths of the hidden fully connected layers (``()`` = a linear classifier on the pooled features).
        dropout: dropout before each hidden fully connected layer and before the last one (0 = none; only with
            ``fc``).
        head_pool: side of the adaptive average pool before the classifier.
        input_size: image side the network is trained at (``None``: the data's default).
    """

    widths: tuple[int, ...] = (16, 32, 64)
    kernels: tuple[int, ...] = (5,)
    strides: tuple[int, ...] = (1,)
    pool_after: tuple[int, ...] | None = None
    pool: str = "max"
    pool_size: int = 2
    pool_stride: int | None = None
    fc: tuple[int, ...] = ()
    dropout: float = 0.0
    head_pool: int = 4
    input_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("widths", "kernels", "strides", "fc"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.pool_after is not None:
            object.__setattr__(self, "pool_after", tuple(sorted({int(v) for v in self.pool_after})))
        n = len(self.widths)
        if n == 0:
            raise CnnscopeError("a network needs at least one convolution (widths is empty)")
        if len(self.kernels) > n or len(self.strides) > n:
            raise CnnscopeError(f"{len(self.kernels)} kernels and {len(self.strides)} strides for {n} convolutions; "
                                "give at most one per convolution")
        if min(self.widths) < 1 or min(self.kernels, default=1) < 1 or min(self.strides, default=1) < 1:
            raise CnnscopeError("conv widths, kernels and strides must be >= 1")
        if self.fc and min(self.fc) < 1:
            raise CnnscopeError("fully connected widths must be >= 1")
        if self.pool_after is not None and any(not 1 <= k <= n for k in self.pool_after):
            raise CnnscopeError(f"pool_after {list(self.pool_after)} names convolutions outside 1..{n}")
        if self.pool not in POOL_KINDS:
            raise CnnscopeError(f"pool must be one of {', '.join(POOL_KINDS)}, got {self.pool!r}")
        if self.pool_size < 1 or (self.pool_stride is not None and self.pool_stride < 1) or self.head_pool < 1:
            raise CnnscopeError("pool_size, pool_stride and head_pool must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise CnnscopeError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_size is not None and self.input_size < 8:
            raise CnnscopeError(f"input_size must be at least 8 pixels, got {self.input_size}")

    @classmethod
    def zf(cls, **changes) -> NetSpec:
        """Layer 1 as in ZFNet (7x7, stride 2) on the default small stack."""
        return cls(**{"kernels": (7,), "strides": (2,), **changes})

    @classmethod
    def alexnet(cls, **changes) -> NetSpec:
        """Layer 1 as in AlexNet (11x11, stride 4) on the default small stack."""
        return cls(**{"kernels": (11,), "strides": (4,), **changes})

    @property
    def depth(self) -> int:
        return len(self.widths)

    def conv_kernels(self) -> list[int]:
        """The kernel side of every convolution (missing entries filled with 3)."""
        return [*self.kernels, *[3] * (self.depth - len(self.kernels))]

    def conv_strides(self) -> list[int]:
        """The stride of every convolution (missing entries filled with 1)."""
        return [*self.strides, *[1] * (self.depth - len(self.strides))]

    def pooled(self) -> list[bool]:
        """Whether each convolution is followed by pooling."""
        return [self.pool_after is None or k + 1 in self.pool_after for k in range(self.depth)]

    def conv_names(self) -> dict[str, str]:
        """``conv1 -> features.0``, ...: the ablation names of the convolutions and their module names."""
        out, i = {}, 0
        for k, pooled in enumerate(self.pooled()):
            out[f"conv{k + 1}"] = f"features.{i}"
            i += 3 if pooled else 2
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> NetSpec:
        known = {f.name for f in fields(cls)}
        unknown_keys = sorted(set(d) - known)
        if unknown_keys:
            raise CnnscopeError(f"unknown network settings {unknown_keys}; known: {', '.join(sorted(known))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def describe(self) -> str:
        """One line: ``conv 7x7/2 16 -> pool | conv 3x3 32 ... | fc 128 | head``."""
        parts = []
        for w, k, s, p in zip(self.widths, self.conv_kernels(), self.conv_strides(), self.pooled(), strict=True):
            parts.append(f"{k}x{k}{f'/{s}' if s > 1 else ''} {w}{' +' + self.pool if p else ''}")
        return " | ".join(parts + [f"fc {w}" for w in self.fc])

    def variant(self, text: str) -> NetSpec:
        """This spec with one change, spelled ``ACTION:LAYER[=VALUE]`` (see :data:`VARIANT_HELP`).

        ``drop:convK`` removes convolution K with its ReLU and its pooling; ``drop:fcK`` removes hidden fully
        connected layer K. ``width``, ``kernel`` and ``stride`` set one layer's value; ``pool:convK=on|off`` adds
        or removes the pooling after convolution K.

        Raises:
            CnnscopeError: a spelling, layer or value that does not fit this spec.
        """
        action, _, rest = text.partition(":")
        layer, _, value = rest.partition("=")
        layer = layer.strip().lower()
        kind = "conv" if layer.startswith("conv") else "fc" if layer.startswith("fc") else None
        index = layer[len(kind):] if kind else ""
        count = self.depth if kind == "conv" else len(self.fc)
        if kind is None or not index.isdigit() or not 1 <= int(index) <= count:
            raise CnnscopeError(f"variant {text!r}: no layer {layer!r} in this network (conv1..conv{self.depth}"
                                f"{f', fc1..fc{len(self.fc)}' if self.fc else ''}); spell variants as "
                                f"{VARIANT_HELP}")
        k = int(index) - 1
        action = action.strip().lower()
        if action == "drop":
            if value:
                raise CnnscopeError(f"variant {text!r}: drop takes no value (drop:{layer})")
            if kind == "fc":
                return replace(self, fc=self.fc[:k] + self.fc[k + 1:])
            if self.depth == 1:
                raise CnnscopeError(f"variant {text!r}: cannot drop the only convolution")
            pooled = self.pooled()
            keep = [j for j in range(self.depth) if j != k]
            return replace(self, widths=tuple(self.widths[j] for j in keep),
                           kernels=tuple(self.conv_kernels()[j] for j in keep),
                           strides=tuple(self.conv_strides()[j] for j in keep),
                           pool_after=tuple(n + 1 for n, j in enumerate(keep) if pooled[j]))
        if action == "pool" and kind == "conv" and value.strip().lower() in ("on", "off"):
            pooled = self.pooled()
            pooled[k] = value.strip().lower() == "on"
            return replace(self, pool_after=tuple(j + 1 for j, p in enumerate(pooled) if p))
        if action not in ("width", "kernel", "stride") or (kind == "fc" and action != "width"):
            raise CnnscopeError(f"variant {text!r}: unknown change; spell variants as {VARIANT_HELP}")
        if not value.strip().isdigit() or int(value) < 1:
            raise CnnscopeError(f"variant {text!r}: {action} needs a positive integer (e.g. {action}:{layer}=64)")
        v = int(value)
        if kind == "fc":
            return replace(self, fc=self.fc[:k] + (v,) + self.fc[k + 1:])
        name = {"width": "widths", "kernel": "kernels", "stride": "strides"}[action]
        full = {"widths": list(self.widths), "kernels": self.conv_kernels(), "strides": self.conv_strides()}[name]
        full[k] = v
        return replace(self, **{name: tuple(full)})


class ConvNet(nn.Module):
    """The network of a :class:`NetSpec`: ``features`` (conv-ReLU[-pool] blocks) -> adaptive average pool ->
    ``flatten`` -> ``classifier``.

    Args:
        spec: the architecture.
        in_channels: image channels (1 for digits, 3 for colour sources).
        num_classes: outputs.
    """

    def __init__(self, spec: NetSpec | None = None, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        spec = spec or NetSpec()
        layers: list[nn.Module] = []
        c = in_channels
        pool_stride = spec.pool_stride or spec.pool_size
        for w, k, s, p in zip(spec.widths, spec.conv_kernels(), spec.conv_strides(), spec.pooled(), strict=True):
            layers += [nn.Conv2d(c, w, k, stride=s, padding=k // 2), nn.ReLU(inplace=True)]
            if p:
                pool = nn.MaxPool2d if spec.pool == "max" else nn.AvgPool2d
                layers.append(pool(spec.pool_size, stride=pool_stride))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(spec.head_pool)
        self.flatten = nn.Flatten()
        n_in = c * spec.head_pool ** 2
        if not spec.fc:
            self.classifier: nn.Module = nn.Linear(n_in, num_classes)
        else:
            head: list[nn.Module] = []
            for w in spec.fc:
                head += ([nn.Dropout(spec.dropout)] if spec.dropout else []) + [nn.Linear(n_in, w), nn.ReLU()]
                n_in = w
            head += ([nn.Dropout(spec.dropout)] if spec.dropout else []) + [nn.Linear(n_in, num_classes)]
            self.classifier = nn.Sequential(*head)
        self.spec = spec
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "spec": spec.to_dict()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-uniform weights and zero biases, drawn from ``generator``."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=generator)
                nn.init.zeros_(m.bias)

    def trunk_layers(self) -> list[str]:
        """Names of the layers with weights, input to output (``features.0``, ..., ``classifier``...): the units
        :func:`cnnscope.zf.transfer.transfer` freezes the first k of."""
        return [n for n, m in self.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def small_spec(widths: Sequence[int] = (16, 32, 64)) -> NetSpec:
    """The small digits network of earlier versions (5x5 then 3x3 convs, 2x2 max-pool after each)."""
    return NetSpec(widths=tuple(widths))
