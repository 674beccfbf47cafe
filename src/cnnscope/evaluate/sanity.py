"""Sanity checks for saliency maps by model parameter randomization (Adebayo et al., NeurIPS 2018).

A map that explains the *model* must change when the model's learned weights are destroyed. Weights are
re-initialised on a deep **copy** of the model (the user's model is never touched), unit by unit:

* ``"cascading"``: from the logits down, each step randomizes one more unit (top unit first), so the last
  step is a fully random network;
* ``"independent"``: one unit at a time, the others keep their trained weights.

After each step, every method's maps of the same images for the same classes (the trained model's top-1) are
compared with the trained model's maps by the similarity measures of :mod:`.similarity` (Spearman rank
correlation with and without absolute values, SSIM, HOG correlation). Gradient and Grad-CAM are expected to
decorrelate; guided backprop is known to stay similar (it fails the check) and is reported as such.

Re-initialisation ("a freshly built layer", drawn from an explicit generator): weights with two or more
dimensions ~ He-normal ``N(0, 2 / fan_in)``, other parameters (biases) 0, normalisation layers reset
(scale 1, shift 0, running mean 0, running variance 1).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..batching import chunks, resolve_batch_size, track
from ..capture import canonical_layer, list_layers
from ..errors import CnnscopeError, LayerError, unknown
from ..models import LoadedModel, ModelLike, as_model
from .common import Explainer, TargetLike, as_maps, make_generator, resolve_targets
from .methods import explainers as resolve_explainers
from .similarity import get_similarities

MODES = ("cascading", "independent")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _direct_owners(module: nn.Module) -> list[str]:
    """Names of submodules that hold parameters themselves (not only through children)."""
    return [n for n, m in module.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))]


def randomization_units(model: ModelLike, images: object, *, layers: Sequence[str] | None = None,
                        max_units: int = 16) -> list[str]:
    """The units randomized by the sanity check, in forward order (input side first).

    With ``layers=None`` the units are the parameter-holding modules at the deepest naming depth that still
    gives at most ``max_units`` units (for timm's EfficientNet-Lite0: the stem, each of the 7 stages, the head
    convolution and norm, and the classifier). Modules that never run in a forward pass on images of the size of
    ``images`` are left out.

    Raises:
        LayerError: a name of ``layers`` is not a module of the model or has no parameters.
    """
    m = as_model(model)
    module = m.module
    if layers is not None:
        names = list(dict.fromkeys(canonical_layer(module, n) for n in layers))  # an alias is its layer
        table = dict(module.named_modules())
        for n in names:
            if n not in table:
                raise LayerError(unknown("layer", n, [k for k in table if k]))
            if not any(True for _ in table[n].parameters()):
                raise LayerError(f"layer {n!r} has no parameters to randomize")
        return names
    x = m.batch(images)
    owners = _direct_owners(module)
    if not owners:
        raise CnnscopeError(f"{type(module).__name__} has no parameters to randomize")
    deepest = max(o.count(".") + 1 for o in owners)
    chosen: list[str] = []
    for depth in range(1, deepest + 1):
        units = list(dict.fromkeys(".".join(o.split(".")[:depth]) for o in owners))
        if len(units) > max_units and chosen:
            break
        chosen = units
    infos = list_layers(module, tuple(x.shape[-2:]), in_channels=x.shape[1])
    ran = {i.name: k for k, i in enumerate(infos) if i.calls > 0}
    return sorted((u for u in chosen if u in ran), key=lambda u: ran[u])


@torch.no_grad()
def reinitialize_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter and normalisation buffer of ``module`` in place (see module docstring).

    Only ever called on the sanity check's private copy.
    """
    for m in module.modules():
        if isinstance(m, NORM_TYPES):
            for name, p in m.named_parameters(recurse=False):
                p.fill_(1.0 if name == "weight" else 0.0)
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.zero_()
            if getattr(m, "running_var", None) is not None:
                m.running_var.fill_(1.0)
            continue
        for p in m.parameters(recurse=False):
            if p.ndim >= 2:
                fan_in = p[0].numel()
                noise = torch.randn(p.shape, generator=generator, device=generator.device)
                p.copy_(noise.to(p.device, p.dtype) * math.sqrt(2.0 / fan_in))
            else:
                p.zero_()


@dataclass
class SanityResult:
    """Similarity of each method's maps to its maps on the trained model, after each randomization step.

    A sweep over randomization steps: ``similarity`` and ``maps`` are on the CPU, ``targets`` on the model's
    device.

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        steps: ``["original", unit, ...]``: what was randomized at each step (cascading: this unit and all
            above it; independent: this unit alone).
        similarity: ``method -> measure -> Tensor[S, B]`` float64 (``S = len(steps)``; step 0 compares the
            trained maps with themselves).
        targets: ``[B]`` classes explained (the trained model's top-1 unless given).
        maps: ``method -> Tensor[S, B, H, W]`` when ``keep_maps=True``.
    """

    mode: str
    steps: list[str]
    similarity: dict[str, dict[str, torch.Tensor]]
    targets: torch.Tensor
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean(self, method: str, measure: str = "spearman_abs") -> torch.Tensor:
        """``[S]`` mean over images (``nan`` entries ignored) of one method's similarity."""
        return self.similarity[method][measure].float().nanmean(dim=1)

    def final(self, measure: str = "spearman_abs") -> dict[str, float]:
        """Per method, the mean similarity at the last step (the fully random model when cascading)."""
        return {m: float(self.mean(m, measure)[-1]) for m in self.similarity}


