"""Run batches of images through a model and read units at one position (the shared helper of tuning).

Every tuning measurement of this package (heatmaps, joint tuning curves, families) goes through
:func:`unit_responses`: one :class:`~cnnscope.capture.Capture` stays open over all batches, and its one full
forward pass (which checks that no captured module runs twice) is spent on a single image, so every batch stops
at the layer; the model is in temporary eval mode and nothing is written to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture, capture, evaluating
from ..errors import CnnscopeError, LayerError
from ..models import LoadedModel, ModelLike, as_model
from ..units import check_position, grid_position, parse_channels
from .curves import Stimulus, draw

if TYPE_CHECKING:
    from ..capture.receptive_field import ReceptiveField

#: stimuli per forward pass when ``batch_size`` is ``None``: stimuli are small pictures, so batches can be large
CPU_BATCH, GPU_BATCH = 64, 256


def stimulus_size(model: LoadedModel, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """``(H, W)`` for stimuli: ``size`` when given, else the model's input size."""
    if size is None:
        return tuple(model.input_size)  # type: ignore[return-value]
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(hw) < 1:
        raise CnnscopeError(f"size must be positive, got {size!r}")
    return hw


def rf_centers(rf: ReceptiveField) -> tuple[np.ndarray, np.ndarray]:
    """Receptive-field centres of every row and column of a layer's grid (pixel-edge coordinates).

    Boxes at the image border are clipped, so their midpoints are not the centres; the centres are a linear
    function of the index (stride x index + offset), fitted on the boxes that touch no border (spread evenly over
    the image when fewer than two rows/columns are unclipped).

    Shape:
        - Output: ``([h], [w])``.
    """
    out = []
    h, w = rf.boxes.shape[:2]
    for axis, line in ((0, rf.boxes[:, w // 2][:, [0, 2]]), (1, rf.boxes[h // 2][:, [1, 3]])):
        n_in, idx = rf.input_size[axis], np.arange(len(line))
        extent = line[:, 1] - line[:, 0]
        inner = (extent == extent.max()) & (line[:, 0] > 0) & (line[:, 1] < n_in)
        if inner.sum() >= 2:
            slope, icpt = np.polyfit(idx[inner], (line[inner, 0] + line[inner, 1]) / 2, 1)
            out.append(slope * idx + icpt)
        else:
            out.append((idx + 0.5) * n_in / len(line))
    return out[0], out[1]


def _neuron(position: object) -> tuple[int, int] | str:
    pos = check_position(position, allow=("center",))
    if pos is None:
        raise LayerError("a receptive-field centre belongs to one neuron: position='center' or (row, col)")
    return pos


def rf_offset(model: ModelLike, layer: str, *, size: int | tuple[int, int] | None = None,
              position: tuple[int, int] | str = "center", rf: ReceptiveField | None = None) -> tuple[float, float]:
    """Offset from the image centre to the receptive-field centre of one neuron, ``(x right, y up)`` pixels.

    Pass it as ``offset`` to the rendering and tuning functions so that every stimulus is drawn centred on the
    neuron's receptive field.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        layer: dotted layer name.
        size: stimulus image size (default: the model's input size).
        position: ``"center"`` or ``(row, col)`` in the layer's map at that size.
        rf: the layer's receptive fields measured at any input size (e.g. by the dataset statistics pass); the
            centres are then extrapolated with :func:`rf_centers` (stride x index + offset) and only one probe
            forward at ``size`` is run. Without it the boxes are measured at ``size`` with
            :func:`cnnscope.capture.receptive_field.receptive_fields` (``H + W`` probes, cached per module).
    """
    m = as_model(model)
    hw = stimulus_size(m, size)
    pos = _neuron(position)
    if rf is None:
        from ..capture.receptive_field import receptive_fields

        found = receptive_fields(m.module, layer, hw)[layer]
        i, j = grid_position(pos, torch.empty(found.output_size, device="meta"), layer)
        top, left, bottom, right = found.box(i, j)
        return (left + right) / 2 - hw[1] / 2, hw[0] / 2 - (top + bottom) / 2
    probe = torch.zeros(1, len(m.mean), *hw, device=m.device, dtype=m.dtype)
    with evaluating(m.module), torch.no_grad():
        act = capture(m.module, probe, layer)[layer]
    i, j = grid_position(pos, act, layer)
    cy, cx = rf_centers(rf)
    stride_y = cy[1] - cy[0] if len(cy) > 1 else 0.0
    stride_x = cx[1] - cx[0] if len(cx) > 1 else 0.0
    return float(cx[0] + stride_x * j - hw[1] / 2), float(hw[0] / 2 - (cy[0] + stride_y * i))


def _pick(act: torch.Tensor, layer: str, index: torch.Tensor, position: tuple[int, int] | str | None
          ) -> torch.Tensor:
    """``[B, U]``: the selected channels at ``position`` (the whole channel's mean for ``None``, as ``read_unit``)."""
    a = act.index_select(1, index)
    if position is None:
        return a.flatten(2).mean(2)
    if position == "max":
        return a.flatten(2).amax(2)
    i, j = grid_position(position, a, layer)
    return a[:, :, i, j]


def unit_responses(model: ModelLike, batches: Iterable[torch.Tensor], layer: str, *,
                   channels: str | int | Sequence[int] | None = None, position: tuple[int, int] | str | None = "center",
                   pre_activation: bool = False, total: int | None = None, progress: bool = False) -> torch.Tensor:
    """Values of some channels of ``layer`` at one position, for every image of every batch.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        batches: model-space float tensors ``[B, C, H, W]`` (checked by :meth:`LoadedModel.batch`), e.g. the
            output of ``m.to_input(pictures_in_0_1)``.
        layer: dotted layer name; its output (or, with ``pre_activation``, its input) must be ``[B, C, H, W]``.
        channels: channel selection (:func:`cnnscope.parse_channels`; all channels when ``None``), in ascending
            order.
        position: ``"center"``, ``(row, col)``, ``"max"`` or ``None`` (the channel's mean), as :class:`cnnscope.Unit`.
        pre_activation: read the input of an activation module (pre-ReLU values).
        total: number of batches, for the progress bar.
        progress: show a tqdm bar.

    Returns:
        A tensor on the model's device.

    Shape:
        - Output: ``[N, U]`` with ``N`` the number of images and ``U`` the number of channels.
    """
    return read_channels(as_model(model), batches, layer, channels=channels, position=position,
                         pre_activation=pre_activation, total=total, progress=progress)[0]


def read_channels(m: LoadedModel, batches: Iterable[torch.Tensor], layer: str, *,
                  channels: str | int | Sequence[int] | None, position: tuple[int, int] | str | None,
                  pre_activation: bool, total: int | None = None, progress: bool = False
                  ) -> tuple[torch.Tensor, list[int]]:
    """:func:`unit_responses` and the channel indices of its columns."""
    pos = check_position(position, allow=("center", "max"))
    chosen: list[int] | None = None
    outs: list[torch.Tensor] = []
    with evaluating(m.module), torch.no_grad(), Capture(m.module, layer, pre_activation=pre_activation) as cap:
        for k, batch in enumerate(track(batches, progress, f"responses {layer}", total=total, unit="batch")):
            x = m.batch(batch)
            if k == 0 and x.shape[0] > 1:
                cap.run(x[:1])  # the first run of a Capture is a full forward: spend it on one image only
            cap.run(x)
            act = cap[layer]
            if act.ndim != 4:
                raise LayerError(f"layer {layer!r} gives {tuple(act.shape)} tensors; tuning needs [B, C, H, W] "
                                 "feature maps")
            if chosen is None:
                chosen = parse_channels(channels, act.shape[1])
                index = torch.tensor(chosen, device=act.device)
            outs.append(_pick(act, layer, index, pos).float())
    if chosen is None:
        raise CnnscopeError("no images to run")
    return torch.cat(outs), chosen


def stimulus_batches(model: LoadedModel, stimuli: Sequence[Stimulus], size: tuple[int, int], batch_size: int,
                     supersample: int = 3, offset: tuple[float, float] = (0.0, 0.0)) -> Iterator[torch.Tensor]:
    """Draw ``stimuli`` lazily, ``batch_size`` at a time (memory stays bounded), in the model's input space."""
    for part in chunks(len(stimuli), batch_size):
        x01 = torch.from_numpy(draw(stimuli[part], size, supersample=supersample, offset=offset))
        yield model.to_input(x01.to(model.device).permute(0, 3, 1, 2)).to(model.dtype)


def stimulus_responses(model: ModelLike, stimuli: Sequence[Stimulus], layer: str, *,
                       channels: str | int | Sequence[int] | None = None, size: int | tuple[int, int] | None = None,
                       supersample: int = 3, offset: tuple[float, float] = (0.0, 0.0),
                       position: tuple[int, int] | str | None = "center", pre_activation: bool = False,
                       batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Draw ``stimuli`` (centred, see :func:`~cnnscope.stimuli.curves.draw`) and read the channels at ``position``.

    Args:
        batch_size: stimuli per forward pass (``None``: a default for the model's device).

    Shape:
        - Output: ``[len(stimuli), U]`` on the model's device.
    """
    return draw_and_read(as_model(model), stimuli, layer, channels=channels, size=size, supersample=supersample,
                         offset=offset, position=position, pre_activation=pre_activation, batch_size=batch_size,
                         progress=progress)[0]


def draw_and_read(m: LoadedModel, stimuli: Sequence[Stimulus], layer: str, *,
                  channels: str | int | Sequence[int] | None, size: int | tuple[int, int] | None, supersample: int,
                  offset: tuple[float, float], position: tuple[int, int] | str | None, pre_activation: bool,
                  batch_size: int | None, progress: bool) -> tuple[torch.Tensor, list[int]]:
    """:func:`stimulus_responses` and the channel indices of its columns."""
    stimuli = list(stimuli)
    if not stimuli:
        raise CnnscopeError("no stimuli given")
    hw = stimulus_size(m, size)
    bs = resolve_batch_size(batch_size, m.device, cpu=CPU_BATCH, gpu=GPU_BATCH)
    return read_channels(m, stimulus_batches(m, stimuli, hw, bs, supersample, offset), layer, channels=channels,
                         position=position, pre_activation=pre_activation, total=-(-len(stimuli) // bs),
                         progress=progress)


def zscore(values: torch.Tensor, channels: Sequence[int], mean: Sequence[float] | torch.Tensor | None,
           std: Sequence[float] | torch.Tensor | None, dim: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Express ``values`` (channels along ``dim``) in standard deviations above the dataset mean.

    ``mean``/``std`` hold one number per channel of the layer (indexed by ``channels``); without them the values
    are returned unchanged. Channels with ``std == 0`` (constant over the dataset, e.g. dead units) get ``NaN``.

    Returns:
        ``(values, mean[channels], std[channels])``, ``float64`` on the CPU.
    """
    if mean is None and std is None:
        return values, None, None
    if mean is None or std is None:
        raise CnnscopeError("give both mean and std (per-channel dataset statistics), or neither")
    mu = torch.as_tensor(mean, dtype=torch.float64).cpu().reshape(-1)
    sd = torch.as_tensor(std, dtype=torch.float64).cpu().reshape(-1)
    if len(mu) != len(sd) or max(channels) >= len(mu):
        raise CnnscopeError(f"mean/std must have one value per channel of the layer (got {len(mu)} and {len(sd)} "
                            f"values for channel indices up to {max(channels)})")
    index = torch.as_tensor(list(channels))
    mu, sd = mu[index], sd[index]
    shape = [1] * values.ndim
    shape[dim] = -1
    safe = torch.where(sd > 0, sd, float("nan"))  # a channel constant over the dataset has no z-score: NaN
    return (values - mu.view(shape)) / safe.view(shape), mu, sd
