"""The CAM family: Grad-CAM, Grad-CAM++, LayerCAM, HiResCAM, Score-CAM, and guided Grad-CAM.

A CAM is ``ReLU(sum_k W_k * A_k)`` over the channels ``A_k`` of one layer; each variant is a small subclass that
only says how to weight the channels (:meth:`CamMethod.weights`). Activations and gradients come from one
forward in which the layer's output is swapped for a fresh leaf tensor (:func:`layer_gradients`), so the
backward stops at the layer and works with in-place activations after it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import chunks, track
from ..capture import Capture, LayerInfo, evaluating, list_layers, patch_outputs, resolve_layers
from ..capture.capture import undetermined
from ..capture.inputs import InputCapture
from ..capture.layout import LayoutProbe, channels_first_module
from ..errors import LayerError, MethodError
from ..models import LoadedModel, ModelLike, as_model
from ..units import as_nchw, check_layout
from .base import Method, register_method
from .gradient import GRADIENT_BATCH_SIZE, GuidedBackprop
from .targets import Scorer

CAM_DISPLAY: dict[str, Any] = {"sign": "positive", "reduce": "sum"}


def auto_layer(model: ModelLike, *, input_size: tuple[int, int] | None = None) -> str:
    """The layer a CAM uses by default: the module whose output is the model's final spatial feature map.

    One probe forward (:func:`cnnscope.capture.list_layers`) gives every module's output tensor, its layout and
    grid. The final feature map is the last tensor the forward made whose grid is larger than 1x1 (in its layout:
    ``[B, H, W, C]`` and token outputs count by their grid, not by dim 1); the layer named is the outermost module
    that returns that very tensor and runs once. So an Inception block's concatenated output is named
    (``inception5b``, ``Mixed_7c``), never one of its branches, and ``layer4`` rather than ``layer4.1.bn2``, whose
    output ``layer4`` returns after the in-place residual add and ReLU.

    * A map made by a function rather than a module cannot be named; the module whose output feeds it is: DenseNet's
      features pass through ``F.relu`` inside ``forward()``, so ``features`` (its ``norm5`` output, before that ReLU;
      the gradient flows back through the ReLU) is chosen.
    * A map made inside a block that returns another grid map is one of its internals, not the final map: at an
      input size where Inception-v3's last blocks are 1x1, the choice is the last block with a larger map
      (``Mixed_6e``), never a branch of ``Mixed_7a``.
    * Token maps with a class token (ViT) whose grid positions do not reach the classifier's input (the head reads
      the class token only, so the last block's patch tokens have no gradient) are skipped, by one backward at the
      probe size: the choice is the last token map of the model's width (the width of its final token map, so not a
      ``qkv`` projection) that does reach it, the last block's first norm.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        input_size: ``(H, W)`` of the probe (default: the model's input size).

    Raises:
        LayerError: no layer has a spatial output larger than 1x1, or the final map's layout is undetermined.
    """
    m = as_model(model)
    size = tuple(input_size) if input_size is not None else tuple(m.input_size)
    infos = list_layers(m.module, size, in_channels=len(m.mean))
    groups: dict[int, list[LayerInfo]] = {}
    for i in infos:  # parents are entered before their children: the outermost module of a tensor comes first
        if i.calls == 1 and i.output_id is not None and i.spatial is not None and i.spatial[0] * i.spatial[1] > 1:
            groups.setdefault(i.output_id, []).append(i)
    if not groups:
        raise LayerError(f"{m.name} has no layer with a spatial output larger than 1x1 at input size {size}; CAM "
                         "methods need a convolutional layer")
    last = max(groups)
    open_maps = [i for i in infos if i.calls == 1 and i.layout is None and i.output_shape is not None
                 and len(i.output_shape) == 3 and min(i.output_shape) > 1 and (i.output_id or 0) > last]
    if open_maps:
        i = open_maps[-1]
        raise LayerError(f"{m.name}: the output of {i.name!r} {list(i.output_shape)} comes after the last feature "
                         f"map with a known layout ({groups[last][0].name!r}) but its own layout is undetermined; "
                         "pass layer= (the CAM layer) explicitly")
    candidates = [groups[k][0] for k in sorted(groups, reverse=True)]
    width = next((c.channels for c in candidates if c.layout == "tokens+cls"), None)
    cls_maps = [c.name for c in candidates if c.layout == "tokens+cls" and c.channels == width]
    reaching = _reaching(m, infos, cls_maps, size) if cls_maps else set()
    table = {i.name: i for i in infos}
    modules = dict(m.module.named_modules())
    for c in candidates:
        if c.layout == "tokens+cls" and c.name not in reaching:
            continue
        if c.layout in ("nchw", "nhwc") and _block_inside(c, table, modules):
            continue
        return c.name
    return candidates[0].name


def _block_inside(info: LayerInfo, table: dict[str, LayerInfo], modules: dict[str, nn.Module]) -> bool:
    """Whether ``info``'s map is made inside a block that returns another map (one branch of an Inception block
    whose own output is 1x1 at a small input size): a block's internals are never its final map. A ``Sequential``
    (or a subclass, such as torchvision's ``Conv2dNormActivation``) is not such a block (``features =
    Sequential(conv, relu, AdaptiveAvgPool2d(1))``: its last map is the final one)."""
    name = info.name
    while "." in name:
        name = name.rsplit(".", 1)[0]
        parent = table.get(name)
        if parent is None or parent.calls != 1 or parent.output_id == info.output_id:
            continue
        # a Sequential runs its children one after another: a map made inside it flows on to its (pooled) output
        if parent.layout in ("nchw", "nhwc") and not isinstance(modules.get(name), nn.Sequential):
            return True
    return False


def _reaching(m: LoadedModel, infos: list[LayerInfo], names: list[str], size: tuple[int, int]) -> set[str]:
    """Which of ``names`` have grid positions (class token dropped) that the classifier's input depends on.

    One forward and backward of a seeded random picture (no parameter gradient is stored): the score is a seeded
    random projection of the input of the last leaf module that runs (the classifier), so neither a zero-initialised
    head nor a normalisation whose outputs sum to a constant hides the path. Unconnected positions get exact zeros.
    """
    leaves = [i.name for i in infos if i.leaf and i.calls >= 1]
    if not leaves:
        return set(names)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, len(m.mean), *size, generator=gen).to(device=m.device, dtype=m.dtype).requires_grad_(True)
    with evaluating(m.module), torch.enable_grad(), InputCapture(m.module, leaves[-1], stop_early=False) as head, \
            Capture(m.module, names, grads=True, stop_early=False) as cap:
        cap.run(x)
        feature = head[leaves[-1]]
        if not feature.requires_grad:
            return set(names)
        weights = torch.randn(feature.shape, generator=gen).to(device=feature.device, dtype=torch.float32)
        torch.autograd.grad((feature.float() * weights).sum(), x, allow_unused=True)
    return {n for n in names if n in cap.grads and bool(cap.grads[n].abs().amax() > 0)}


def layer_gradients(module: nn.Module, scorer: Scorer, x: torch.Tensor, layer: str, rows: torch.Tensor,
                    bind: bool, layout: str | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Activations ``A`` of ``layer`` and the gradients ``d score / d A`` for the batch ``x``, as ``[N, K, h, w]``
    views in the layer's layout, and that layout.

    The layer's output is replaced by a copy that is a leaf of the autograd graph; the network below the
    layer runs without recording a graph and the backward ends at the layer. ``layout`` ``None``: detected in the
    same forward (:mod:`cnnscope.capture.layout`); a class token's activations and gradients are dropped.

    Shape:
        - x: ``[N, C, H, W]``; Outputs: two ``[N, K, h, w]`` tensors.

    Raises:
        LayerError: the layer ran twice, returned no tensor, its layout is undetermined, or the target does not
            depend on it.
    """
    state: dict[str, Any] = {"leaf": None, "calls": 0}
    if layout is None and channels_first_module(resolve_layers(module, layer)[layer]):
        layout = "nchw"  # a convolution's (batch norm's, pooling's) 4-D output; checked by as_nchw below
    probe = LayoutProbe(module) if layout is None else None

    def swap(y: object) -> torch.Tensor:
        state["calls"] += 1
        if state["calls"] > 1:
            raise LayerError(f"layer {layer!r} runs more than once per forward (a reused module); CAM methods need "
                             "a layer that runs once: choose its parent block or another layer")
        if not isinstance(y, torch.Tensor):
            raise LayerError(f"layer {layer!r} returns {type(y).__name__}, not a tensor; choose another layer")
        torch.set_grad_enabled(True)
        leaf = y.detach().clone().requires_grad_(True)
        state["leaf"] = leaf
        copy = leaf.clone()
        if probe is not None:
            probe.alias(copy, y)
        return copy

    grad_mode = torch.is_grad_enabled()
    try:
        torch.set_grad_enabled(False)
        with patch_outputs(module, {layer: swap}):
            if probe is not None:
                probe.attach()
            try:
                out, acts = scorer.forward(x)
            finally:
                if probe is not None:
                    probe.detach()
        if state["leaf"] is None:
            raise LayerError(f"layer {layer!r} did not run in the forward pass (a unit target must lie after the "
                             "CAM layer)")
        torch.set_grad_enabled(True)
        if bind:
            scorer.target.bind(out, acts, rows)
        score = scorer.target.score(out, acts, rows)
        leaf = state["leaf"]
        grad = None
        if score.requires_grad:
            (grad,) = torch.autograd.grad(score.sum(), leaf, allow_unused=True)
    finally:
        torch.set_grad_enabled(grad_mode)
    if grad is None:
        raise LayerError(f"the target does not depend on layer {layer!r} (a unit target must lie after the CAM "
                         "layer)")
    if probe is not None:  # a forward that stopped early (a unit target) still tells what the rules need, mostly
        layout = probe.output_layout(layer)
        if layout is None:
            raise undetermined(layer, tuple(leaf.shape), probe.why(layer))
    assert layout is not None
    size = (int(x.shape[-2]), int(x.shape[-1]))
    return as_nchw(leaf.detach(), layout, size, layer), as_nchw(grad, layout, size, layer), layout


