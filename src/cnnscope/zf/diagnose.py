"""The paper's diagnosis of first-layer filters (Zeiler & Fergus 2013, Sec. 5.1, Fig. 6): dead filters, filters
dominated by high frequencies, and aliasing caused by a large first-layer stride; two or more models side by side.

Definitions (per filter of a convolution layer):

- **weak**: the filter's weight norm is below 1% of the layer's largest (the rule of
  :func:`~cnnscope.zf.filters.filter_spectrum`).
- **never active**: with images, and only for a convolution followed directly by a ReLU-like activation module
  (``ReLU``, ``ReLU6``, ...: the next module registered after it, as in a conv-ReLU ``Sequential``): the
  convolution's output (bias included) is never above 0 at any position of any image, so the activation after it is
  0 everywhere. Not measured (``None``) without images or when something else (a batch norm) follows the conv.
- **dead**: weak or never active.
- **high-frequency share**: the share of the filter's own energy above half the Nyquist frequency (radius > 0.5 in
  units of 0.5 cycles/pixel; 2-D FFT of the kernel zero-padded to 32 x 32, power summed over input channels).
- **aliased share** (the model's first convolution only, with images): the convolution applied densely (stride 1,
  its own padding, dilation and groups, no bias) to the images gives maps ``r[b, n, y, x]``; each map minus its
  mean is Fourier transformed (``fft2`` over its full size) and the share of its power at frequencies
  ``|fy| > 1 / (2 sy)`` or ``|fx| > 1 / (2 sx)`` cycles/pixel (above the Nyquist frequency of the layer's stride
  ``(sy, sx)``) is taken, power summed over the images before dividing. That energy is what sampling the response
  at the stride folds back onto lower frequencies (aliasing), which the layer-2 features then see. A stride of 1
  aliases nothing (share 0). The measure needs the first convolution to read the model's input as is; this is
  checked (its strided output must equal the recomputed one) and otherwise the share is not measured.
- **aliased filter**: aliased share above :data:`ALIASED`.

Example:
    >>> a = diagnose(load_checkpoint("stride4/epoch_005.pt"), digits_images)
    >>> b = diagnose(load_checkpoint("stride2/epoch_005.pt"), digits_images)
    >>> print_rows(compare_rows({"stride 4": a, "stride 2": b}))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture, is_activation, resolve_layers
from ..errors import LayerError
from ..models import ModelLike, as_model
from .filters import conv_layers, high_frequency_share

#: an aliased filter has more than this share of its dense response's varying energy above the stride's Nyquist:
#: energy that folds back at 10% of the total is an aliased component of a third of the rest's amplitude, a visible
#: artifact (natural images put most of their energy at low frequencies, so shares near 1 do not occur)
ALIASED = 0.1
#: a weak filter's weight norm is below this share of the layer's largest
WEAK = 0.01

#: activations that output nothing for inputs <= 0: a filter whose conv output never rises above 0 is dead behind them
#: (LeakyReLU, ELU, SiLU, GELU, Hardswish pass negative values on, so "never above 0" says nothing there)
_RELU_LIKE = (nn.ReLU, nn.ReLU6)


@dataclass
class LayerDiagnosis:
    """Per-filter diagnosis of one convolution layer (see the module docstring for every definition).

    Attributes:
        layer: dotted name; kernel, stride: ``(h, w)``.
        norms: ``[N]`` weight norm of each filter.
        high_share: ``[N]`` share of each filter's energy above half Nyquist.
        weak: filters whose norm is below :data:`WEAK` of the largest.
        never_active: filters never above 0 on the images (``None``: not measured, and why in ``notes``).
        aliased_share: ``[N]`` share of each filter's dense response energy above the stride's Nyquist (``None``:
            not measured).
        notes: what was not measured and why.
    """

    layer: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    norms: torch.Tensor
    high_share: torch.Tensor
    weak: list[int]
    never_active: list[int] | None = None
    aliased_share: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def dead(self) -> list[int]:
        """Weak or never active filters."""
        return sorted(set(self.weak) | set(self.never_active or []))

    @property
    def aliased(self) -> list[int] | None:
        """Filters whose aliased share is above :data:`ALIASED` (``None``: not measured)."""
        if self.aliased_share is None:
            return None
        return [int(i) for i in torch.nonzero(self.aliased_share > ALIASED).flatten()]

    def summary(self) -> dict:
        """The numbers of one table row."""
        return {"layer": self.layer, "kernel": list(self.kernel), "stride": list(self.stride),
                "filters": len(self.norms), "weak": len(self.weak),
                "never_active": None if self.never_active is None else len(self.never_active),
                "dead": len(self.dead), "high_share": float(self.high_share.mean()),
                "aliased_share": None if self.aliased_share is None else float(self.aliased_share.mean()),
                "aliased": None if self.aliased is None else len(self.aliased)}

    def to_dict(self) -> dict:
        return {**self.summary(), "norms": self.norms.tolist(), "high_shares": self.high_share.tolist(),
                "weak_filters": self.weak, "never_active_filters": self.never_active, "dead_filters": self.dead,
                "aliased_shares": None if self.aliased_share is None else self.aliased_share.tolist(),
                "aliased_filters": self.aliased, "notes": self.notes}


@dataclass
class FilterDiagnosis:
    """The diagnosis of a model's first convolutions, with the first layer's weights for the figure."""

    model: str
    layers: list[LayerDiagnosis]
    images: int
    first_weights: torch.Tensor

    def to_dict(self) -> dict:
        return {"model": self.model, "images": self.images, "layers": [d.to_dict() for d in self.layers],
                "aliased_threshold": ALIASED, "weak_threshold": WEAK}


def _pair(v: int | tuple) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _followed_by_relu(module: nn.Module, name: str) -> bool:
    """Whether the module registered right after ``name`` (outside it) is a ReLU-like activation."""
    items = list(module.named_modules())
    names = [n for n, _ in items]
    i = names.index(name)
    for n, m in items[i + 1:]:
        if n.startswith(name + "."):
            continue
        if isinstance(m, nn.Hardtanh):
            return m.min_val == 0.0
        return isinstance(m, _RELU_LIKE) or (is_activation(m) and type(m).__name__.lower() in ("relu", "relu6"))
    return False


def aliased_energy(response: torch.Tensor, stride: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(power above the stride's Nyquist, total power)`` per channel, summed over the batch, of dense maps
    ``[B, N, H, W]`` minus their means (see the module docstring).

    Shape:
        - Output: two ``[N]`` float64 tensors on the CPU.
    """
    r = response.detach().to(torch.float64)
    r = r - r.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(r).abs().square()
    h, w = r.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=r.device).abs().view(-1, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=r.device).abs().view(1, -1)
    mask = (fy > 1 / (2 * stride[0]) + 1e-12) | (fx > 1 / (2 * stride[1]) + 1e-12)
    return (power * mask).sum(dim=(0, 2, 3)).cpu(), power.sum(dim=(0, 2, 3)).cpu()


