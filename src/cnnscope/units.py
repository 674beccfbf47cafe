"""``Unit``: one channel of a layer, or one neuron of it; and the ``"0,4,8-11"`` channel-list syntax.

Every area names units the same way (docs/CONVENTIONS.md):

* ``Unit(layer, channel)``: the whole channel. Where one number per image is needed it is the mean over all
  positions of the channel's map.
* ``Unit(layer, channel, position=(row, col))``: one neuron, at that row and column of the layer's output grid.
* ``position="center"``: the neuron at ``(H // 2, W // 2)``; ``position="max"``: the strongest neuron of the
  channel, per image.

``position=None`` means "the whole channel" everywhere. A function whose analysis needs one neuron states its
default in its signature (``position="center"`` for tuning curves, ``"max"`` for deconvnet projections), and
:func:`read_unit` resolves every form the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .errors import CnnscopeError, LayerError

#: named single positions an analysis may accept besides ``(row, col)``
POSITION_NAMES = ("center", "max")


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


def read_unit(act: torch.Tensor, channel: int, position: tuple[int, int] | str | None, layer: str = ""
              ) -> torch.Tensor:
    """One value per image of a unit, from a ``[B, C, H, W]`` (or ``[B, C]``) activation.

    ``None``: mean over positions; ``"max"``: maximum over positions; ``"center"`` or ``(row, col)``: that neuron.

    Raises:
        LayerError: a channel or position outside the layer, or a position on a layer without a grid.

    Shape:
        - act: ``[B, C, H, W]`` or ``[B, C]``; Output: ``[B]``.
    """
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
