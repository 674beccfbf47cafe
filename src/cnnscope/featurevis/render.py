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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batching import chunks, resolve_batch_size
from ..capture import Capture, evaluating, first_tensor
from ..engine import Engine, LocalEngine, get_engine
from ..errors import CnnscopeError, LayerError, MethodError
from ..images import luma, to_uint8
from ..models import LoadedModel, ModelLike, as_model
from ..units import Unit
from .algebra import INPUT, OUTPUT, Objective, Scaled, split_key
from .objectives import Diversity, from_unit
from .param import as_size, generators
from .recipes import CLASS_RECIPE, DEFAULT_RECIPE, Recipe, get_recipe
from .registry import from_spec, parse_objective

#: smallest image side the renderer accepts
MIN_SIZE = 16
#: steps and image side of a render whose recipe names none
DEFAULT_STEPS, DEFAULT_SIZE = 512, 128
#: images per forward when ``batch_size`` is not given: small on a CPU, where larger batches leave the caches and
#: cost more per image; large on a GPU, which needs them to be busy
BATCH_CPU, BATCH_GPU = 8, 32
#: default weight of the diversity term (``render(..., diversity=k)``)
DIVERSITY_WEIGHT = 30.0
#: offset between the seed of an image's initialisation and the seed of its transforms
TRANSFORM_SEED_OFFSET = 0x5EED

ObjectivesLike = Any  # an Objective, a Unit, a spec dict, "KIND:ARG:..." text, or a list of them


@dataclass
class RenderResult:
    """What :func:`render` returns.

    Attributes:
        images: ``uint8 [N, H, W, 3]``, one image per objective (``k`` consecutive ones with ``diversity=k``); for
            a one-channel model the grey picture it sees (the luma of the optimised colour image, in three equal
            channels), as are the snapshots.
        activations: ``float32 [N]`` tensor (CPU): each image's objective measured on the final *untransformed*
            image; for a minimised objective (``-obj`` or ``-k * obj``) the raw value of ``obj`` (see
            :func:`reported_objective`), so a minimised channel reports its own, low, value.
        trace: ``float32 [steps, N]`` tensor (CPU): the maximised value (objective, plus the diversity term if any)
            of every step, on the transformed images.
        spec: JSON: objectives, recipe, steps, size, seeds, diversity.
        labels: ``repr`` of each image's objective.
        snapshots: ``step -> uint8 [N, H, W, 3]`` at the requested ``thresholds``.
        timing: seconds in all and milliseconds per step / per image-step.
    """

    images: np.ndarray
    activations: torch.Tensor
    trace: torch.Tensor
    spec: dict
    labels: list[str] = field(default_factory=list)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the pixels)."""
        return {"spec": self.spec, "labels": list(self.labels),
                "activations": self.activations.tolist(),
                "final_trace": self.trace[-1].tolist() if len(self.trace) else [],
                "timing": dict(self.timing), "snapshots": sorted(int(s) for s in self.snapshots)}


def as_objectives(objectives: ObjectivesLike) -> list[Objective]:
    """An objective, a :class:`~cnnscope.Unit`, a spec dict, ``"KIND:ARG:..."`` text, or a list of them -> list of
    :class:`Objective` (a unit with ``position=None`` is its channel's mean, else its neuron)."""
    single = isinstance(objectives, (Objective, Mapping, Unit, str))
    items = [objectives] if single else list(objectives)
    if not items:
        raise MethodError("no objectives given")
    out = []
    for o in items:
        if isinstance(o, Mapping):
            o = from_spec(o)
        elif isinstance(o, Unit):
            o = from_unit(o)
        elif isinstance(o, str):
            o = parse_objective(o)
        if not isinstance(o, Objective):
            raise MethodError(f"objectives are cnnscope.featurevis objectives, units or their specs, got "
                              f"{type(o).__name__} (e.g. channel('blocks.4.0', 3))")
        out.append(o)
    return out


def reported_objective(objective: Objective) -> Objective:
    """What a render reports as the activation of ``objective``: ``obj`` for a minimised ``-k * obj`` (``k > 0``),
    the objective itself otherwise. The renderer maximises ``-k * obj``; its raw, negative-side value is ``obj``'s."""
    if isinstance(objective, Scaled) and objective.factor < 0:
        return objective.term
    return objective


def init_images(model: ModelLike, init: object, size: tuple[int, int], n: int) -> torch.Tensor:
    """The starting images of a render with ``init=`` (a learned prior: start from a dataset image): ``float32
    [n, 3, H, W]`` in [0, 1] on the CPU.

    ``init`` is one picture or ``n`` of them (anything :meth:`~cnnscope.models.LoadedModel.batch` takes: a path,
    a PIL image, a ``uint8 [H, W, 3]`` / ``[n, H, W, 3]`` array, a list; brought to ``size``) or a model-space float
    tensor ``[1 or n, C, H, W]`` of that size (mapped back through the model's normalisation).

    Raises:
        ImageError: pictures the model's :meth:`~cnnscope.models.LoadedModel.batch` rejects.
        CnnscopeError: a count other than 1 or ``n``, or a tensor of another size.
    """
    m = as_model(model)
    x = m.batch(init, size=size)
    if tuple(x.shape[-2:]) != tuple(size):
        raise CnnscopeError(f"init is {x.shape[-2]}x{x.shape[-1]} but the render is {size[0]}x{size[1]}; pass "
                            "pictures (they are resized) or a tensor of the render's size")
    if x.shape[0] not in (1, n):
        raise CnnscopeError(f"init holds {x.shape[0]} images for {n} objectives; give one image or one per objective")
    x01 = m.denormalize(x.float()).clamp(0, 1).cpu()
    if x01.shape[1] == 1:
        x01 = x01.expand(-1, 3, -1, -1)
    return x01.expand(n, -1, -1, -1).contiguous()


def _reads_output_only(objective: Objective) -> bool:
    """Whether ``objective`` reads nothing but the model's output (a class logit, its negation, sums of them)."""
    return set(objective.keys()) == {OUTPUT}


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed)] * n
    seeds = [int(s) for s in seed]  # type: ignore[union-attr]
    if len(seeds) != n:
        raise CnnscopeError(f"got {len(seeds)} seeds for {n} objectives")
    return seeds


