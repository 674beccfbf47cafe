"""Gradients with respect to the parameters: which weights an image (and a target) pulls on, layer by layer.

The small-CNN tutorial's "gradient visualization" in its training-diagnosis sense: the gradient of a score with
respect to every parameter, summarised per parameter tensor and per layer as an L2 norm, relative to the
parameter's own norm (``|g| / |w|``: the fraction by which one unit-rate gradient step would change it), per filter
of every convolution (the norm over the kernel window: an ``[out, in]`` heatmap), and, for the first convolution,
the gradient itself (one small picture per filter, like the filters it would change).

The score is the target's logit (default), its softmax probability, or the cross-entropy loss of the target
class (what one training step on these images would follow); over several images, the mean. The model runs in
eval mode (batch norm uses its running statistics, dropout is off), the parameters' ``.grad`` and
``requires_grad`` are left as they were: gradients come from :func:`torch.autograd.grad`; frozen parameters are
made differentiable only for the call.

Example:
    >>> g = parameter_gradients(model, "cat.jpg", target="tabby")
    >>> g.layer_table()[0]      # {"layer": "conv_stem", "grad_norm": ..., "weight_norm": ..., "relative": ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attribution.targets import Scorer, parse_target
from ..batching import chunks, resolve_batch_size, track
from ..capture import evaluating, first_tensor
from ..errors import MethodError, ModelError, unknown
from ..models import ModelLike, as_model
from .common import image_set

#: what is differentiated: the target's logit, its probability, or the cross-entropy loss of the target class
SCORES = ("logit", "prob", "loss")


@dataclass
class ParameterGradients:
    """The gradient of one score with respect to every parameter, summarised (a summary over the model's
    parameters: every tensor is on the CPU, in float32).

    Attributes:
        names: the parameters, in ``named_parameters()`` order.
        layers: the module of each parameter (its name without the last part).
        grad_norms: ``[P]`` L2 norm of each parameter's gradient.
        weight_norms: ``[P]`` L2 norm of each parameter.
        numels: number of values of each parameter.
        filter_norms: ``{parameter: [out, in]}`` for every 4-D (convolution) weight: the gradient's L2 norm over
            each kernel window.
        first_layer: the first convolution weight (first 4-D parameter in order), or ``None``.
        first_grad: its gradient ``[out, in, kh, kw]`` (signed), or ``None``.
        unused: parameters the score does not depend on (not on its path; their gradient is zero).
        score: ``"logit"``, ``"prob"`` or ``"loss"``.
        value: the score, mean over the images.
        target: what was differentiated, per image (``"tabby (281)"``).
        classes: the class of each image for class targets, else ``None``.
    """

    names: list[str]
    layers: list[str]
    grad_norms: torch.Tensor
    weight_norms: torch.Tensor
    numels: list[int]
    filter_norms: dict[str, torch.Tensor]
    first_layer: str | None
    first_grad: torch.Tensor | None
    unused: list[str]
    score: str
    value: float
    target: list[str]
    classes: list[int] | None = None
    spec: dict = field(default_factory=dict)

    @property
    def relative(self) -> torch.Tensor:
        """``[P]`` gradient norm over weight norm (``nan`` for an all-zero parameter)."""
        w = self.weight_norms
        return torch.where(w > 0, self.grad_norms / w.clamp_min(1e-30), torch.full_like(w, float("nan")))

    def layer_table(self) -> list[dict]:
        """One row per layer (module), in order: the norms over all its parameters together.

        Returns:
            ``[{"layer", "parameters", "numel", "grad_norm", "weight_norm", "relative"}]``.
        """
        rows: dict[str, dict] = {}
        for name, layer, g, w, n in zip(self.names, self.layers, self.grad_norms.tolist(),
                                        self.weight_norms.tolist(), self.numels):
            r = rows.setdefault(layer, {"layer": layer, "parameters": [], "numel": 0, "g2": 0.0, "w2": 0.0})
            r["parameters"].append(name.rsplit(".", 1)[-1])
            r["numel"] += n
            r["g2"] += g * g
            r["w2"] += w * w
        out = []
        for r in rows.values():
            g, w = r.pop("g2") ** 0.5, r.pop("w2") ** 0.5
            out.append({**r, "grad_norm": g, "weight_norm": w, "relative": g / w if w > 0 else float("nan")})
        return out

    def to_dict(self) -> dict:
        rel = self.relative.tolist()
        return {"score": self.score, "value": self.value, "target": self.target, "classes": self.classes,
                "parameters": [{"name": n, "layer": lay, "numel": k, "grad_norm": g, "weight_norm": w, "relative": r}
                               for n, lay, k, g, w, r in zip(self.names, self.layers, self.numels,
                                                             self.grad_norms.tolist(), self.weight_norms.tolist(),
                                                             rel)],
                "layers": self.layer_table(), "first_layer": self.first_layer,
                "filter_norms": {k: v.tolist() for k, v in self.filter_norms.items()}, "unused": self.unused,
                "spec": self.spec}


def parameter_gradients(model: ModelLike, images: object, *, target: object = None, score: str = "logit",
                        batch_size: int | None = None, progress: bool = False) -> ParameterGradients:
    """The gradient of ``score`` of ``target`` with respect to every parameter of ``model``, summarised.

    Args:
        model: the model (not modified: ``.grad``, ``requires_grad``, training flags are left as they were).
        images: one or more images (anything :meth:`~cnnscope.models.LoadedModel.batch` takes, or
            ``name -> image``); the score is the mean over them.
        target: ``None`` (each image's top-1 class), a class index or label, one per image, a callable
            ``outputs -> Tensor[B]`` or a :class:`cnnscope.Unit` (see :mod:`cnnscope.attribution.targets`).
        score: ``"logit"`` (default), ``"prob"`` (softmax probability) or ``"loss"`` (cross-entropy of the target
            class, as a training step on these images; class targets only).
        batch_size: images per forward (default by device); gradients are summed over the chunks.
        progress: show a progress bar.

    Raises:
        MethodError: an unknown ``score``, or ``"loss"``/``"prob"`` without a class target.
        ModelError: the model has no floating-point parameters.
    """
    m = as_model(model)
    if score not in SCORES:
        raise MethodError(unknown("score", str(score), SCORES))
    x = m.batch(image_set(images)[1])
    n = x.shape[0]
    tgt = parse_target(target, n, m)
    if score != "logit" and tgt.kind != "class":
        raise MethodError(f"score {score!r} needs a class target (None, an index or a label), not a {tgt.kind} "
                          "target; use score='logit'")
    named = [(k, p) for k, p in m.module.named_parameters() if p.is_floating_point()]
    if not named:
        raise ModelError(f"model {m.name!r} has no floating-point parameters to differentiate")
    params = [p for _, p in named]
    flags = [p.requires_grad for p in params]
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    reached = [False] * len(params)
    value = 0.0
    rows_all = torch.arange(n)
    bs = resolve_batch_size(batch_size, m.device)
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad(), evaluating(m.module), Scorer(m.module, tgt) as sc:
            for sl in track(chunks(n, bs), progress, "parameter gradients", total=-(-n // bs)):
                rows = rows_all[sl]
                out, acts = sc.forward(x[sl])
                tgt.bind(out, acts, rows)
                if score == "loss":
                    logits = first_tensor(out).float()
                    s = F.cross_entropy(logits, tgt.classes[rows].to(logits.device), reduction="none")
                else:
                    s = tgt.score(out, acts, rows, score)
                s = s.sum() / n
                value += float(s.detach())
                grads = torch.autograd.grad(s, params, allow_unused=True)
                for i, g in enumerate(grads):
                    if g is not None:
                        total[i] += g.detach().float()
                        reached[i] = True
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    names = [k for k, _ in named]
    cpu = [g.cpu() for g in total]
    filters = {k: g.flatten(2).norm(dim=2) for k, g in zip(names, cpu) if g.ndim == 4}
    first = next((k for k in names if k in filters), None)
    return ParameterGradients(
        names=names, layers=[k.rsplit(".", 1)[0] if "." in k else "" for k in names],
        grad_norms=torch.stack([g.norm() for g in cpu]),
        weight_norms=torch.stack([p.detach().float().norm().cpu() for p in params]),
        numels=[p.numel() for p in params], filter_norms=filters, first_layer=first,
        first_grad=cpu[names.index(first)] if first is not None else None,
        unused=[k for k, r in zip(names, reached) if not r], score=score, value=value,
        target=[tgt.describe(i) for i in range(n)], classes=tgt.class_list(),
        spec={"target": tgt.spec(), "score": score, "images": n})