def _explain_pair(explainer: Explainer, model: LoadedModel, x: torch.Tensor, targets: torch.Tensor,
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, signed maps)`` at input size; explainers without a ``both`` variant give the same twice."""
    size = tuple(x.shape[-2:])
    both = getattr(explainer, "both", None)
    shown, signed = [], []
    for s in chunks(x.shape[0], batch_size):
        n = x[s].shape[0]
        if callable(both):
            a, b = both(model, x[s], targets[s])
        else:
            a = b = explainer(model, x[s], targets[s])
        shown.append(as_maps(a, n, size, x.device))
        signed.append(as_maps(b, n, size, x.device))
    return torch.cat(shown), torch.cat(signed)


def sanity_check(model: ModelLike, images: object, explainers: Sequence[str] | Mapping[str, Explainer], *,
                 mode: str = "cascading", layers: Sequence[str] | None = None, target: TargetLike = None,
                 measures: Sequence[str] | None = None, seed: int = 0, max_units: int = 16,
                 batch_size: int | None = None, keep_maps: bool = False, progress: bool = False) -> SanityResult:
    """Model-parameter randomization test of saliency methods.

    Args:
        model: the trained model (``LoadedModel`` or ``nn.Module``); its module is deep-copied and never
            modified. Explainers are called with a ``LoadedModel`` around the copy.
        images: anything :meth:`LoadedModel.batch` takes (a model-space tensor, or pictures).
        explainers: method names (see :func:`.methods.explainer`, default options) or
            ``name -> explainer(model, images, targets) -> maps``.
        mode: ``"cascading"`` (top-down, cumulative) or ``"independent"`` (one unit at a time).
        layers: units to randomize (dotted names, any order is sorted by the forward pass); automatic when
            ``None`` (see :func:`randomization_units`).
        target: classes to explain; default the trained model's top-1 per image.
        measures: similarity names (default all: ``spearman_abs``, ``spearman``, ``ssim``, ``hog``).
        seed: seeds the generator of the random weights.
        max_units: the most units chosen automatically.
        batch_size: images per explainer call (and per forward pass); ``None`` picks a default by the model's
            device.
        keep_maps: keep every step's maps in the result (for figures).
        progress: show a progress bar over the steps.

    Shape:
        - images: ``[B, C, H, W]``; Output: :class:`SanityResult` with ``similarity[m][s]`` of shape ``[S, B]``.
    """
    m = as_model(model)
    if mode not in MODES:
        raise CnnscopeError(unknown("sanity-check mode", mode, MODES))
    if not explainers:
        raise CnnscopeError("sanity_check() needs at least one explainer")
    table_of = resolve_explainers(explainers, seed=seed)
    x = m.batch(images)
    bs = resolve_batch_size(batch_size, m.device)
    sims = get_similarities(measures)
    targets = resolve_targets(m, x, target, bs)
    units = randomization_units(m, x, layers=layers, max_units=max_units)
    generator = make_generator(x.device, seed)
    work = copy.deepcopy(m.module)
    work.eval()
    wm = dataclasses.replace(m, module=work)
    table = dict(work.named_modules())
    reference = {n: _explain_pair(e, wm, x, targets, bs) for n, e in table_of.items()}
    steps = ["original"] + list(reversed(units))
    result = {n: {s: [fn(*_pair_for(s, reference[n], reference[n]))] for s, fn in sims.items()}
              for n in table_of}
    kept = {n: [reference[n][0].cpu()] for n in table_of} if keep_maps else {}
    for unit in track(steps[1:], progress, f"sanity ({mode})", total=len(steps) - 1):
        saved = None
        if mode == "independent":
            saved = {k: v.detach().clone() for k, v in table[unit].state_dict().items()}
        reinitialize_(table[unit], generator)
        for n, e in table_of.items():
            pair = _explain_pair(e, wm, x, targets, bs)
            for s, fn in sims.items():
                result[n][s].append(fn(*_pair_for(s, reference[n], pair)))
            if keep_maps:
                kept[n].append(pair[0].cpu())
        if saved is not None:
            table[unit].load_state_dict(saved)
    similarity = {n: {s: torch.stack([v.cpu() for v in vals]).to(torch.float64) for s, vals in per.items()}
                  for n, per in result.items()}
    maps = {n: torch.stack(v) for n, v in kept.items()}
    return SanityResult(mode=mode, steps=steps, similarity=similarity, targets=targets, maps=maps)


def _pair_for(measure: str, ref: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The signed maps for the signed Spearman, the shown maps for every other measure."""
    k = 1 if measure == "spearman" else 0
    return ref[k], new[k]
