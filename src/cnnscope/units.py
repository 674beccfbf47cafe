"""``Unit``: one channel of a layer, or one neuron of it; the ``"0,4,8-11"`` channel-list syntax; layer layouts.

Every area names units the same way (docs/CONVENTIONS.md):

* ``Unit(layer, channel)``: the whole channel. Where one number per image is needed it is the mean over all
  positions of the channel's map.
* ``Unit(layer, channel, position=(row, col))``: one neuron, at that row and column of the layer's output grid.
* ``position="center"``: the neuron at ``(H // 2, W // 2)``; ``position="max"``: the strongest neuron of the
  channel, per image.

``position=None`` means "the whole channel" everywhere. A function whose analysis needs one neuron states its
default in its signature (``position="center"`` for tuning curves, ``"max"`` for deconvnet projections), and
:func:`read_unit` resolves every form the same way.

Channels and positions are those of the layer's *layout* (docs/ARCHITECTURE.md, "Layouts are data"): a layer's
output is ``nchw`` (``[B, C, H, W]``), ``nhwc`` (``[B, H, W, C]``), ``tokens`` (``[B, N, C]``, ``N = H * W`` in
row-major order) or ``tokens+cls`` (a class token first, then the grid), or ``nc`` (``[B, C]``, no grid).
:func:`as_nchw` views any of them as ``[B, C, H, W]`` (``[B, C]`` for ``nc``); the capture layer detects a layer's
layout (:mod:`cnnscope.capture.layout`) and hands out such views.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .errors import CnnscopeError, LayerError

#: named single positions an analysis may accept besides ``(row, col)``
POSITION_NAMES = ("center", "max")

#: the layouts a user may name with ``layout=``; ``"nc"`` (``[B, C]``, no grid) is detected, never needed as an option
LAYOUTS = ("nchw", "nhwc", "tokens", "tokens+cls")
LAYOUT_RANKS = {"nchw": 4, "nhwc": 4, "tokens": 3, "tokens+cls": 3, "nc": 2}
LAYOUT_HINT = "pass layout='nchw', 'nhwc', 'tokens' or 'tokens+cls'"


def check_layout(layout: object) -> str:
    """Validate a layout name (one of :data:`LAYOUTS` or ``"nc"``).

    Raises:
        LayerError: anything else, listing the names.
    """
    if not isinstance(layout, str) or layout not in LAYOUT_RANKS:
        raise LayerError(f"layout must be one of {', '.join(repr(k) for k in LAYOUT_RANKS)}, got {layout!r}")
    return layout


def token_grid(n: int, input_size: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """``(h, w)`` of ``n`` tokens on a grid with the input's aspect ratio (``h * w == n``, ``h * W == w * H``).

    ``input_size`` ``None`` means a square grid. The answer is unique when it exists: ``n`` tokens and ``n - 1``
    tokens can both form such grids only for ``n == 1``, so a class token is never mistaken for a grid row.
    """
    if n < 1:
        return None
    ih, iw = (1, 1) if input_size is None else (int(input_size[0]), int(input_size[1]))
    g = math.gcd(ih, iw)
    a, b = ih // g, iw // g  # h = a * k, w = b * k
    k = math.isqrt(n // (a * b)) if n % (a * b) == 0 else 0
    return (a * k, b * k) if k and a * b * k * k == n else None


def layout_grid(shape: tuple[int, ...], layout: str, input_size: tuple[int, int] | None = None, layer: str = ""
                ) -> tuple[int, tuple[int, int] | None]:
    """``(channels, (H, W))`` of an output ``shape`` (without the batch dimension) read in ``layout``.

    The grid is ``None`` for ``nc``. Raises :class:`LayerError` when the shape does not fit the layout (wrong rank,
    or tokens that form no grid with the input's aspect ratio).
    """
    check_layout(layout)
    if len(shape) + 1 != LAYOUT_RANKS[layout]:
        raise LayerError(f"layer {layer!r} outputs shape {list(shape)}, which is not {layout!r} "
                         f"({LAYOUT_RANKS[layout]}-D with the batch); {LAYOUT_HINT}")
    if layout == "nc":
        return shape[0], None
    if layout == "nchw":
        return shape[0], (shape[1], shape[2])
    if layout == "nhwc":
        return shape[2], (shape[0], shape[1])
    n = shape[0] - (layout == "tokens+cls")
    grid = token_grid(n, input_size)
    if grid is None:
        where = "a square grid" if input_size is None else f"a grid shaped like the {input_size[0]}x{input_size[1]} "
        raise LayerError(f"layer {layer!r}: {n} tokens do not form {where}{'' if input_size is None else 'input'} "
                         f"(layout {layout!r}); {LAYOUT_HINT}")
    return shape[1], grid


def as_nchw(t: torch.Tensor, layout: str, input_size: tuple[int, int] | None = None, layer: str = ""
            ) -> torch.Tensor:
    """View a layer's output as ``[B, C, H, W]`` (``[B, C]`` for ``nc``): permute/reshape, differentiable.

    ``nchw`` and ``nc`` return ``t`` itself; ``nhwc`` is a permuted view; ``tokens`` are laid out row-major on the
    grid of :func:`token_grid`; ``tokens+cls`` drops the class token first.

    Raises:
        LayerError: the tensor's shape does not fit the layout.

    Shape:
        - t: ``[B, C, H, W]``, ``[B, H, W, C]``, ``[B, N, C]`` or ``[B, C]``; Output: ``[B, C, H, W]`` or ``[B, C]``.
    """
    c, grid = layout_grid(tuple(t.shape[1:]), layout, input_size, layer)
    if layout in ("nchw", "nc"):
        return t
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    tokens = t[:, 1:] if layout == "tokens+cls" else t
    assert grid is not None
    return tokens.transpose(1, 2).reshape(t.shape[0], c, grid[0], grid[1])


@dataclass(frozen=True)
class Unit:
    """One channel (``position=None``) or one neuron (``position=(row, col)``) of a layer.

    Attributes:
        layer: dotted layer name (``"blocks.5.0"``).
        channel: channel index in the layer's output.
        position: ``(row, col)`` in the layer's output grid, ``"center"``, ``"max"``, or ``None`` for the whole
            channel.
    """

    layer: str
    channel: int
    position: tuple[int, int] | str | None = None

    @property
    def is_neuron(self) -> bool:
        return self.position is not None

    def spec(self) -> dict:
        pos = list(self.position) if isinstance(self.position, tuple) else self.position
        return {"kind": "unit", "layer": self.layer, "channel": self.channel, "position": pos}

    def __str__(self) -> str:
        if isinstance(self.position, tuple):
            where = f" at (row={self.position[0]}, col={self.position[1]})"
        else:
            where = "" if self.position is None else f" ({self.position})"
        return f"{self.layer} channel {self.channel}{where}"


def check_position(position: object, *, allow: Iterable[str] = ()) -> tuple[int, int] | str | None:
    """Validate a position: ``None``, ``(row, col)`` of non-negative ints, or one of the names in ``allow``.

    Raises:
        LayerError: anything else, naming what is accepted.
    """
    allowed = tuple(allow)
    if position is None or (isinstance(position, str) and position in allowed):
        return position  # type: ignore[return-value]
    ok = (isinstance(position, (tuple, list)) and len(position) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in position))
    if not ok:
        names = "".join(f", {a!r}" for a in allowed)
        raise LayerError(f"a position is (row, col) with non-negative ints, None (the whole channel){names}; "
                         f"got {position!r}")
    return int(position[0]), int(position[1])  # type: ignore[index]


def unit(layer: str, channel: int, position: tuple[int, int] | str | None = None) -> Unit:
    """Build a validated :class:`Unit`.

    Raises:
        LayerError: an empty layer name, a negative or non-integer channel, or a malformed position.
    """
    if not isinstance(layer, str) or not layer:
        raise LayerError(f"a unit needs a dotted layer name, got {layer!r}")
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        try:
            ok = int(channel) == channel and int(channel) >= 0 and not isinstance(channel, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LayerError(f"a unit's channel is a non-negative int, got {channel!r}")
    return Unit(layer, int(channel), check_position(position, allow=POSITION_NAMES))  # type: ignore[arg-type]


def grid_position(position: tuple[int, int] | str, act: torch.Tensor, layer: str = "") -> tuple[int, int]:
    """``(row, col)`` of a fixed position (``"center"`` or a checked tuple) in a ``[..., H, W]`` map.

    Raises:
        LayerError: ``"max"``/``None`` (they depend on the values), or a position outside the map.
    """
    h, w = act.shape[-2:]
    if position == "center":
        return h // 2, w // 2
    if not isinstance(position, tuple):
        raise LayerError(f"position {position!r} has no fixed place in the map; give (row, col) or 'center'")
    if not (0 <= position[0] < h and 0 <= position[1] < w):
        raise LayerError(f"position {position} is outside layer {layer!r}'s {h}x{w} map")
    return position


def read_unit(act: torch.Tensor, channel: int, position: tuple[int, int] | str | None, layer: str = "", *,
              layout: str | None = None, input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """One value per image of a unit, from a ``[B, C, H, W]`` (or ``[B, C]``) activation.

    ``None``: mean over positions; ``"max"``: maximum over positions; ``"center"`` or ``(row, col)``: that neuron.
    Activations captured by :class:`cnnscope.Capture` are already ``[B, C, H, W]`` views; a raw output in another
    layout is read with ``layout=`` (``"nhwc"``, ``"tokens"``, ``"tokens+cls"``; ``input_size`` gives the aspect
    ratio of a non-square token grid).

    Raises:
        LayerError: a channel or position outside the layer, a position on a layer without a grid, or an
            activation that does not fit ``layout``.

    Shape:
        - act: ``[B, C, H, W]`` or ``[B, C]`` (or ``layout``'s shape); Output: ``[B]``.
    """
    if layout is not None:
        act = as_nchw(act, layout, input_size, layer)
    if not 0 <= channel < act.shape[1]:
        raise LayerError(f"channel {channel} is outside layer {layer!r} ({act.shape[1]} channels)")
    a = act[:, channel]
    if a.ndim == 1:
        if position is not None:
            raise LayerError(f"layer {layer!r} has no spatial grid ({tuple(act.shape[1:])}); use position=None")
        return a
    if position is None:
        return a.flatten(1).mean(1)
    if position == "max":
        return a.flatten(1).amax(1)
    i, j = grid_position(position, a, layer)  # type: ignore[arg-type]
    return a[..., i, j]


def parse_channels(spec: str | int | Iterable[int] | None, channels: int) -> list[int]:
    """``None``/``"all"``, ``"0-31"``, ``"0,4,8-11"``, one int or a list of ints -> sorted channel indices.

    Args:
        spec: the selection.
        channels: how many channels the layer has (indices must lie in ``[0, channels)``).

    Raises:
        CnnscopeError: malformed text, an empty selection, or an index outside the layer.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(channels))
    if isinstance(spec, str):
        out: set[int] = set()
        for part in spec.replace(" ", "").split(","):
            try:
                if "-" in part:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    if hi < lo:
                        raise ValueError
                    out.update(range(lo, hi + 1))
                else:
                    out.add(int(part))
            except ValueError:
                raise CnnscopeError(f"bad channel list {spec!r} at {part!r}; use 'all', '0-31' or '0,4,8-11'"
                                    ) from None
        picked = sorted(out)
    elif isinstance(spec, int) and not isinstance(spec, bool):
        picked = [spec]
    else:
        try:
            picked = sorted({int(u) for u in spec})  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise CnnscopeError(f"channels are 'all', '0,4,8-11', an int or a list of ints; got {spec!r}") from None
    bad = [u for u in picked if not 0 <= u < channels]
    if bad:
        raise CnnscopeError(f"channels {bad[:5]} are outside 0-{channels - 1} ({channels} channels)")
    if not picked:
        raise CnnscopeError(f"no channels selected by {spec!r}")
    return picked