def _check_spatial(a: torch.Tensor, layer: str) -> None:
    if a.ndim != 4 or a.shape[-1] * a.shape[-2] <= 1:
        raise LayerError(f"layer {layer!r} outputs shape {list(a.shape[1:])} without spatial extent; CAM methods "
                         "need a [C, H, W] output with H*W > 1 (a convolutional layer, not a pooled or linear one)")


class CamMethod(Method):
    """Base of the CAM family: ``ReLU(sum_k W_k A_k)``; subclasses implement :meth:`weights`.

    The map lies on the layer's grid in its layout (:mod:`cnnscope.capture.layout`): channels of a ``[B, H, W, C]``
    or token layer are its last dimension, a class token is dropped, and the map is ``[B, 1, h, w]``.

    Options:
        relu: apply the final ReLU (keep only evidence *for* the target); ``False`` returns the signed map.
        batch_size: images per forward/backward (default: 32 on every device).
        layout: the layer's layout when it cannot be detected (``"nchw"``, ``"nhwc"``, ``"tokens"``,
            ``"tokens+cls"``); ``None`` detects it.
    """

    kind = "layer"
    uses_layer = True
    default_batch_size = GRADIENT_BATCH_SIZE
    uses_gradients: ClassVar[bool] = True
    default_relu: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"relu": None, "layout": None}
    display: ClassVar[dict[str, Any]] = CAM_DISPLAY

    def check_options(self) -> None:
        if self.opts["layout"] is not None:
            check_layout(self.opts["layout"])

    def resolve_layer(self, x: torch.Tensor, layer: str | None) -> tuple[str, str]:
        if layer is None:
            name = auto_layer(self.model, input_size=tuple(x.shape[-2:]))
            return name, "auto: the module whose output is the model's final spatial feature map"
        resolve_layers(self.module, layer)
        return layer, "given"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, x: torch.Tensor, scorer: Scorer,
                rows: torch.Tensor) -> torch.Tensor:
        """Channel weights ``[N, K, 1, 1]`` or per-position ones ``[N, K, h, w]`` (row ``j`` is image ``rows[j]``)."""
        raise NotImplementedError

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        assert layer is not None
        parts = []
        every = torch.arange(x.shape[0])
        layout = self.opts["layout"]
        for part in track(list(chunks(x.shape[0], self.batch_size(x))), self.opts["progress"], self.name):
            xb, rows = x[part], every[part]
            if self.uses_gradients:
                acts, grads, layout = layer_gradients(self.module, scorer, xb, layer, rows, bind=True, layout=layout)
            else:
                acts, grads = self._activations(scorer, xb, layer, rows, layout), None
            _check_spatial(acts, layer)
            w = self.weights(acts, grads, xb, scorer, rows)
            cam = (w * acts).sum(dim=1, keepdim=True)
            relu = self.default_relu if self.opts["relu"] is None else bool(self.opts["relu"])
            parts.append(cam.clamp(min=0) if relu else cam)
        return torch.cat(parts)

    @torch.no_grad()
    def _activations(self, scorer: Scorer, x: torch.Tensor, layer: str, rows: torch.Tensor, layout: str | None
                     ) -> torch.Tensor:
        """The layer's activations as ``[N, K, h, w]`` views (:class:`~cnnscope.capture.Capture` reads the layout)."""
        with Capture(self.module, layer, clone=True, stop_early=False, eval_mode=self.opts["eval_mode"],
                     layout=layout or "auto") as cap:
            out, acts = scorer.forward(x)
            scorer.target.bind(out, acts, rows)
        if layer not in cap.activations:
            raise LayerError(f"layer {layer!r} did not run (a unit target must lie after the CAM layer)")
        return cap.activations[layer]


