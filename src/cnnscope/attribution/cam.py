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
from ..capture import Capture, list_layers, patch_outputs, resolve_layers
from ..errors import LayerError, MethodError
from ..models import ModelLike, as_model
from .base import Method, register_method
from .gradient import GRADIENT_BATCH_SIZE, GuidedBackprop
from .targets import Scorer

CAM_DISPLAY: dict[str, Any] = {"sign": "positive", "reduce": "sum"}


def auto_layer(model: ModelLike, *, input_size: tuple[int, int] | None = None) -> str:
    """The layer a CAM uses by default: the last one whose output still has spatial extent larger than 1x1.

    Layers are ordered by when the forward enters them (one probe forward, :func:`cnnscope.capture.list_layers`);
    modules that run more than once are skipped. When that layer is the last piece of a container with the same
    output (``bn2.act`` inside ``bn2``, ``layer4.1.bn2`` inside ``layer4``), the outermost such container is
    named, since its output is the one the rest of the network reads.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        input_size: ``(H, W)`` of the probe (default: the model's input size).

    Raises:
        LayerError: no layer has a spatial output larger than 1x1.
    """
    m = as_model(model)
    size = tuple(input_size) if input_size is not None else tuple(m.input_size)
    infos = list_layers(m.module, size, in_channels=len(m.mean))
    order = {i.name: k for k, i in enumerate(infos)}
    spatial = [i for i in infos if i.calls == 1 and i.spatial is not None and i.spatial[0] * i.spatial[1] > 1]
    if not spatial:
        raise LayerError(f"{m.name} has no layer with a spatial output larger than 1x1 at input size {size}; CAM "
                         "methods need a convolutional layer")
    best = spatial[-1]
    table = {i.name: i for i in infos}
    while "." in best.name:
        parent = table.get(best.name.rsplit(".", 1)[0])
        if parent is None or parent.calls != 1 or parent.output_shape != best.output_shape:
            break
        later = [i for i in infos[order[best.name] + 1:] if i.name.startswith(parent.name + ".")]
        if later:
            break
        best = parent
    return best.name


def layer_gradients(module: nn.Module, scorer: Scorer, x: torch.Tensor, layer: str, rows: torch.Tensor,
                    bind: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``A`` of ``layer`` and the gradients ``d score / d A`` for the batch ``x``.

    The layer's output is replaced by a copy that is a leaf of the autograd graph; the network below the
    layer runs without recording a graph and the backward ends at the layer.

    Shape:
        - x: ``[N, C, H, W]``; Outputs: two ``[N, K, h, w]`` tensors.

    Raises:
        LayerError: the layer ran twice, returned no tensor, or the target does not depend on it.
    """
    state: dict[str, Any] = {"leaf": None, "calls": 0}

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
        return leaf.clone()

    grad_mode = torch.is_grad_enabled()
    try:
        torch.set_grad_enabled(False)
        with patch_outputs(module, {layer: swap}):
            out, acts = scorer.forward(x)
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
    return leaf.detach(), grad


def _check_spatial(a: torch.Tensor, layer: str) -> None:
    if a.ndim != 4 or a.shape[-1] * a.shape[-2] <= 1:
        raise LayerError(f"layer {layer!r} outputs shape {list(a.shape[1:])} without spatial extent; CAM methods "
                         "need a [C, H, W] output with H*W > 1 (a convolutional layer, not a pooled or linear one)")


class CamMethod(Method):
    """Base of the CAM family: ``ReLU(sum_k W_k A_k)``; subclasses implement :meth:`weights`.

    Options:
        relu: apply the final ReLU (keep only evidence *for* the target); ``False`` returns the signed map.
        batch_size: images per forward/backward (default: 32 on every device).
    """

    kind = "layer"
    uses_layer = True
    default_batch_size = GRADIENT_BATCH_SIZE
    uses_gradients: ClassVar[bool] = True
    default_relu: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"relu": None}
    display: ClassVar[dict[str, Any]] = CAM_DISPLAY

    def resolve_layer(self, x: torch.Tensor, layer: str | None) -> tuple[str, str]:
        if layer is None:
            name = auto_layer(self.model, input_size=tuple(x.shape[-2:]))
            return name, "auto: the last layer whose output has spatial extent > 1x1"
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
        for part in track(list(chunks(x.shape[0], self.batch_size(x))), self.opts["progress"], self.name):
            xb, rows = x[part], every[part]
            if self.uses_gradients:
                acts, grads = layer_gradients(self.module, scorer, xb, layer, rows, bind=True)
            else:
                acts, grads = self._activations(scorer, xb, layer, rows), None
            _check_spatial(acts, layer)
            w = self.weights(acts, grads, xb, scorer, rows)
            cam = (w * acts).sum(dim=1, keepdim=True)
            relu = self.default_relu if self.opts["relu"] is None else bool(self.opts["relu"])
            parts.append(cam.clamp(min=0) if relu else cam)
        return torch.cat(parts)

    @torch.no_grad()
    def _activations(self, scorer: Scorer, x: torch.Tensor, layer: str, rows: torch.Tensor) -> torch.Tensor:
        with Capture(self.module, layer, clone=True, stop_early=False, eval_mode=self.opts["eval_mode"]) as cap:
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

    def resolve_layer(self, x: torch.Tensor, layer: str | None) -> tuple[str, str]:
        return CamMethod.resolve_layer(self, x, layer)

    def compute(self, x: torch.Tensor, scorer: Scorer, layer: str | None) -> torch.Tensor:
        opts = {k: self.opts[k] for k in ("batch_size", "eval_mode")}
        cam = GradCAM(self.model, **opts).compute(x, scorer, layer)
        guided = GuidedBackprop(self.model, **opts).compute_rows(x, scorer, torch.arange(x.shape[0]))
        return guided * F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
