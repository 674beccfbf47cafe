"""Fold eval-mode batch norms into the convolutions that feed them, in a copy of the model.

In eval mode ``BN(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta`` (Ioffe & Szegedy 2015; the standard inference-time fusion, as in
``torch.ao.quantization.fuse_modules``): exact up to float rounding, and one pass over each activation fewer.
Perturbation methods run thousands of no-gradient forwards, and on a CPU the batch-norm pass is a sizeable share of
a forward (figures in benchmarks/RESULTS.md), so they run them on a folded copy.

Pairs are found by running the model once: a ``BatchNorm2d`` whose input is the very tensor a ``Conv2d`` returned.
A conv output that something else also reads (a skip connection taken before the norm) would be changed by the
fold, and a norm in training mode normalises by the batch, so the copy is only used where it reproduces the model
(:func:`~cnnscope.fastforward.fast_forward` checks it on the call's images and falls back to the model itself).
The model itself is never changed. The copy is cached per model and reused while every parameter and buffer is the
same tensor at the same version (an optimizer step, ``load_state_dict`` or ``.to()`` makes a new copy).
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from ..capture import conv_bn_pairs, evaluating, module_state
from ..models import ModelLike, as_model


def _neutralise(parent: nn.Module, attr: str, bn: nn.BatchNorm2d) -> None:
    if type(bn) is nn.BatchNorm2d:
        setattr(parent, attr, nn.Identity())
        return
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    if type(bn).__name__ == "BatchNormAct2d" and isinstance(act, nn.Module) and isinstance(drop, nn.Module):
        bn.forward = lambda t, a=act, d=drop: a(d(t))  # timm's norm + dropout + activation: keep the last two
        return
    with torch.no_grad():  # an unknown subclass: make its normalisation the identity, keep whatever else it does
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        if bn.weight is not None:
            bn.weight.fill_(1.0)
            bn.bias.zero_()


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fold_batchnorm(model: ModelLike, images: torch.Tensor, *, cache: bool = True) -> tuple[nn.Module, int]:
    """``(copy, number of folded pairs)``: an eval-mode copy of the model's module with each conv -> batch-norm pair
    fused; ``images`` (a model-space batch) runs once to find the pairs.

    Compare the copy's outputs with the model's before trusting it (see the module docstring). With ``cache`` the
    copy is shared by calls on an unchanged model: do not modify it.
    """
    module = as_model(model).module
    x = images
    if not cache:
        return _fold(module, x)
    state = module_state(module)
    got = _CACHE.get(module)
    if got is None or got[0] != state:
        got = (state, *_fold(module, x))
        _CACHE[module] = got
    return got[1], got[2]


def _fold(module: nn.Module, x: torch.Tensor) -> tuple[nn.Module, int]:
    with evaluating(module):
        pairs = conv_bn_pairs(module, x)
    folded = copy.deepcopy(module).eval()
    mods = dict(folded.named_modules())
    n = 0
    for conv_name, bn_name in pairs:
        conv, bn = mods[conv_name], mods[bn_name]
        if bn.running_mean is None or bn.running_var is None:
            continue
        n += 1
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.ndim - 1))).to(conv.weight.dtype))
            conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        parent_name, _, attr = bn_name.rpartition(".")
        _neutralise(mods[parent_name] if parent_name else folded, attr, bn)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, n