def diagnose(model: ModelLike, images: object = None, *, layers: list[str] | None = None,
             batch_size: int | None = None, progress: bool = False) -> FilterDiagnosis:
    """Dead, high-frequency and aliased filters of ``model``'s first convolutions (module docstring).

    Args:
        model: any image model (not modified).
        images: anything :meth:`~cnnscope.models.LoadedModel.batch` takes; ``None`` measures the weights only.
        layers: convolution layers (default: the first two; the aliased share is measured on the model's first
            convolution only).
        batch_size: images per forward (default by device).
        progress: show a progress bar.

    Raises:
        LayerError: the model has no convolution, or a layer is not one.
    """
    m = as_model(model)
    names = conv_layers(m)
    if not names:
        raise LayerError(f"{m.name} has no Conv2d layer to diagnose")
    chosen = list(layers) if layers else names[:2]
    mods = resolve_layers(m.module, chosen)
    bad = [n for n, mod in mods.items() if not isinstance(mod, nn.Conv2d)]
    if bad:
        raise LayerError(f"{', '.join(bad)}: not convolution layers (those of {m.name}: {', '.join(names[:8])}...)")
    out: list[LayerDiagnosis] = []
    for name, conv in mods.items():
        w = conv.weight.detach()
        norms = w.flatten(1).to(torch.float64).norm(dim=1).cpu()
        weak = [int(i) for i in torch.nonzero(norms < WEAK * norms.max().clamp_min(1e-300)).flatten()]
        out.append(LayerDiagnosis(name, _pair(conv.kernel_size), _pair(conv.stride), norms,
                                  high_frequency_share(w), weak))
    n_images = 0
    if images is not None:
        x = m.batch(images)
        n_images = len(x)
        _measure(m, x, out, mods, names[0], batch_size, progress)
    else:
        for d in out:
            d.notes.append("no images: never-active filters and aliasing not measured")
    return FilterDiagnosis(m.name, out, n_images, mods[chosen[0]].weight.detach().cpu())


