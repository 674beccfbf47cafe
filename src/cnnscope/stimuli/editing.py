"""Circuit editing: ablate units or edit the weights between them, and measure the tuning before and after.

*Curve Detectors* (Cammarata et al., Distill 2020) tests what a circuit does by editing it: zero the curve units of
one layer, or change the weights from one unit to another, and see how the curve responses downstream change.

- :func:`edited`: a context manager in which some channels' outputs are zero (ablation, by forward hooks) and
  some convolution weights are set or scaled; the model is restored exactly when the block ends, even on an
  error (hooks removed, the original weight values copied back).
- :func:`edit_effect`: the tuning map of some channels before and inside :func:`edited`, as an
  :class:`EditEffect` (``cnnscope edit`` writes its figure and numbers).

Edits are written as text too (``parse_ablation``, ``parse_weight_edit``): ``LAYER:CHANNELS`` ablates
(``blocks.2.1.bn1.act:3,7-9``); ``CONV:OUT:IN=VALUE`` sets and ``CONV:OUT:IN*FACTOR`` scales the kernel from input
channel ``IN`` to output channel ``OUT`` of a convolution (``IN`` may be ``all``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..capture import capture, evaluating, patch_outputs, resolve_layers
from ..errors import CnnscopeError, LayerError
from ..models import ModelLike, as_model
from ..units import parse_channels
from .tuning import TuningMap, tuning_map

#: ``CONV:OUT:IN=VALUE`` or ``CONV:OUT:IN*FACTOR``
_WEIGHT_EDIT = re.compile(r"^(?P<conv>[^:]+):(?P<out>\d+):(?P<inp>\d+|all)\s*(?P<op>[=*])\s*(?P<num>\S+)$")


@dataclass(frozen=True)
class WeightEdit:
    """Set (``value``) or scale (``scale``) the kernel from one input channel to one output channel.

    Attributes:
        conv: dotted name of an ``nn.Conv2d``.
        out_channel: the output channel (the unit whose inputs change).
        in_channel: the input channel (an index of the convolution's input), or ``None`` for all of the unit's
            inputs.
        value: the new value of every weight of the kernel (``0`` cuts the connection), or
        scale: the factor every weight of the kernel is multiplied by. Exactly one of them.
    """

    conv: str
    out_channel: int
    in_channel: int | None = None
    value: float | None = None
    scale: float | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.scale is None):
            raise CnnscopeError(f"a weight edit of {self.conv} sets a value or a scale, exactly one of them")

    def to_dict(self) -> dict:
        return {"conv": self.conv, "out_channel": self.out_channel, "in_channel": self.in_channel,
                "value": self.value, "scale": self.scale}

    def __str__(self) -> str:
        inp = "all" if self.in_channel is None else self.in_channel
        return f"{self.conv}:{self.out_channel}:{inp}" + (f"={self.value:g}" if self.value is not None
                                                          else f"*{self.scale:g}")


def parse_weight_edit(text: str) -> WeightEdit:
    """``CONV:OUT:IN=VALUE`` (set) or ``CONV:OUT:IN*FACTOR`` (scale) as a :class:`WeightEdit`."""
    hit = _WEIGHT_EDIT.match(text.strip())
    try:
        number = float(hit["num"]) if hit else None
    except ValueError:
        number = None
    if hit is None or number is None:
        raise CnnscopeError(f"weight edit {text!r}: write CONV:OUT:IN=VALUE or CONV:OUT:IN*FACTOR "
                            "(e.g. blocks.3.0.conv_pw:5:12*0 or conv2:0:all=0)")
    inp = None if hit["inp"] == "all" else int(hit["inp"])
    return WeightEdit(hit["conv"], int(hit["out"]), inp, **({"value": number} if hit["op"] == "=" else
                                                           {"scale": number}))


def parse_ablation(text: str) -> tuple[str, str]:
    """``LAYER:CHANNELS`` (``blocks.2.1.bn1.act:3,7-9``) as ``(layer, channels text)``."""
    layer, sep, channels = text.strip().rpartition(":")
    if not sep or not layer or not channels:
        raise CnnscopeError(f"ablation {text!r}: write LAYER:CHANNELS (e.g. blocks.2.1.bn1.act:3,7-9)")
    return layer, channels


def _zeroing(channels: str | int | Sequence[int], layer: str):
    """A forward-hook function that zeroes ``channels`` (dimension 1) of a layer's output."""

    def fn(out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise LayerError(f"cannot ablate channels of {layer!r}: its output is not a [B, C, ...] tensor")
        keep = torch.ones(out.shape[1], dtype=out.dtype, device=out.device)
        keep[parse_channels(channels, out.shape[1])] = 0
        return out * keep.view(1, -1, *([1] * (out.ndim - 2)))

    return fn


def _kernel_index(conv: nn.Conv2d, e: WeightEdit) -> tuple[int, slice | int]:
    """``(out, in-within-group)`` indices of ``conv.weight`` for an edit, checked against the groups."""
    out_n, per_group = conv.weight.shape[:2]
    if not 0 <= e.out_channel < out_n:
        raise LayerError(f"{e.conv} has {out_n} output channels; {e.out_channel} is out of range")
    if e.in_channel is None:
        return e.out_channel, slice(None)
    group = e.out_channel // (out_n // conv.groups)
    local = e.in_channel - group * per_group
    if not 0 <= local < per_group:
        first = group * per_group
        raise LayerError(f"input channel {e.in_channel} does not feed {e.conv}:{e.out_channel} (its inputs are "
                         f"{first}-{first + per_group - 1})")
    return e.out_channel, local


@contextmanager
def edited(model: ModelLike, *, ablate: Mapping[str, str | int | Sequence[int]] | None = None,
           weights: Sequence[WeightEdit | str] = ()) -> Iterator[None]:
    """Within the block, some channels output zero and some convolution weights are edited.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``. Restored exactly when the block ends (hooks removed, every
            edited weight copied back), also when it raises.
        ablate: ``{layer: channels}``: each layer's output has these channels (:func:`cnnscope.parse_channels`)
            set to zero on every call.
        weights: :class:`WeightEdit` values or their text (:func:`parse_weight_edit`).

    Raises:
        LayerError: an unknown layer, a layer that is not a ``Conv2d`` for a weight edit, channels out of range.
    """
    module = as_model(model).module
    edits = [parse_weight_edit(w) if isinstance(w, str) else w for w in weights]
    convs = resolve_layers(module, [e.conv for e in edits]) if edits else {}
    saved: list[tuple[torch.Tensor, tuple, torch.Tensor]] = []
    with ExitStack() as stack:
        if ablate:
            stack.enter_context(patch_outputs(module, {name: _zeroing(ch, name) for name, ch in ablate.items()}))
        try:
            with torch.no_grad():
                for e in edits:
                    conv = convs[e.conv]
                    if not isinstance(conv, nn.Conv2d):
                        raise LayerError(f"{e.conv!r} is a {type(conv).__name__}; weight edits need a Conv2d")
                    index = _kernel_index(conv, e)
                    saved.append((conv.weight, index, conv.weight[index].clone()))
                    if e.value is not None:
                        conv.weight[index] = e.value
                    else:
                        conv.weight[index] *= e.scale
            yield
        finally:
            with torch.no_grad():
                for weight, index, old in reversed(saved):
                    weight[index] = old


@dataclass
class EditEffect:
    """Tuning of some channels before and after an edit (CPU tensors).

    Attributes:
        before, after: the two :class:`~cnnscope.stimuli.tuning.TuningMap` (same stimuli, same channels).
        ablate: ``{layer: [channels]}`` zeroed; weights: the weight edits.
    """

    before: TuningMap
    after: TuningMap
    ablate: dict[str, list[int]] = field(default_factory=dict)
    weights: list[WeightEdit] = field(default_factory=list)

    @property
    def delta(self) -> torch.Tensor:
        """``after - before`` of the raw responses, ``[U, P, O]``."""
        return self.after.raw - self.before.raw

    def change(self) -> torch.Tensor:
        """Per channel: the largest absolute change over the stimuli, relative to the largest absolute response
        before (``[U]``; ``NaN`` for a channel silent before)."""
        top = self.before.raw.abs().flatten(1).amax(1)
        return torch.where(top > 0, self.delta.abs().flatten(1).amax(1) / top.clamp(min=1e-300), torch.nan)

    def to_dict(self) -> dict:
        return {"layer": self.before.layer, "ablate": self.ablate, "weights": [w.to_dict() for w in self.weights],
                "change": self.change().tolist(), "before": self.before.to_dict(), "after": self.after.to_dict()}


def edit_effect(model: ModelLike, layer: str, *, channels: str | int | Sequence[int] | None = None,
                ablate: Mapping[str, str | int | Sequence[int]] | None = None,
                weights: Sequence[WeightEdit | str] = (), **tuning: object) -> EditEffect:
    """The tuning map of ``layer``'s ``channels`` before and after ablating units / editing weights.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; not modified (see :func:`edited`).
        layer: the layer whose tuning is measured (after the edited ones, or nothing changes).
        channels: channel selection of ``layer`` (all when ``None``).
        ablate, weights: the edits (see :func:`edited`).
        **tuning: :func:`~cnnscope.stimuli.tuning.tuning_map` options (``kind``, ``orientations``, ``levels``,
            ``size``, ``mean``, ``std``, ``pre_activation``, stimulus parameters, ...).
    """
    m = as_model(model)
    if not ablate and not weights:
        raise CnnscopeError("nothing to edit: give ablate={layer: channels} and/or weight edits")
    before = tuning_map(m, layer, channels=channels, **tuning)  # type: ignore[arg-type]
    edits = [parse_weight_edit(w) if isinstance(w, str) else w for w in weights]
    with edited(m, ablate=ablate, weights=edits):
        after = tuning_map(m, layer, channels=channels, **tuning)  # type: ignore[arg-type]
    listed = {}
    if ablate:
        probe = torch.zeros(1, len(m.mean), *m.input_size, device=m.device, dtype=m.dtype)
        with evaluating(m.module), torch.no_grad():  # the channel lists, resolved
            acts = capture(m.module, probe, list(ablate))
        listed = {name: parse_channels(ch, acts[name].shape[1]) for name, ch in ablate.items()}
    return EditEffect(before=before, after=after, ablate=listed, weights=edits)