def _keys(objs: Sequence[Objective]) -> list[str]:
    return list(dict.fromkeys(k for o in objs for k in o.keys()))


class _Reader:
    """Runs the model and collects what the objectives read: layer outputs (one Capture), activation modules'
    inputs (a Capture with ``pre_activation=True``) and the model's output.

    With ``truncate`` every pass after the first stops at the deepest layer read, unless the output is read or
    both kinds of layers are (one Capture cannot stop for the other)."""

    def __init__(self, module: nn.Module, keys: Sequence[str], truncate: bool) -> None:
        self.module = module
        self.needs_output = OUTPUT in keys
        post = [k for k in keys if k not in (INPUT, OUTPUT) and not split_key(k)[1]]
        pre = [k for k in keys if split_key(k)[1]]
        stop = truncate and not self.needs_output and not (post and pre)
        self.layers = [split_key(k)[0] for k in post + pre]
        self.captures: list[tuple[Capture, list[str]]] = []
        if post:
            self.captures.append((Capture(module, post, stop_early=stop), post))
        if pre:
            self.captures.append((Capture(module, [split_key(k)[0] for k in pre], stop_early=stop,
                                          pre_activation=True), pre))
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Reader:
        with contextlib.ExitStack() as stack:
            for cap, _ in self.captures:
                stack.enter_context(cap)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, x: torch.Tensor, image: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Activations (float) by key after a forward of ``x``; ``image`` (in [0, 1]) is the :data:`INPUT`."""
        for cap, _ in self.captures[1:]:
            cap.reset()
        out = self.captures[0][0].run(x) if self.captures else self.module(x)
        acts: dict[str, torch.Tensor] = {INPUT: image}  # type: ignore[dict-item]
        for cap, keys in self.captures:
            for key in keys:
                name = split_key(key)[0]
                if name not in cap.activations:
                    raise LayerError(f"layer {name!r} did not run in the forward pass")
                acts[key] = cap.activations[name].float()
        if self.needs_output:
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


def _first_forward(reader: _Reader, x: torch.Tensor, image: torch.Tensor, size: tuple[int, int]
                   ) -> dict[str, torch.Tensor]:
    """The first pass of a render (a full forward: the capture layer checks for reused modules then)."""
    try:
        return reader.run(x, image)
    except RuntimeError as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        if "too small" in text.lower() or "greater than actual input size" in text:
            raise CnnscopeError(f"size {size[0]}x{size[1]} is too small for this model up to layer(s) "
                                f"{', '.join(reader.layers) or 'output'} ({first}); use a larger --size") from None
        raise CnnscopeError(f"the model cannot run on {size[0]}x{size[1]} inputs ({first}); the first pass of a "
                            "render runs the whole model, so use a size it accepts (e.g. its input size)") from None


def _check_shapes(objs: Sequence[Objective], acts: Mapping[str, torch.Tensor | None], size: tuple[int, int]
                  ) -> None:
    shapes = {k: tuple(v.shape[1:]) for k, v in acts.items() if v is not None}
    for name, shape in shapes.items():
        if len(shape) == 3 and min(shape[1:]) < 1:
            raise CnnscopeError(f"size {size[0]}x{size[1]} is too small: layer {split_key(name)[0]!r} has an "
                                "empty map")
    for o in objs:
        o.check(shapes)


def _seen(m: LoadedModel, image: torch.Tensor) -> np.ndarray:
    """``uint8`` pictures of what the model sees of ``image`` (``[N, 3, H, W]`` in [0, 1]): the image itself, or for
    a one-channel model its luma (:meth:`LoadedModel.to_input` reads nothing else) as grey RGB."""
    if len(m.mean) == 1:
        image = luma(image).expand(-1, 3, -1, -1)
    return to_uint8(image)


def _render_chunk(m: LoadedModel, objs: Sequence[Objective], measured: Sequence[Objective], seeds: Sequence[int],
                  group: int, recipe: Recipe, steps: int, size: tuple[int, int], thresholds: Sequence[int],
                  truncate: bool, amp: bool, channels_last: bool, bar: Any, init: torch.Tensor | None = None
                  ) -> dict[str, Any]:
    device = m.device
    image_seeds = [s + j for s in seeds for j in range(group)]
    param = recipe.make_param(image_seeds, size, device)
    if init is not None:
        param.set_image_(init.repeat_interleave(group, dim=0).to(device))
    pipeline = recipe.make_transforms().to(device)
    filters = recipe.make_filters()
    gens = generators([s + TRANSFORM_SEED_OFFSET for s in image_seeds], device)
    params = [p for p in param.parameters() if p.requires_grad]
    opt = recipe.make_optimizer(params)
    trace = torch.empty(steps, len(image_seeds), device=device)
    snaps: dict[int, np.ndarray] = {}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with _Reader(m.module, _keys(list(objs) + list(measured)), truncate) as reader:
        for step in range(steps):
            image = param()
            x = m.to_input(pipeline(image, gens)).to(m.dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                acts = _first_forward(reader, x, image, size) if step == 0 else reader.run(x, image)
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
                snaps[step + 1] = _seen(m, param().detach())
            bar.update(1)
        with torch.no_grad():
            image = param().detach()
            x = m.to_input(image).to(m.dtype)
            acts = _first_forward(reader, x, image, size) if steps == 0 else reader.run(x, image)
            if steps == 0:
                _check_shapes(measured, acts, size)
            final = _evaluate(measured, group, acts)
    return {"images": _seen(m, image), "activations": final.float().cpu(), "trace": trace.float().cpu(),
            "snapshots": snaps}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _render_piece(m: LoadedModel, piece: dict[str, Any]) -> dict[str, Any]:
    """One chunk of a render on an engine's worker (the same computation as the in-process loop's chunk)."""
    with evaluating(m.module), torch.enable_grad():
        return _render_chunk(m, bar=_NoBar(), **piece)


def render(model: ModelLike, objectives: ObjectivesLike, *, recipe: str | Recipe | None = None,
           steps: int | None = None, size: int | Sequence[int] | str | None = None, seed: int | Sequence[int] = 0,
           batch_size: int | None = None, thresholds: Sequence[int] | None = None, progress: bool = False,
           diversity: int = 1, diversity_layer: str | None = None, diversity_weight: float = DIVERSITY_WEIGHT,
           param: Any = None, param_options: Mapping | None = None, transforms: Any = None, filters: Any = None,
           optimizer: str | None = None, lr: float | None = None, truncate: bool = True, amp: bool = False,
           channels_last: bool | None = None, engine: str | Engine | None = None, address: str | None = None,
           init: object = None) -> RenderResult:
    """Render one image per objective by gradient ascent.

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module`` (see :func:`~cnnscope.models.as_model`; a module with
            another normalisation goes through :func:`~cnnscope.wrap`). It is not modified (eval mode is
            temporary, no hook survives, no ``.grad`` is written).
        objectives: an objective, a :class:`~cnnscope.Unit` (``position=None``: its channel, else its neuron),
            a ``.spec()`` dict, ``"KIND:ARG:..."`` text, or a list of them (one image each).
        recipe: ``"lucid"``, ``"plain"``, ``"gaussian_blur"``, ``"bilateral_blur"``, ``"maco"``, ``"class"`` or a
            :class:`~cnnscope.featurevis.recipes.Recipe`; ``None`` (default): ``"class"`` when every objective is
            a class logit (it reads the model's output only), ``"lucid"`` otherwise.
        steps: optimisation steps (``0``: no optimisation; with ``init`` the images are the starting pictures);
            ``None``: the recipe's (``class``: 128), else 512.
        size: image size ``H`` or ``(H, W)``, at least :data:`MIN_SIZE`, or ``"input"`` (the model's input size);
            ``None``: the recipe's (``class``: the model's input size), else 128.
        seed: one seed for all objectives, or one per objective. Image ``j`` of an objective with seed ``s``
            starts from seed ``s + j``; a batched render equals single renders with the same seeds.
        batch_size: images per forward pass (memory bound); default :data:`BATCH_CPU` on a CPU, :data:`BATCH_GPU`
            on a GPU. With ``diversity=k`` a batch holds ``batch_size // k`` objectives (at least one).
        thresholds: steps at which to keep snapshots of the images.
        progress: show a tqdm progress bar.
        diversity: images per objective; with ``k > 1`` each objective's images are pushed apart by
            ``- diversity_weight * diversity(layer)`` (default layer: the objective's deepest one, output or
            pre-activation as the objective reads it; ``diversity_layer`` names another layer's output).
        param, param_options, transforms, filters, optimizer, lr: override the recipe's parts.
        truncate: stop each forward at the deepest layer needed (``False`` runs the whole model; same result).
        amp: run the model under bfloat16 autocast (faster on recent GPUs; values differ slightly).
        channels_last: feed channels-last inputs (default ``None``: on; oneDNN and cuDNN run convolutions faster
            in that layout; float summation order differs from contiguous inputs, about 1e-6 relative).
        engine: where the chunks run: ``None``/``"local"`` (this process, one after another), ``"ray"`` (each
            chunk a piece on a Ray actor holding the model, docs/scale.md) or a :class:`~cnnscope.engine.Engine`.
            The chunks and seeds are the same, so the results are too (bit for bit with one torch thread here,
            as on the workers).
        address: with ``engine="ray"``: ``"auto"``, ``"HOST:PORT"`` or ``None`` (a local Ray).
        init: start from pictures instead of noise (the article's *learned prior*: a dataset image): one picture
            for every objective or one per objective (see :func:`init_images`). The parameterization must be
            settable from an image (``pixel``, ``fourier``: its round trip is exact up to the sigmoid's clamp at
            ``1e-4``); with ``diversity=k`` the ``k`` images of an objective start from the same picture.

    Returns:
        :class:`RenderResult`: ``activations`` are the raw values (a minimised ``-obj`` reports ``obj``).

    Raises:
        LayerError: unknown layer (with close matches), channel or position out of range, ``pre_activation`` on
            a layer that is not an activation module.
        CnnscopeError: bad steps/size/seeds, or a size too small for the model; an engine that cannot start.
        MethodError: unknown recipe, parameterization, transform preset, optimiser or objective.
    """
    m = as_model(model)
    base = as_objectives(objectives)
    if recipe is None:
        recipe = CLASS_RECIPE if all(_reads_output_only(o) for o in base) else DEFAULT_RECIPE
    if param is not None and param_options is None:
        param_options = {}  # the recipe's options belong to the recipe's parameterization
    chosen = get_recipe(recipe).override(param=param, param_options=param_options, transforms=transforms,
                                         filters=filters, optimizer=optimizer, lr=lr)
    if steps is None:
        steps = DEFAULT_STEPS if chosen.steps is None else chosen.steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise CnnscopeError(f"steps must be a non-negative integer, got {steps!r}")
    if size is None:
        size = DEFAULT_SIZE if chosen.size is None else chosen.size
    hw = tuple(int(v) for v in m.input_size) if isinstance(size, str) and size == "input" else as_size(size)
    if min(hw) < MIN_SIZE:
        raise CnnscopeError(f"size {hw[0]}x{hw[1]} is too small: images need at least {MIN_SIZE} pixels a side")
    if isinstance(diversity, bool) or not isinstance(diversity, int) or diversity < 1:
        raise CnnscopeError(f"diversity must be a positive number of images per objective, got {diversity!r}")
    thresholds = sorted({int(t) for t in thresholds or ()})
    if thresholds and not (1 <= thresholds[0] and thresholds[-1] <= steps):
        raise CnnscopeError(f"thresholds must lie in 1..{steps}, got {thresholds}")
    for o in base:
        if not o.layers and not o.needs_output:
            raise MethodError(f"{o!r} reads no layer of the model; add a unit objective such as channel(...)")
    seeds = _seeds(seed, len(base))
    reported = [reported_objective(o) for o in base]
    starts = None if init is None else init_images(m, init, hw, len(base))
    maximised = base
    if diversity > 1:
        def div_term(o: Objective) -> Objective:
            if diversity_layer is not None:
                return Diversity(diversity_layer)
            if not o.layers:
                raise MethodError(f"{o!r} reads no layer; pass diversity_layer=")
            name, pre = split_key(o.layers[-1])
            return Diversity(name, pre_activation=pre)
        maximised = [o - diversity_weight * div_term(o) for o in base]
    device = m.device
    cl = True if channels_last is None else bool(channels_last)
    images_per_batch = resolve_batch_size(batch_size, device, cpu=BATCH_CPU, gpu=BATCH_GPU)
    parts_of = list(chunks(len(base), max(1, images_per_batch // diversity)))
    from tqdm.auto import tqdm

    eng = get_engine(engine, address=address)
    parts = []
    t0 = time.perf_counter()
    if not isinstance(eng, LocalEngine):
        pieces = [{"objs": maximised[ch], "measured": reported[ch], "seeds": seeds[ch], "group": diversity,
                   "recipe": chosen, "steps": steps, "size": hw, "thresholds": thresholds, "truncate": truncate,
                   "amp": amp, "channels_last": cl, "init": None if starts is None else starts[ch]}
                  for ch in parts_of]
        try:
            done = dict(eng.map_with_model(m, _render_piece, pieces, progress=progress, desc="render"))
        finally:
            if not isinstance(engine, Engine):
                eng.close()  # made here from its name: its workers go with this call
        parts = [done[i] for i in range(len(pieces))]
    else:
        with evaluating(m.module), torch.enable_grad(), \
                tqdm(total=steps * len(parts_of), disable=not progress, desc="render", unit="step",
                     leave=False) as bar:
            for ch in parts_of:
                parts.append(_render_chunk(m, maximised[ch], reported[ch], seeds[ch], diversity, chosen, steps, hw,
                                           thresholds, truncate, amp, cl, bar,
                                           init=None if starts is None else starts[ch]))
    seconds = time.perf_counter() - t0
    n = len(base) * diversity
    spec = {"objectives": [o.spec() for o in base], "recipe": chosen.spec(), "steps": int(steps),
            "size": list(hw), "seeds": seeds, "diversity": diversity,
            "diversity_weight": float(diversity_weight) if diversity > 1 else None, "model": m.name,
            "mean": list(m.mean), "std": list(m.std), "reported": [o.spec() for o in reported],
            "init": init_description(init)}
    return RenderResult(
        images=np.concatenate([p["images"] for p in parts]),
        activations=torch.cat([p["activations"] for p in parts]),
        trace=torch.cat([p["trace"] for p in parts], dim=1),
        spec=spec,
        labels=[repr(o) for o in base for _ in range(diversity)],
        snapshots={t: np.concatenate([p["snapshots"][t] for p in parts]) for t in thresholds},
        timing={"seconds": seconds, "ms_per_step": 1000 * seconds / max(steps, 1),
                "ms_per_image_step": 1000 * seconds / (max(steps, 1) * n), "chunks": len(parts_of),
                "device": str(device), "engine": eng.name},
    )


def init_description(init: object) -> str | None:
    """How the spec names an ``init``: a path as text, other pictures by their kind (``None``: noise)."""
    if init is None:
        return None
    if isinstance(init, (str, bytes)) or hasattr(init, "__fspath__"):
        return str(init)
    if isinstance(init, torch.Tensor):
        return f"tensor {list(init.shape)}"
    if isinstance(init, np.ndarray):
        return f"array {list(init.shape)}"
    return type(init).__name__


def _picture_size(images: object) -> tuple[int, int] | None:
    """Pictures given as ``uint8`` arrays are measured at their own size (a render as it was rendered)."""
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    if isinstance(first, np.ndarray) and first.ndim in (3, 4):
        return int(first.shape[-3]), int(first.shape[-2])
    return None


def measure(model: ModelLike, images: object, objectives: ObjectivesLike, *, pairwise: bool = False,
            batch_size: int | None = None) -> torch.Tensor:
    """Objective values on given images (no optimisation).

    Args:
        model: a ``LoadedModel`` or an image ``nn.Module``.
        images: anything :meth:`~cnnscope.models.LoadedModel.batch` takes: a model-space float tensor
            ``[N, C, H, W]``, or pictures (``uint8 [N, H, W, 3]`` arrays keep their size, e.g. renders; paths and
            PIL images are brought to the model's input size). Penalties read the pictures in [0, 1] (the input
            mapped back through the model's normalisation).
        objectives: one objective (or unit, spec, text) for every image, one per image, or, with ``pairwise``,
            any number.
        pairwise: ``False``: objective ``i`` on image ``i`` (one objective is used for every image);
            ``True``: every objective on every image.
        batch_size: images per forward pass (default: by the model's device, as :func:`render`).

    Returns:
        ``float32 [N]`` or, with ``pairwise``, ``[len(objectives), N]``, on the model's device.

    Raises:
        ImageError: images :meth:`~cnnscope.models.LoadedModel.batch` rejects.
        LayerError: unknown layer, channel or position out of range.
    """
    m = as_model(model)
    x = m.batch(images, size=_picture_size(images))
    objs = as_objectives(objectives)
    n = x.shape[0]
    if not pairwise and len(objs) not in (1, n):
        raise CnnscopeError(f"{len(objs)} objectives for {n} images; pass pairwise=True for every combination")
    rows = []
    keys = _keys(objs)
    bs = resolve_batch_size(batch_size, m.device, cpu=BATCH_CPU, gpu=BATCH_GPU)
    with evaluating(m.module), torch.no_grad(), _Reader(m.module, keys, truncate=True) as reader:
        for part in chunks(n, bs):
            xb = x[part]
            acts = reader.run(xb, m.denormalize(xb.float()) if INPUT in keys else None)
            _check_shapes(objs, acts, (xb.shape[-2], xb.shape[-1]))
            if pairwise:
                rows.append(torch.stack([o(acts) for o in objs]))
            elif len(objs) == 1:
                rows.append(objs[0](acts).unsqueeze(0))
            else:
                rows.append(_evaluate(objs[part], 1, acts).unsqueeze(0))
    out = torch.cat(rows, dim=1).float()
    return out if pairwise else out[0]


__all__ = ["BATCH_CPU", "BATCH_GPU", "MIN_SIZE", "RenderResult", "as_objectives", "init_images", "measure",
           "render", "reported_objective"]