def _measure(m, x: torch.Tensor, out: list[LayerDiagnosis], mods: dict, first: str, batch_size: int | None,
             progress: bool) -> None:
    """Fill ``never_active`` and ``aliased_share`` from the images ``x`` (model space)."""
    relu = {d.layer: _followed_by_relu(m.module, d.layer) for d in out}
    for d in out:
        if not relu[d.layer]:
            d.notes.append("not followed by a ReLU-like activation: never-active filters not measured")
    positive = {d.layer: torch.zeros(len(d.norms), dtype=torch.bool) for d in out if relu[d.layer]}
    first_d = next((d for d in out if d.layer == first), None)
    conv = mods.get(first)
    above = total = None
    direct = True
    with torch.no_grad(), Capture(m.module, [d.layer for d in out]) as cap:
        for sl in track(chunks(len(x), resolve_batch_size(batch_size, m.device)), progress, "diagnose"):
            cap.run(x[sl])
            for name in positive:
                positive[name] |= (cap[name] > 0).any(dim=(0, 2, 3)).cpu()
            if first_d is None or not direct:
                continue
            strided = F.conv2d(x[sl], conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            if strided.shape != cap[first].shape or not torch.allclose(strided, cap[first], rtol=1e-4, atol=1e-4):
                direct = False
                continue
            dense = F.conv2d(x[sl], conv.weight, None, 1, conv.padding, conv.dilation, conv.groups)
            a, t = aliased_energy(dense, first_d.stride)
            above, total = (a, t) if above is None else (above + a, total + t)
    for name, pos in positive.items():
        d = next(d for d in out if d.layer == name)
        d.never_active = [int(i) for i in torch.nonzero(~pos).flatten()]
    if first_d is not None:
        if direct and above is not None:
            first_d.aliased_share = torch.where(total > 0, above / total.clamp_min(1e-300), torch.zeros_like(total))
        else:
            first_d.notes.append("the first convolution does not read the model's input as is: aliasing not "
                                 "measured")


def compare_rows(diagnoses: dict[str, FilterDiagnosis]) -> list[dict]:
    """One table row per model and layer: ``{"model", "layer", "kernel", "stride", "filters", "weak",
    "never_active", "dead", "high_share", "aliased_share", "aliased"}``."""
    return [{"model": name, **d.summary()} for name, diag in diagnoses.items() for d in diag.layers]


def table_lines(rows: list[dict]) -> tuple[list[tuple], tuple[str, ...]]:
    """``(rows, header)`` for :func:`cnnscope.cli.app.print_table` of :func:`compare_rows`' rows."""
    def num(v, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    header = ("model", "layer", "kernel/stride", "filters", "dead", "weak", "never active", "high-freq share",
              "aliased share", "aliased filters")
    lines = [(r["model"], r["layer"], f"{r['kernel'][0]}x{r['kernel'][1]}/{r['stride'][0]}", r["filters"], r["dead"],
              r["weak"], num(r["never_active"], "d"), num(r["high_share"], ".1%"), num(r["aliased_share"], ".1%"),
              num(r["aliased"], "d")) for r in rows]
    return lines, header
