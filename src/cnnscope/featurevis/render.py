"""``render``: batched, truncated feature visualization.

One call renders one image per objective (``k`` per objective with ``diversity=k``), in chunks of
``batch_size`` images. Each step: image = param(); x = transforms(image); the model runs up to the deepest layer
the objectives read (one :class:`~cnnscope.capture.Capture` with ``stop_early`` stays open, so every pass after
the first stops there); the renderer maximises the sum of the objectives with ``torch.autograd.grad`` on the
image parameters only (the model's ``.grad`` fields are never written) and the recipe's optimiser.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import Capture, evaluating, first_tensor, module_device, module_dtype
from ..errors import CnnscopeError, MethodError
from ..images import to_uint8
from ..models.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from .objectives import INPUT, OUTPUT, Diversity, Objective
from .param import as_size, generators
from .recipes import Recipe, get_recipe
from .registry import from_spec

#: smallest image side the renderer accepts
MIN_SIZE = 16
#: images per chunk when ``batch_size`` is not given: on a CPU larger batches leave the caches and cost more per
#: image (EfficientNet-Lite0 to blocks.4.0 at 128 px: 17 ms per image at 8, 29 ms at 32); GPUs like them large
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}
#: default weight of the diversity term (``render(..., diversity=k)``)
DIVERSITY_WEIGHT = 30.0
#: offset between the seed of an image's initialisation and the seed of its transforms
TRANSFORM_SEED_OFFSET = 0x5EED


@dataclass
class RenderResult:
    """What :func:`render` returns.

    Attributes:
        images: ``uint8 [N, H, W, 3]``, one image per objective (``k`` consecutive ones with ``diversity=k``).
        activations: ``float64 [N]``: each image's objective measured on the final *untransformed* image.
        trace: ``float32 [steps, N]``: the maximised value (objective, plus the diversity term if any) of every
            step, on the transformed images.
        spec: JSON: objectives, recipe, steps, size, seeds, diversity.
        labels: ``repr`` of each image's objective.
        snapshots: ``step -> uint8 [N, H, W, 3]`` at the requested ``thresholds``.
        timing: seconds in all and milliseconds per step / per image-step.
    """

    images: np.ndarray
    activations: np.ndarray
    trace: np.ndarray
    spec: dict
    labels: list[str] = field(default_factory=list)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the pixels)."""
        return {"spec": self.spec, "labels": list(self.labels),
                "activations": [float(a) for a in self.activations],
                "final_trace": [float(v) for v in self.trace[-1]] if len(self.trace) else [],
                "timing": dict(self.timing), "snapshots": sorted(int(s) for s in self.snapshots)}


@dataclass
class _Model:
    module: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def device(self) -> torch.device:
        return module_device(self.module)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.mean) == 1:  # single-channel model: ITU-R 601 luma
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(
                1, keepdim=True)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return ((x - mean) / std).to(module_dtype(self.module))


def _as_model(model: nn.Module | LoadedModel, mean: Sequence[float] | None, std: Sequence[float] | None) -> _Model:
    if isinstance(model, LoadedModel):
        return _Model(model.module, tuple(mean or model.mean), tuple(std or model.std), model.name)
    if not isinstance(model, nn.Module):
        raise CnnscopeError(f"render() needs an nn.Module or a LoadedModel, got {type(model).__name__}")
    return _Model(model, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD), type(model).__name__)


def as_objectives(objectives: Objective | Mapping | Sequence[Objective | Mapping]) -> list[Objective]:
    """An objective, a spec dict, or a list of them -> list of :class:`Objective`."""
    items = [objectives] if isinstance(objectives, (Objective, Mapping)) else list(objectives)
    if not items:
        raise MethodError("no objectives given")
    out = []
    for o in items:
        if isinstance(o, Mapping):
            o = from_spec(o)
        if not isinstance(o, Objective):
            raise MethodError(f"objectives are cnnscope.featurevis objectives or their specs, got "
                              f"{type(o).__name__} (e.g. channel('blocks.4.0', 3))")
        out.append(o)
    return out


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed)] * n
    seeds = [int(s) for s in seed]  # type: ignore[union-attr]
    if len(seeds) != n:
        raise CnnscopeError(f"got {len(seeds)} seeds for {n} objectives")
    return seeds


