"""Non-negative matrix factorisation of activations (Olah et al., *The Building Blocks of Interpretability*,
Distill 2018; Cammarata et al., *Curve Detectors*, Distill 2020), with scikit-learn's ``NMF``.

- :func:`factorize_image`: one image's activations ``[positions, channels]`` into ``k`` groups: where each group is
  active (a coloured spatial map) and each group's channel loadings.
- :func:`factorize_dataset`: many images' activations (a bounded uniform sample of positions) into ``k`` neuron
  groups; :meth:`NeuronGroups.transform` then maps any image onto the groups.

NMF needs non-negative data: post-ReLU layers are; other values are clipped at zero (``negative="clip"``) or their
magnitude is used (``"abs"``). scikit-learn runs on the CPU, so activations are copied there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..capture import Capture, evaluating
from ..errors import CnnscopeError, LayerError
from .ranking import priorities
from .sources import iterate_batches, open_source

NEGATIVE = ("clip", "abs", "error")


def _nonnegative(values: np.ndarray, negative: str, layer: str) -> np.ndarray:
    if negative not in NEGATIVE:
        raise CnnscopeError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    if values.min(initial=0.0) < 0:
        if negative == "error":
            raise CnnscopeError(f"layer {layer!r} has negative values; NMF needs non-negative data (use a post-ReLU "
                                "layer, or negative='clip' / 'abs')")
        values = np.abs(values) if negative == "abs" else np.maximum(values, 0.0)
    return values


def _nmf(v: np.ndarray, k: int, seed: int, max_iter: int):
    from sklearn.decomposition import NMF

    if not 1 <= k <= min(v.shape):
        raise CnnscopeError(f"k must be between 1 and {min(v.shape)} for a {v.shape[0]} x {v.shape[1]} matrix")
    nmf = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the result is still a valid factorisation
        w = nmf.fit_transform(v)
    return nmf, w.astype(np.float32), nmf.components_.astype(np.float32)


def palette(k: int) -> np.ndarray:
    """``k`` distinct colours, ``float [k, 3]`` in [0, 1]."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "hsv"]
    return np.array([cmap(i if k <= 10 else i / k)[:3] for i in range(k)])


