"""Run batches of images through a model and read units at one spatial position (the shared helper of tuning).

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
from torch import nn
from tqdm.auto import tqdm

from ..capture import Capture, capture, evaluating, input_channels, module_device, module_dtype
from ..errors import CnnscopeError, LayerError
from ..models import LoadedModel
from .curves import Stimulus, render

if TYPE_CHECKING:
    from ..capture.receptive_field import ReceptiveField

ModelLike = LoadedModel | nn.Module

#: ITU-R 601 luma weights, for models that take one channel
_LUMA = (0.299, 0.587, 0.114)


def model_module(model: ModelLike) -> nn.Module:
    """The ``nn.Module`` of a ``LoadedModel`` (or the module itself)."""
    if isinstance(model, LoadedModel):
        return model.module
    if isinstance(model, nn.Module):
        return model
    raise CnnscopeError(f"expected a LoadedModel or a torch.nn.Module, got {type(model).__name__}")


def model_size(model: ModelLike, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """``(H, W)`` for stimuli: ``size`` when given, else the model's input size (a bare module needs ``size``)."""
    if size is None:
        if isinstance(model, LoadedModel):
            return tuple(model.input_size)  # type: ignore[return-value]
        raise CnnscopeError("size is required for a bare nn.Module (wrap it with cnnscope.wrap to set input_size)")
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