class _PlainForward:
    """Stands in for a Capture when only the model's output is read."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.activations = module, {}

    def run(self, x: torch.Tensor) -> Any:
        return self.module(x)


@contextlib.contextmanager
def _forward(module: nn.Module, layers: Sequence[str], stop_early: bool) -> Iterator[Any]:
    """A Capture on ``layers`` (or a plain forward when the objectives read only the output)."""
    if not layers:
        yield _PlainForward(module)
        return
    with Capture(module, list(layers), stop_early=stop_early) as cap:
        yield cap


def _acts(cap: Any, out: Any, image: torch.Tensor, needs_output: bool) -> dict[str, torch.Tensor]:
    acts = {k: v.float() for k, v in cap.activations.items()}
    acts[INPUT] = image
    if needs_output:
        t = first_tensor(out)
        acts[OUTPUT] = t.float() if t is not None else None  # type: ignore[assignment]
    return acts


def _evaluate(objs: Sequence[Objective], group: int, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Objective ``i`` on images ``[i*group, (i+1)*group)``; returns ``[len(objs) * group]``."""
    vals = []
    for i, obj in enumerate(objs):
        sub = {k: (v[i * group:(i + 1) * group] if v is not None else None) for k, v in acts.items()}
        vals.append(obj(sub))
    return torch.cat(vals)


def _first_forward(cap: Any, x: torch.Tensor, size: tuple[int, int], layers: Sequence[str]) -> Any:
    """The first pass of a render (a full forward: the capture layer checks for reused modules then)."""
    try:
        return cap.run(x)
    except RuntimeError as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        if "too small" in text.lower() or "greater than actual input size" in text:
            raise CnnscopeError(f"size {size[0]}x{size[1]} is too small for this model up to layer(s) "
                                f"{', '.join(layers) or 'output'} ({first}); use a larger --size") from None
        raise CnnscopeError(f"the model cannot run on {size[0]}x{size[1]} inputs ({first}); the first pass of a "
                            "render runs the whole model, so use a size it accepts (e.g. its input size)") from None


def _check_shapes(objs: Sequence[Objective], acts: Mapping[str, torch.Tensor | None], size: tuple[int, int]
                  ) -> None:
    shapes = {k: tuple(v.shape[1:]) for k, v in acts.items() if v is not None}
    for name, shape in shapes.items():
        if len(shape) == 3 and min(shape[1:]) < 1:
            raise CnnscopeError(f"size {size[0]}x{size[1]} is too small: layer {name!r} has an empty map")
    for o in objs:
        o.check(shapes)


