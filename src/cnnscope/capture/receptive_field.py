"""Receptive-field boxes of every spatial position of a layer, measured with NaN probes.

A NaN placed in the input propagates to exactly the layer positions that depend on that pixel (``0 * nan`` is
``nan``, so zero weights, dead ReLUs and clamps cannot hide a connection; max-pooling propagates NaN too). One probe
image per input row ("row ``y`` is NaN") tells, for every layer position, whether its support touches row ``y``;
one per column does the same for columns. The smallest and largest such row/column give the exact bounding box of
the position's support, for any model, including the clipping at the image border (``method="exact"``:
``H + W`` probes of the full input size).

``method="fast"`` measures rows on a narrow slab (``H x min(W, slab)``) and columns on a flat one, which is exact
whenever a row's support does not depend on the image width (every model built from convolutions, pooling,
elementwise ops, residual adds and concatenations). It checks that assumption against full-size probes of the
border rows/columns and a few random ones and falls back to ``"exact"`` on any mismatch. ``"auto"`` is ``"fast"``.

Example:
    >>> from cnnscope.capture.receptive_field import receptive_fields
    >>> rf = receptive_fields(model, ["blocks.4.0.bn1.act"], (224, 224))["blocks.4.0.bn1.act"]
    >>> top, left, bottom, right = rf.box(3, 5)   # input pixels, bottom/right exclusive
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import CnnscopeError, LayerError, MethodError, unknown
from .capture import Capture
from .layers import input_channels
from .state import evaluating, module_device, module_dtype, module_of

if TYPE_CHECKING:
    from ..models import ModelLike

METHODS = ("auto", "fast", "exact")

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ReceptiveField:
    """The input box of every position of one layer.

    Attributes:
        layer: dotted layer name.
        input_size: ``(H, W)`` of the input the boxes refer to.
        output_size: ``(h, w)`` of the layer's spatial grid.
        boxes: ``int32`` array ``[h, w, 4]`` of ``(top, left, bottom, right)``, bottom/right exclusive, clipped to
            the image. A position that depends on no input pixel has the empty box ``(0, 0, 0, 0)``.
        method: how the boxes were measured (``"exact"`` or ``"fast"``).

    Shape:
        - boxes: ``[h, w, 4]``.
    """

    layer: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    boxes: np.ndarray
    method: str

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of position ``(y, x)`` (bottom/right exclusive)."""
        h, w = self.output_size
        if not (0 <= y < h and 0 <= x < w):
            raise LayerError(f"position ({y}, {x}) is outside the {h}x{w} grid of layer {self.layer!r}")
        t, left, b, r = (int(v) for v in self.boxes[y, x])
        return t, left, b, r

    def boxes_at(self, ys: np.ndarray | Sequence[int], xs: np.ndarray | Sequence[int]) -> np.ndarray:
        """Boxes of many positions at once.

        Shape:
            - ys, xs: any shape ``S`` (integer arrays).
            - Output: ``S + (4,)``.
        """
        return self.boxes[np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)]

    @property
    def size(self) -> tuple[int, int]:
        """Largest box ``(height, width)`` over all positions (the unclipped receptive-field size)."""
        b = self.boxes.reshape(-1, 4)
        return int((b[:, 2] - b[:, 0]).max()), int((b[:, 3] - b[:, 1]).max())

    def to_dict(self) -> dict:
        """JSON-ready form (boxes as nested lists)."""
        return {"layer": self.layer, "input_size": list(self.input_size), "output_size": list(self.output_size),
                "method": self.method, "boxes": self.boxes.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ReceptiveField:
        return cls(layer=d["layer"], input_size=tuple(d["input_size"]), output_size=tuple(d["output_size"]),
                   boxes=np.asarray(d["boxes"], dtype=np.int32), method=d["method"])


def _line_probes(n_lines: int, axis: int, lines: Sequence[int], shape: tuple[int, int, int], device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """Zero images ``[len(lines), C, H, W]`` with one NaN row (``axis=0``) or column (``axis=1``) each."""
    x = torch.zeros((len(lines),) + shape, device=device, dtype=dtype)
    for k, line in enumerate(lines):
        if axis == 0:
            x[k, :, line, :] = float("nan")
        else:
            x[k, :, :, line] = float("nan")
    return x


def _affected(cap: Capture, layers: list[str], shape: tuple[int, int, int], axis: int, lines: Sequence[int],
              max_batch: int, bar: object = None) -> dict[str, torch.Tensor]:
    """For each probe line, which layer positions turn NaN: ``layer -> bool [len(lines), h, w]`` (CPU).

    ``cap`` is an open :class:`Capture` of ``layers`` (shared by all probes, so only its first run is a full
    forward); the caller runs it without gradients in eval mode.
    """
    device, dtype = module_device(cap.module), module_dtype(cap.module)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(lines), max_batch):
        chunk = list(lines[start:start + max_batch])
        cap.run(_line_probes(len(chunk), axis, chunk, shape, device, dtype))
        for name in layers:
            act = cap[name]
            if act.ndim != 4:
                raise LayerError(f"receptive fields need a layer with [B, C, H, W] output; {name!r} gives "
                                 f"{tuple(act.shape)}")
            out[name].append(torch.isnan(act).any(dim=1).cpu())
        if bar is not None:
            bar.update(len(chunk))  # type: ignore[attr-defined]
    return {name: torch.cat(parts) for name, parts in out.items()}


def _extent(hits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last (exclusive) probe index that hit each position, and whether any did.

    Shape:
        - hits: ``[L, h, w]`` bool.
        - Output: three ``[h, w]`` arrays.
    """
    n = hits.shape[0]
    any_hit = hits.any(dim=0)
    first = hits.int().argmax(dim=0)
    last = n - hits.flip(0).int().argmax(dim=0)
    return first.numpy(), last.numpy(), any_hit.numpy()


def _boxes(rows: torch.Tensor, cols: torch.Tensor) -> np.ndarray:
    """Boxes ``[h, w, 4]`` from row and column hit maps (``[H, h, w]`` and ``[W, h, w]``)."""
    top, bottom, row_any = _extent(rows)
    left, right, col_any = _extent(cols)
    boxes = np.stack([top, left, bottom, right], axis=-1).astype(np.int32)
    boxes[~(row_any & col_any)] = 0
    return boxes


def _expect(bar: object, probes: int) -> None:
    """Set the progress bar's total to the probes run so far plus the ``probes`` still to come."""
    if bar is not None:
        bar.total = bar.n + probes  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]


def _exact(cap: Capture, layers: list[str], c: int, size: tuple[int, int], max_batch: int, bar: object = None
           ) -> dict[str, np.ndarray]:
    h, w = size
    _expect(bar, h + w)
    rows = _affected(cap, layers, (c, h, w), 0, range(h), max_batch, bar)
    cols = _affected(cap, layers, (c, h, w), 1, range(w), max_batch, bar)
    return {name: _boxes(rows[name], cols[name]) for name in layers}


def _fast(cap: Capture, layers: list[str], c: int, size: tuple[int, int], max_batch: int, slab: int | None,
          checks: int, seed: int, bar: object = None) -> dict[str, np.ndarray] | None:
    """Slab probes plus full-size checks; ``None`` when a check disagrees (the caller then measures exactly)."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    check_rows = sorted({0, 1, h // 2, h - 2, h - 1} | set(torch.randint(0, h, (checks,), generator=gen).tolist()))
    check_cols = sorted({0, 1, w // 2, w - 2, w - 1} | set(torch.randint(0, w, (checks,), generator=gen).tolist()))
    check_rows = [r for r in check_rows if 0 <= r < h]
    check_cols = [x for x in check_cols if 0 <= x < w]
    _expect(bar, len(check_rows) + len(check_cols) + h + w)
    full_rows = _affected(cap, layers, (c, h, w), 0, check_rows, max_batch, bar)
    full_cols = _affected(cap, layers, (c, h, w), 1, check_cols, max_batch, bar)
    if slab is None:  # the largest stride of the layers: the slab still reaches one output position
        oh = min(full_rows[n].shape[1] for n in layers)
        ow = min(full_rows[n].shape[2] for n in layers)
        slab = max(8, -(-h // max(oh, 1)), -(-w // max(ow, 1)))
    sw, sh = min(w, slab), min(h, slab)
    try:
        rows = _affected(cap, layers, (c, h, sw), 0, range(h), max_batch, bar)
        cols = _affected(cap, layers, (c, sh, w), 1, range(w), max_batch, bar)
    except (RuntimeError, ValueError, AssertionError):  # the model refuses the narrow slab (a minimum or a fixed
        # input size: torchvision's ViT asserts it)
        return None
    out: dict[str, np.ndarray] = {}
    for name in layers:
        row_hits = rows[name].any(dim=2)  # [H, h]: slab row y reaches output row i (any slab column)
        col_hits = cols[name].any(dim=1)  # [W, w]
        oh, ow = full_rows[name].shape[1:]
        if row_hits.shape[1] != oh or col_hits.shape[1] != ow:
            return None
        pred_rows = row_hits[:, :, None].expand(h, oh, ow)
        pred_cols = col_hits[:, None, :].expand(w, oh, ow)
        if not (torch.equal(pred_rows[check_rows], full_rows[name])
                and torch.equal(pred_cols[check_cols], full_cols[name])):
            return None
        out[name] = _boxes(pred_rows, pred_cols)
    return out


def receptive_fields(model: ModelLike, layers: str | Iterable[str], input_size: int | tuple[int, int], *,
                     method: str = "auto", max_batch: int = 32, slab: int | None = None, checks: int = 4, seed: int = 0,
                     cache: bool = True, progress: bool = False) -> dict[str, ReceptiveField]:
    """Measure the input box of every position of each layer (one probe pass for all layers).

    The probes run without gradients in temporary eval mode on the module's device; the module is not changed.

    Args:
        module: any ``nn.Module`` taking ``[B, C, H, W]`` images.
        layers: dotted layer names whose outputs are ``[B, C, h, w]``.
        input_size: ``H`` or ``(H, W)`` of the images the boxes refer to.
        method: ``"exact"`` (``H + W`` full-size probes, exact for any model), ``"fast"`` (narrow slabs checked
            against full-size probes, falling back to ``"exact"``) or ``"auto"`` (= ``"fast"``).
        max_batch: probe images per forward pass (memory bound).
        slab: width/height of the fast method's slabs (default: the layers' largest stride, at least 8).
        checks: random full-size rows and columns the fast method checks, besides the border ones.
        seed: seed of the fast method's random checks.
        cache: reuse boxes measured earlier for the same module, layers, size and method (kept as long as the
            module lives; pass ``False`` after changing the module's structure).
        progress: show a tqdm bar of the probe images (with their total).

    Returns:
        ``layer -> ReceptiveField``.

    Raises:
        LayerError: unknown layer, or a layer without a spatial ``[B, C, h, w]`` output.
        MethodError: unknown method.
    """
    module = module_of(model)
    if method not in METHODS:
        raise MethodError(unknown("receptive-field method", method, METHODS))
    size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    if min(size) < 1:
        raise CnnscopeError(f"input_size must be positive, got {input_size!r}")
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    Capture(module, names)  # validates the names (close matches on typos) without registering anything
    store = _CACHE.setdefault(module, {}) if cache else {}
    key = lambda name: (name, size, method)  # noqa: E731
    todo = [n for n in names if key(n) not in store]
    if todo:
        c = input_channels(module)
        boxes, used = None, "exact"
        bar = None
        if progress:  # its total grows as the probes are planned (a fall back to "exact" adds H + W)
            from tqdm.auto import tqdm

            bar = tqdm(desc="receptive fields", unit="probe", total=0, leave=False)
        try:
            with torch.no_grad(), evaluating(module), Capture(module, todo) as cap:
                if method in ("auto", "fast"):
                    boxes, used = _fast(cap, todo, c, size, max_batch, slab, checks, seed, bar), "fast"
                if boxes is None:
                    boxes, used = _exact(cap, todo, c, size, max_batch, bar), "exact"
        finally:
            if bar is not None:
                bar.close()
        for name in todo:
            b = boxes[name]
            store[key(name)] = ReceptiveField(layer=name, input_size=size, output_size=(b.shape[0], b.shape[1]),
                                              boxes=b, method=used)
    return {n: store[key(n)] for n in names}