@dataclass
class ImageFactors:
    """NMF of one image's activations.

    Attributes:
        layer: the layer; image: the fitted ``uint8`` image the model saw.
        spatial: ``float32 [k, h, w]``: how strongly each group is active at each position.
        loadings: ``float32 [k, C]``: each group's channel loadings (non-negative).
        error: Frobenius norm of ``V - W H``; relative_error: divided by ``|V|``.
    """

    layer: str
    image: np.ndarray
    spatial: np.ndarray
    loadings: np.ndarray
    error: float
    relative_error: float

    @property
    def k(self) -> int:
        return int(self.loadings.shape[0])

    def top_channels(self, group: int, n: int = 8) -> list[tuple[int, float]]:
        """The ``n`` channels with the largest loading in ``group``."""
        order = np.argsort(-self.loadings[group], kind="stable")[:n]
        return [(int(c), float(self.loadings[group, c])) for c in order]

    def colored_map(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``uint8 [h, w, 3]`` (or resized to ``size``): each position coloured by its groups' mix, brightness by
        the strongest group's activation relative to that group's maximum."""
        a = self.spatial / np.maximum(self.spatial.reshape(self.k, -1).max(axis=1), 1e-12)[:, None, None]
        colors = palette(self.k)
        mix = np.einsum("khw,kc->hwc", a, colors) / np.maximum(a.sum(axis=0), 1e-12)[..., None]
        rgb = np.clip(mix * np.clip(a.max(axis=0), 0, 1)[..., None], 0, 1)
        out = (rgb * 255).round().astype(np.uint8)
        if size is not None:
            from ..images import resize

            out = resize(out, size)
        return out

    def overlay(self, alpha: float = 0.6) -> np.ndarray:
        """The coloured map upsampled over the image, ``uint8 [H, W, 3]``."""
        cmap = self.colored_map(self.image.shape[:2]).astype(np.float64)
        out = (1 - alpha) * self.image.astype(np.float64) + alpha * cmap
        return np.clip(out, 0, 255).round().astype(np.uint8)

    def to_dict(self, n: int = 8) -> dict:
        return {"layer": self.layer, "k": self.k, "error": self.error, "relative_error": self.relative_error,
                "groups": [{"group": g, "color": palette(self.k)[g].tolist(),
                            "share": float(self.spatial[g].sum() / max(self.spatial.sum(), 1e-12)),
                            "top_channels": [{"channel": c, "loading": v} for c, v in self.top_channels(g, n)]}
                           for g in range(self.k)]}


def _layer_values(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    with torch.no_grad(), evaluating(model.module), Capture(model.module, layer) as cap:
        cap.run(x)
    v = cap[layer]
    if v.ndim != 4:
        raise LayerError(f"NMF needs a layer with [B, C, H, W] output; {layer!r} gives {tuple(v.shape)}")
    return v


def factorize_image(model, image: object, layer: str, k: int = 4, *, negative: str = "clip", seed: int = 0,
                    max_iter: int = 500) -> ImageFactors:
    """Factorise the activations of ``layer`` on one image into ``k`` non-negative groups.

    Args:
        model: a ``LoadedModel``.
        image: a path, array or PIL image (fitted to the model's input size).
        layer: any layer with a ``[B, C, h, w]`` output (activation modules: their output).
        k: number of groups.
        negative: what to do with negative values (``"clip"``, ``"abs"`` or ``"error"``).
        seed: ``random_state`` of scikit-learn's NMF.
    """
    fitted = model.fit_image(image)
    v = _layer_values(model, model.preprocess(fitted), layer)[0]
    c, h, w = v.shape
    data = _nonnegative(v.permute(1, 2, 0).reshape(-1, c).double().cpu().numpy(), negative, layer)
    nmf, wmat, hmat = _nmf(data, k, seed, max_iter)
    norm = float(np.linalg.norm(data))
    return ImageFactors(layer=layer, image=fitted, spatial=wmat.T.reshape(k, h, w), loadings=hmat,
                        error=float(nmf.reconstruction_err_), relative_error=float(nmf.reconstruction_err_) /
                        max(norm, 1e-12))


@dataclass
class NeuronGroups:
    """NMF of many images' activations: ``k`` groups of channels.

    Attributes:
        layer; loadings: ``float32 [k, C]``; error / relative_error: of the sampled matrix;
        positions: how many positions were factorised (a uniform sample of at most ``max_positions``);
        images: images read.
    """

    layer: str
    loadings: np.ndarray
    error: float
    relative_error: float
    positions: int
    images: int
    negative: str
    model_nmf: object = None

    @property
    def k(self) -> int:
        return int(self.loadings.shape[0])

    def top_channels(self, group: int, n: int = 8) -> list[tuple[int, float]]:
        order = np.argsort(-self.loadings[group], kind="stable")[:n]
        return [(int(c), float(self.loadings[group, c])) for c in order]

    def transform(self, model, image: object) -> ImageFactors:
        """Where each group is active in ``image`` (the groups' loadings stay fixed)."""
        fitted = model.fit_image(image)
        v = _layer_values(model, model.preprocess(fitted), self.layer)[0]
        c, h, w = v.shape
        data = _nonnegative(v.permute(1, 2, 0).reshape(-1, c).double().cpu().numpy(), self.negative, self.layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wmat = self.model_nmf.transform(data).astype(np.float32)  # type: ignore[union-attr]
        err = float(np.linalg.norm(data - wmat @ self.loadings))
        return ImageFactors(layer=self.layer, image=fitted, spatial=wmat.T.reshape(self.k, h, w),
                            loadings=self.loadings, error=err, relative_error=err / max(float(np.linalg.norm(data)),
                                                                                          1e-12))

    def to_dict(self, n: int = 8) -> dict:
        return {"layer": self.layer, "k": self.k, "error": self.error, "relative_error": self.relative_error,
                "positions": self.positions, "images": self.images,
                "groups": [{"group": g, "top_channels": [{"channel": c, "loading": v}
                                                         for c, v in self.top_channels(g, n)]}
                           for g in range(self.k)]}


def factorize_dataset(model, images: object, layer: str, k: int = 6, *, max_positions: int = 20000,
                      negative: str = "clip", seed: int = 0, batch_size: int = 16, num_workers: int = 0,
                      progress: bool = False, max_iter: int = 400) -> NeuronGroups:
    """Find ``k`` groups of channels that are active together over many images.

    Memory is bounded: a uniform sample of at most ``max_positions`` positions is kept while streaming (the
    positions of smallest pseudo-random priority, as in the band samples of the statistics pass).

    Args:
        model: a ``LoadedModel``; images: anything :func:`~cnnscope.dataset.sources.open_source` accepts.
        layer: a layer with ``[B, C, h, w]`` output; k: number of groups.
    """
    source = open_source(images)
    kept: torch.Tensor | None = None
    kept_prio: torch.Tensor | None = None
    n_images = 0
    with torch.no_grad(), evaluating(model.module), Capture(model.module, layer) as cap:
        for batch in iterate_batches(source, model, batch_size=batch_size, num_workers=num_workers,
                                     progress=progress, description="nmf"):
            if batch.ids.numel() == 0:
                continue
            cap.run(batch.tensor(model))
            kept, kept_prio = _keep(cap[layer], batch.ids, kept, kept_prio, layer, max_positions, seed)
            n_images += int(batch.ids.numel())
    if kept is None:
        raise CnnscopeError("no image could be read for the NMF")
    data = _nonnegative(kept.double().cpu().numpy(), negative, layer)
    nmf, _, hmat = _nmf(data, k, seed, max_iter)
    return NeuronGroups(layer=layer, loadings=hmat, error=float(nmf.reconstruction_err_),
                        relative_error=float(nmf.reconstruction_err_) / max(float(np.linalg.norm(data)), 1e-12),
                        positions=int(data.shape[0]), images=n_images, negative=negative, model_nmf=nmf)


def _keep(v: torch.Tensor, ids: torch.Tensor, kept: torch.Tensor | None, kept_prio: torch.Tensor | None, layer: str,
          max_positions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a batch's positions (rows of channel values) to the uniform sample of at most ``max_positions``."""
    if v.ndim != 4:
        raise LayerError(f"NMF needs a layer with [B, C, H, W] output; {layer!r} gives {tuple(v.shape)}")
    b, c, h, w = v.shape
    rows = v.permute(0, 2, 3, 1).reshape(-1, c).float()
    keys = (ids.to(v.device)[:, None] * (h * w) + torch.arange(h * w, device=v.device)[None]).reshape(-1)
    prio = priorities(keys, seed)
    if kept is not None:
        rows, prio = torch.cat([kept, rows]), torch.cat([kept_prio, prio])
    if rows.shape[0] > max_positions:
        sel = torch.argsort(prio)[:max_positions]
        rows, prio = rows[sel], prio[sel]
    return rows, prio