def rf_offset(model: ModelLike, layer: str, size: int | tuple[int, int] | None = None,
              position: tuple[int, int] | None = None, rf: ReceptiveField | None = None) -> tuple[float, float]:
    """Offset from the image centre to the receptive-field centre of one unit, ``(x right, y up)`` pixels.

    Pass it as ``offset`` to the rendering and tuning functions so that every stimulus is drawn centred on the
    unit's receptive field.

    Args:
        model: a ``LoadedModel`` or a bare module.
        layer: dotted layer name.
        size: stimulus image size (default: the model's input size).
        position: ``(row, col)`` in the layer's map at that size (default: the centre).
        rf: the layer's receptive fields measured at any input size (e.g. by the dataset statistics pass); the
            centres are then extrapolated with :func:`rf_centers` (stride x index + offset) and only one probe
            forward at ``size`` is run. Without it the boxes are measured at ``size`` with
            :func:`cnnscope.capture.receptive_field.receptive_fields` (``H + W`` probes, cached per module).
    """
    hw = model_size(model, size)
    module = model_module(model)
    if rf is None:
        from ..capture.receptive_field import receptive_fields

        found = receptive_fields(module, layer, hw)[layer]
        h, w = found.output_size
        top, left, bottom, right = found.box(*(position if position is not None else (h // 2, w // 2)))
        return (left + right) / 2 - hw[1] / 2, hw[0] / 2 - (top + bottom) / 2
    probe = torch.zeros(1, input_channels(module), *hw, device=module_device(module), dtype=module_dtype(module))
    with evaluating(module), torch.no_grad():
        act = capture(module, probe, layer)[layer]
    h, w = act.shape[-2:]
    i, j = position if position is not None else (h // 2, w // 2)
    cy, cx = rf_centers(rf)
    stride_y = cy[1] - cy[0] if len(cy) > 1 else 0.0
    stride_x = cx[1] - cx[0] if len(cx) > 1 else 0.0
    return cx[0] + stride_x * j - hw[1] / 2, hw[0] / 2 - (cy[0] + stride_y * i)


def to_model_input(model: ModelLike, x01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] ``[B, 3, H, W]`` -> the model's input space (normalised; luma for 1-channel models)."""
    if isinstance(model, LoadedModel):
        if len(model.mean) == 1 and x01.shape[1] == 3:
            w = torch.tensor(_LUMA, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
            x01 = (x01 * w).sum(1, keepdim=True)
        return model.normalize(x01)
    return x01


def _pick(act: torch.Tensor, layer: str, units: torch.Tensor | None, position: tuple[int, int] | None
          ) -> torch.Tensor:
    if act.ndim != 4:
        raise LayerError(f"layer {layer!r} gives {tuple(act.shape)} tensors; tuning needs [B, C, H, W] feature maps")
    h, w = act.shape[2:]
    i, j = position if position is not None else (h // 2, w // 2)
    if not (0 <= i < h and 0 <= j < w):
        raise LayerError(f"position {(i, j)} is outside layer {layer!r}'s {h}x{w} map")
    out = act[:, :, i, j]
    return out if units is None else out.index_select(1, units)


def check_units(units: Sequence[int] | None, channels: int, layer: str) -> list[int]:
    """Validate channel indices (all channels when ``None``)."""
    if units is None:
        return list(range(channels))
    out = [int(u) for u in units]
    bad = [u for u in out if not 0 <= u < channels]
    if bad or not out:
        raise LayerError(f"units must be channel indices in [0, {channels}) of layer {layer!r}, got {bad or out}")
    return out


def unit_responses(model: ModelLike, layer: str, batches: Iterable[torch.Tensor], *,
                   units: Sequence[int] | None = None, position: tuple[int, int] | None = None,
                   pre_activation: bool = False, total: int | None = None, progress: bool = False) -> torch.Tensor:
    """Activations of ``units`` of ``layer`` at one spatial position, for every image of every batch.

    Args:
        model: a ``LoadedModel`` (its normalisation is applied) or a bare module (images go in as they are).
        layer: dotted layer name; its output (or, with ``pre_activation``, its input) must be ``[B, C, H, W]``.
        batches: tensors of images in [0, 1]; each batch is moved to the model's device and dtype.
        units: channel indices (all channels when ``None``).
        position: ``(row, col)`` in the layer's map; the centre ``(H // 2, W // 2)`` when ``None``.
        pre_activation: read the input of an activation module (pre-ReLU values).
        total: number of images, for the progress bar.
        progress: show a tqdm bar.

    Returns:
        A tensor on the model's device.

    Shape:
        - batches: ``[B, 3, H, W]`` each
        - Output: ``[N, U]`` with ``N`` the number of images and ``U`` the number of units.
    """
    module = model_module(model)
    device, dtype = module_device(module), module_dtype(module)
    unit_index: torch.Tensor | None = None
    outs: list[torch.Tensor] = []
    with evaluating(module), torch.no_grad(), Capture(module, layer, pre_activation=pre_activation) as cap, \
            tqdm(total=total, disable=not progress, desc=f"responses {layer}", unit="img") as bar:
        for k, batch in enumerate(batches):
            x = to_model_input(model, batch.to(device=device, dtype=dtype))
            if k == 0 and x.shape[0] > 1:
                cap.run(x[:1])  # the first run of a Capture is a full forward: spend it on one image only
            cap.run(x)
            act = cap[layer]
            if unit_index is None and units is not None:
                unit_index = torch.tensor(check_units(units, act.shape[1], layer), device=act.device)
            outs.append(_pick(act, layer, unit_index, position).float())
            bar.update(batch.shape[0])
    if not outs:
        raise CnnscopeError("no images to run")
    return torch.cat(outs)


def image_batches(images: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Split images (``[N, H, W, 3]`` float array in [0, 1] or ``[N, 3, H, W]`` tensor) into tensor batches."""
    if batch_size < 1:
        raise CnnscopeError(f"batch_size must be >= 1, got {batch_size}")
    for k in range(0, len(images), batch_size):
        part = images[k:k + batch_size]
        if isinstance(part, torch.Tensor):
            yield part
        else:
            yield torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32)).permute(0, 3, 1, 2)


def stimulus_batches(stimuli: Sequence[Stimulus], size: tuple[int, int], batch_size: int, supersample: int = 3,
                     offset: tuple[float, float] = (0.0, 0.0)) -> Iterator[torch.Tensor]:
    """Render ``stimuli`` lazily, ``batch_size`` at a time (memory stays bounded), as ``[B, 3, H, W]`` tensors."""
    if batch_size < 1:
        raise CnnscopeError(f"batch_size must be >= 1, got {batch_size}")
    for k in range(0, len(stimuli), batch_size):
        yield torch.from_numpy(render(stimuli[k:k + batch_size], size, supersample=supersample,
                                      offset=offset)).permute(0, 3, 1, 2)


def stimulus_responses(model: ModelLike, layer: str, stimuli: Sequence[Stimulus], *,
                       units: Sequence[int] | None = None, size: int | tuple[int, int] | None = None,
                       supersample: int = 3, offset: tuple[float, float] = (0.0, 0.0),
                       position: tuple[int, int] | None = None, pre_activation: bool = False, batch_size: int = 64,
                       progress: bool = False) -> torch.Tensor:
    """Render ``stimuli`` (centred, see :func:`~cnnscope.stimuli.curves.render`) and read the centre unit.

    Shape:
        - Output: ``[len(stimuli), U]`` on the model's device.
    """
    stimuli = list(stimuli)
    if not stimuli:
        raise CnnscopeError("no stimuli given")
    hw = model_size(model, size)
    return unit_responses(model, layer, stimulus_batches(stimuli, hw, batch_size, supersample, offset), units=units,
                          position=position, pre_activation=pre_activation, total=len(stimuli), progress=progress)


def zscore(values: np.ndarray, units: Sequence[int], mean: Sequence[float] | np.ndarray | None,
           std: Sequence[float] | np.ndarray | None, axis: int = 0) -> tuple[np.ndarray, np.ndarray | None,
                                                                         np.ndarray | None]:
    """Express ``values`` (units along ``axis``) in standard deviations above the dataset mean.

    ``mean``/``std`` hold one number per channel of the layer (indexed by ``units``); without them the values
    are returned unchanged. Units with ``std == 0`` (constant over the dataset, e.g. dead units) get ``NaN``.

    Returns:
        ``(values, mean[units], std[units])``.
    """
    if mean is None and std is None:
        return values, None, None
    if mean is None or std is None:
        raise CnnscopeError("give both mean and std (per-channel dataset statistics), or neither")
    m, s = np.asarray(mean, np.float64).reshape(-1), np.asarray(std, np.float64).reshape(-1)
    if len(m) != len(s) or max(units) >= len(m):
        raise CnnscopeError(f"mean/std must have one value per channel of the layer (got {len(m)} and {len(s)} "
                            f"values for unit indices up to {max(units)})")
    m, s = m[list(units)], s[list(units)]
    shape = [1] * values.ndim
    shape[axis] = -1
    safe = np.where(s > 0, s, np.nan)  # a unit constant over the dataset has no z-score: NaN
    return (values - m.reshape(shape)) / safe.reshape(shape), m, s