@register_method
class GradCAM(CamMethod):
    """Grad-CAM: ``W_k = mean_ij dY/dA_k[i, j]`` (Selvaraju et al. 2017)."""

    name = "gradcam"
    title = "Grad-CAM"
    reference = "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks"

    def weights(self, acts, grads, x, scorer, rows):
        return grads.mean(dim=(2, 3), keepdim=True)


@register_method
class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 with ``Y = exp(S)``).

    ``alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where the denominator is 0) and
    ``W_k = sum_ij alpha_kij ReLU(g_kij)``, with ``g = dS/dA``; the common factor ``exp(S)`` of the paper's
    ``dY/dA`` is dropped (it scales the whole map).
    """

    name = "gradcam_pp"
    title = "Grad-CAM++"
    reference = "Chattopadhay et al. 2018, Grad-CAM++: Improved Visual Explanations"

    def weights(self, acts, grads, x, scorer, rows):
        g2 = grads * grads
        denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(denom))
        return (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)


@register_method
class LayerCAM(CamMethod):
    """LayerCAM: per-position weights ``ReLU(dY/dA_k[i, j])`` (Jiang et al. 2021)."""

    name = "layercam"
    title = "LayerCAM"
    reference = "Jiang et al. 2021, LayerCAM: Exploring Hierarchical Class Activation Maps"

    def weights(self, acts, grads, x, scorer, rows):
        return grads.clamp(min=0)


@register_method
class HiResCAM(CamMethod):
    """HiResCAM: ``sum_k dY/dA_k * A_k`` elementwise, signed (Draelos & Carin 2020; ``relu=True`` clips it).

    On a GAP + linear head it equals CAM (Zhou et al. 2016) divided by the number of positions.
    """

    name = "hirescam"
    title = "HiResCAM"
    reference = "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM for faithful explanations"
    default_relu = False

    def weights(self, acts, grads, x, scorer, rows):
        return grads


@register_method
class ScoreCAM(CamMethod):
    """Score-CAM (Wang et al. 2020, Algorithm 1): weights from the scores of masked inputs, no gradients.

    Each channel ``A_k`` is upsampled (bilinear) to the input size and min-max normalised to ``H_k`` in [0, 1];
    the target's score ``s_k`` of ``x * H_k`` is computed for every channel, and ``W = softmax_k(s)``. The
    baseline term ``f(X_b)`` of the paper's Eq. 4 is the same for every channel and cancels in the softmax.
    Channels that are constant (all zero after a ReLU) give an all-zero mask, and channels equal up to scale
    and offset give the same mask: each distinct mask is scored once (``spec["scorecam_forwards"]`` counts
    them). Masked inputs go through the model ``batch_size`` at a time (default: 4 on a CPU, 32 on a GPU).

    Options:
        score: ``"logit"`` (default) or ``"prob"`` for the per-mask score before the softmax over channels.
        align_corners: of the bilinear mask upsampling: ``False`` as in the authors' code, ``True`` as
            pytorch-grad-cam's ``UpsamplingBilinear2d``.
    """

    name = "scorecam"
    title = "Score-CAM"
    reference = "Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations for CNNs"
    uses_gradients = False
    default_batch_size: ClassVar[dict[str, int]] = {"cpu": 4, "gpu": 32}
    options: ClassVar[dict[str, Any]] = {"score": "logit", "align_corners": False}

    def check_options(self) -> None:
        super().check_options()
        if self.opts["score"] not in ("logit", "prob"):
            raise MethodError(f"scorecam: score must be 'logit' or 'prob', got {self.opts['score']!r}")

    def weights(self, acts, grads, x, scorer, rows):
        n, k, h, w = acts.shape
        flat = acts.flatten(2)
        lo, hi = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)
        span = hi - lo
        norm = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
        # One mask per distinct normalised map of an image: bilinear upsampling commutes with the affine
        # min-max normalisation, so channels equal up to scale and offset (all-zero ones, single hot pixels)
        # give the same mask and the same score.
        image_id = torch.arange(n, device=acts.device, dtype=acts.dtype).view(n, 1, 1).expand(n, k, 1)
        uniq, inverse = torch.unique(torch.cat([image_id, norm], dim=2).view(n * k, -1), dim=0,
                                     return_inverse=True)
        img_of = uniq[:, 0].long().cpu()
        maps = uniq[:, 1:].view(-1, 1, h, w)
        size, corners = x.shape[-2:], bool(self.opts["align_corners"])

        def make(jobs: torch.Tensor) -> torch.Tensor:
            up = F.interpolate(maps[jobs.to(maps.device)], size=size, mode="bilinear", align_corners=corners)
            lo_, hi_ = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            mask = torch.where(hi_ > lo_, (up - lo_) / torch.where(hi_ > lo_, hi_ - lo_, torch.ones_like(hi_)), 0.0)
            return x[img_of[jobs]] * mask

        from .perturbation import fast_scorer  # the masked copies run on the fast forward (folded where exact)

        scores = fast_scorer(self, x, scorer, rows).map_scores(make, rows[img_of], self.batch_size(x),
                                                               kind=self.opts["score"],
                                                               progress=self.opts["progress"], desc=self.name)
        self.extra["scorecam_forwards"] = self.extra.get("scorecam_forwards", 0) + int(len(img_of))
        full = scores[inverse.to(scores.device)].view(n, k)
        return full.softmax(dim=1).to(acts.dtype)[:, :, None, None]


@register_method
class GuidedGradCAM(Method):
    """Guided Grad-CAM: guided backprop times the Grad-CAM map upsampled to the input (Selvaraju et al. 2017)."""

    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    reference = "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks"
    uses_layer = True
    default_batch_size = GRADIENT_BATCH_SIZE
    options: ClassVar[dict[str, Any]] = {"layout": None}

    def check_options(self) -> None:
        CamMethod.check_options(self)  # type: ignore[arg-type]

    def resolve_layer(self, x: torch.Tensor, layer: str | None) -> tuple[str, str]:
        return CamMethod.resolve_layer(self, x, layer)

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        opts = {k: self.opts[k] for k in ("batch_size", "eval_mode")}
        cam = GradCAM(self.model, layout=self.opts["layout"], **opts).compute(x, scorer, layer)
        guided = GuidedBackprop(self.model, **opts).compute_rows(x, scorer, torch.arange(x.shape[0]))
        return guided * F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