def _render_chunk(model: _Model, objs: Sequence[Objective], measured: Sequence[Objective], seeds: Sequence[int],
                  group: int, recipe: Recipe, steps: int, size: tuple[int, int], thresholds: Sequence[int],
                  truncate: bool, amp: bool, channels_last: bool, bar: Any) -> dict[str, Any]:
    device = model.device
    image_seeds = [s + j for s in seeds for j in range(group)]
    param = recipe.make_param(image_seeds, size, device)
    pipeline = recipe.make_transforms().to(device)
    filters = recipe.make_filters()
    gens = generators([s + TRANSFORM_SEED_OFFSET for s in image_seeds], device)
    params = [p for p in param.parameters() if p.requires_grad]
    opt = recipe.make_optimizer(params)
    layers = list(dict.fromkeys(k for o in objs for k in o.layers))
    needs_output = any(o.needs_output for o in objs)
    trace = torch.empty(steps, len(image_seeds), device=device)
    snaps: dict[int, np.ndarray] = {}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with _forward(model.module, layers, stop_early=truncate and not needs_output) as cap:
        for step in range(steps):
            image = param()
            x = model.normalize(pipeline(image, gens))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = _first_forward(cap, x, size, layers) if step == 0 else cap.run(x)
            acts = _acts(cap, out, image, needs_output)
            if step == 0:
                _check_shapes(objs, acts, size)
            vals = _evaluate(objs, group, acts)
            grads = torch.autograd.grad(-vals.sum(), params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g
            opt.step()
            param.project_()
            if any(f.due(step) for f in filters):
                with torch.no_grad():
                    img = param().detach()
                    for f in filters:
                        img = f(img, step, steps)
                    param.set_image_(img)
            trace[step] = vals.detach()
            if step + 1 in thresholds:
                snaps[step + 1] = to_uint8(param().detach())
            bar.update(1)
        with torch.no_grad():
            image = param().detach()
            out = cap.run(model.normalize(image))
            final = _evaluate(measured, group, _acts(cap, out, image, needs_output))
    return {"images": to_uint8(image), "activations": final.double().cpu().numpy(),
            "trace": trace.float().cpu().numpy(), "snapshots": snaps}


def render(module: nn.Module | LoadedModel, objectives: Objective | Mapping | Sequence[Objective | Mapping],
           recipe: str | Recipe | None = "lucid", steps: int = 512, size: int | Sequence[int] = 128,
           seed: int | Sequence[int] = 0, batch_size: int | None = None, thresholds: Sequence[int] | None = None,
           progress: bool = False, *, diversity: int = 1, diversity_layer: str | None = None,
           diversity_weight: float = DIVERSITY_WEIGHT, param: Any = None, param_options: Mapping | None = None,
           transforms: Any = None, filters: Any = None, optimizer: str | None = None, lr: float | None = None,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None, truncate: bool = True,
           amp: bool = False, channels_last: bool | None = None) -> RenderResult:
    """Render one image per objective by gradient ascent.

    Args:
        module: the model (``nn.Module`` or ``LoadedModel``); it is not modified (eval mode is temporary).
        objectives: an objective, a list of them (one image each) or their ``.spec()`` dicts.
        recipe: ``"lucid"`` (default), ``"plain"``, ``"gaussian_blur"``, ``"bilateral_blur"``, ``"maco"`` or a
            :class:`~cnnscope.featurevis.recipes.Recipe`.
        steps: optimisation steps.
        size: image size ``H`` or ``(H, W)``, at least :data:`MIN_SIZE`.
        seed: one seed for all objectives, or one per objective. Image ``j`` of an objective with seed ``s``
            starts from seed ``s + j``; a batched render equals single renders with the same seeds.
        batch_size: images per chunk (memory bound); default :data:`DEFAULT_BATCH` (8 on a CPU, 32 on a GPU).
        thresholds: steps at which to keep snapshots of the images.
        progress: show a tqdm progress bar.
        diversity: images per objective; with ``k > 1`` each objective's images are pushed apart by
            ``- diversity_weight * diversity(diversity_layer)`` (default layer: the objective's deepest layer).
        param, param_options, transforms, filters, optimizer, lr: override the recipe's parts.
        mean, std: input normalisation (default: the ``LoadedModel``'s, else ImageNet's).
        truncate: stop each forward at the deepest layer needed (``False`` runs the whole model; same result).
        amp: run the model under bfloat16 autocast (faster on recent GPUs; values differ slightly).
        channels_last: feed channels-last inputs (default ``None``: on; 1.15x-1.35x faster per step on a CPU with
            oneDNN, faster on CUDA; float summation order differs from contiguous inputs, ~1e-6 relative).

    Returns:
        :class:`RenderResult`.

    Raises:
        LayerError: unknown layer (with close matches), channel or position out of range.
        CnnscopeError: bad steps/size/seeds, or a size too small for the model.
        MethodError: unknown recipe, parameterization, transform preset or optimiser.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise CnnscopeError(f"steps must be a positive integer, got {steps!r}")
    hw = as_size(size)
    if min(hw) < MIN_SIZE:
        raise CnnscopeError(f"size {hw[0]}x{hw[1]} is too small: images need at least {MIN_SIZE} pixels a side")
    if isinstance(diversity, bool) or not isinstance(diversity, int) or diversity < 1:
        raise CnnscopeError(f"diversity must be a positive number of images per objective, got {diversity!r}")
    thresholds = sorted({int(t) for t in thresholds or ()})
    if thresholds and not (1 <= thresholds[0] and thresholds[-1] <= steps):
        raise CnnscopeError(f"thresholds must lie in 1..{steps}, got {thresholds}")
    model = _as_model(module, mean, std)
    base = as_objectives(objectives)
    for o in base:
        if not o.layers and not o.needs_output:
            raise MethodError(f"{o!r} reads no layer of the model; add a unit objective such as channel(...)")
    seeds = _seeds(seed, len(base))
    if param is not None and param_options is None:
        param_options = {}  # the recipe's options belong to the recipe's parameterization
    chosen = get_recipe(recipe).override(param=param, param_options=param_options, transforms=transforms,
                                         filters=filters, optimizer=optimizer, lr=lr)
    maximised = base
    if diversity > 1:
        def div_layer(o: Objective) -> str:
            if diversity_layer is not None:
                return diversity_layer
            if not o.layers:
                raise MethodError(f"{o!r} reads no layer; pass diversity_layer=")
            return o.layers[-1]
        maximised = [o - diversity_weight * Diversity(div_layer(o)) for o in base]
    device = model.device
    cl = True if channels_last is None else bool(channels_last)
    per_chunk = max(1, (batch_size or DEFAULT_BATCH.get(device.type, 8)) // diversity)
    chunks = [range(i, min(i + per_chunk, len(base))) for i in range(0, len(base), per_chunk)]
    from tqdm.auto import tqdm

    parts = []
    t0 = time.perf_counter()
    with evaluating(model.module), torch.enable_grad(), \
            tqdm(total=steps * len(chunks), disable=not progress, desc="render", unit="step", leave=False) as bar:
        for ch in chunks:
            parts.append(_render_chunk(model, [maximised[i] for i in ch], [base[i] for i in ch],
                                       [seeds[i] for i in ch], diversity, chosen, steps, hw, thresholds,
                                       truncate, amp, cl, bar))
    seconds = time.perf_counter() - t0
    n = len(base) * diversity
    spec = {"objectives": [o.spec() for o in base], "recipe": chosen.spec(), "steps": int(steps),
            "size": list(hw), "seeds": seeds, "diversity": diversity,
            "diversity_weight": float(diversity_weight) if diversity > 1 else None, "model": model.name,
            "mean": list(model.mean), "std": list(model.std)}
    return RenderResult(
        images=np.concatenate([p["images"] for p in parts]),
        activations=np.concatenate([p["activations"] for p in parts]),
        trace=np.concatenate([p["trace"] for p in parts], axis=1),
        spec=spec,
        labels=[repr(o) for o in base for _ in range(diversity)],
        snapshots={t: np.concatenate([p["snapshots"][t] for p in parts]) for t in thresholds},
        timing={"seconds": seconds, "ms_per_step": 1000 * seconds / steps,
                "ms_per_image_step": 1000 * seconds / (steps * n), "chunks": len(chunks), "device": str(device)},
    )


def measure(module: nn.Module | LoadedModel, objectives: Objective | Sequence[Objective],
            images: np.ndarray | torch.Tensor, pairwise: bool = False, batch_size: int | None = None,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Objective values on given images (no optimisation).

    Args:
        objectives: one objective or a list.
        images: ``uint8 [N, H, W, 3]`` or a float tensor ``[N, 3, H, W]`` in [0, 1].
        pairwise: ``False``: objective ``i`` on image ``i`` (one objective is used for every image);
            ``True``: every objective on every image.
        batch_size: images per forward pass (default :data:`DEFAULT_BATCH` for the model's device).

    Returns:
        ``float64 [N]`` or, with ``pairwise``, ``[len(objectives), N]``.
    """
    model = _as_model(module, mean, std)
    objs = as_objectives(objectives)
    x = _image_tensor(images, model.device)
    n = x.shape[0]
    batch_size = batch_size or DEFAULT_BATCH.get(model.device.type, 8)
    if not pairwise and len(objs) not in (1, n):
        raise CnnscopeError(f"{len(objs)} objectives for {n} images; pass pairwise=True for every combination")
    layers = list(dict.fromkeys(k for o in objs for k in o.layers))
    needs_output = any(o.needs_output for o in objs)
    rows = []
    with evaluating(model.module), torch.no_grad(), _forward(model.module, layers, not needs_output) as cap:
        for s in range(0, n, batch_size):
            xb = x[s:s + batch_size]
            acts = _acts(cap, cap.run(model.normalize(xb)), xb, needs_output)
            _check_shapes(objs, acts, (xb.shape[-2], xb.shape[-1]))
            if pairwise:
                rows.append(torch.stack([o(acts) for o in objs]))
            elif len(objs) == 1:
                rows.append(objs[0](acts).unsqueeze(0))
            else:
                rows.append(_evaluate(objs[s:s + xb.shape[0]], 1, acts).unsqueeze(0))
    out = torch.cat(rows, dim=1).double().cpu().numpy()
    return out if pairwise else out[0]


def _image_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise CnnscopeError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        return torch.from_numpy(np.ascontiguousarray(arr)).to(device).permute(0, 3, 1, 2).float() / 255.0
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise CnnscopeError("images must be uint8 [N, H, W, 3] arrays or float tensors [N, 3, H, W] in [0, 1]")
    return images.detach().to(device=device, dtype=torch.float32)


__all__ = ["DEFAULT_BATCH", "MIN_SIZE", "RenderResult", "as_objectives", "measure", "render"]
