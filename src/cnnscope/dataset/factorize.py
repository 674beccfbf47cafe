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
from dataclasses import dataclass, field

import numpy as np
import torch

from ..capture import Capture, evaluating
from ..errors import CnnscopeError, LayerError
from ..models import ModelLike, as_model
from .ranking import priorities
from .sources import SkippedImage, iterate_batches, skipped_dicts

NEGATIVE = ("clip", "abs", "error")


def _nonnegative(values: torch.Tensor, negative: str, layer: str) -> np.ndarray:
    """``[positions, C]`` activations as a non-negative ``float64`` matrix for scikit-learn."""
    if negative not in NEGATIVE:
        raise CnnscopeError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    v = values.double().cpu()
    if v.numel() and float(v.min()) < 0:
        if negative == "error":
            raise CnnscopeError(f"layer {layer!r} has negative values; NMF needs non-negative data (use a post-ReLU "
                                "layer, or negative='clip' / 'abs')")
        v = v.abs() if negative == "abs" else v.clamp(min=0.0)
    return v.numpy()


def _nmf(v: np.ndarray, k: int, seed: int, max_iter: int):
    from sklearn.decomposition import NMF

    if not 1 <= k <= min(v.shape):
        raise CnnscopeError(f"k must be between 1 and {min(v.shape)} for a {v.shape[0]} x {v.shape[1]} matrix")
    nmf = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the result is still a valid factorisation
        w = nmf.fit_transform(v)
    return nmf, torch.from_numpy(w.astype(np.float32)), torch.from_numpy(nmf.components_.astype(np.float32))


def palette(k: int) -> np.ndarray:
    """``k`` distinct colours, ``float [k, 3]`` in [0, 1]."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "hsv"]
    return np.array([cmap(i if k <= 10 else i / k)[:3] for i in range(k)])


def top_channels(loadings: torch.Tensor, group: int, n: int = 8) -> list[tuple[int, float]]:
    """The ``n`` channels with the largest loading in ``group``: ``[(channel, loading)]``."""
    row = loadings[group]
    return [(c, float(row[c])) for c in torch.argsort(-row, stable=True)[:n].tolist()]


@dataclass
class ImageFactors:
    """NMF of one image's activations.

    Attributes:
        layer: the layer; image: the fitted ``uint8 [H, W, 3]`` picture the model saw.
        spatial: ``float32 [k, h, w]`` (CPU): how strongly each group is active at each position.
        loadings: ``float32 [k, C]`` (CPU): each group's channel loadings (non-negative).
        error: Frobenius norm of ``V - W H``; relative_error: divided by ``|V|``.
    """

    layer: str
    image: np.ndarray
    spatial: torch.Tensor
    loadings: torch.Tensor
    error: float
    relative_error: float

    @property
    def k(self) -> int:
        return int(self.loadings.shape[0])

    def top_channels(self, group: int, n: int = 8) -> list[tuple[int, float]]:
        """The ``n`` channels with the largest loading in ``group``."""
        return top_channels(self.loadings, group, n)

    def colored_map(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``uint8 [h, w, 3]`` (or resized to ``size``): each position coloured by its groups' mix, brightness by
        the strongest group's activation relative to that group's maximum."""
        sp = self.spatial.double().numpy()
        a = sp / np.maximum(sp.reshape(self.k, -1).max(axis=1), 1e-12)[:, None, None]
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
        total = max(float(self.spatial.sum()), 1e-12)
        return {"layer": self.layer, "k": self.k, "error": self.error, "relative_error": self.relative_error,
                "groups": [{"group": g, "color": palette(self.k)[g].tolist(),
                            "share": float(self.spatial[g].sum()) / total,
                            "top_channels": [{"channel": c, "loading": v} for c, v in self.top_channels(g, n)]}
                           for g in range(self.k)]}


def _image_values(model: ModelLike, image: object, layer: str, pre_activation: bool
                  ) -> tuple[np.ndarray, torch.Tensor]:
    """``(fitted picture, [h*w, C] values of layer)`` for one image."""
    m = as_model(model)
    fitted = m.fit_image(image)
    with torch.no_grad(), evaluating(m.module), Capture(m.module, layer, pre_activation=pre_activation) as cap:
        cap.run(m.fitted_batch([fitted]))
    v = cap[layer]
    if v.ndim != 4:
        raise LayerError(f"NMF needs a layer with [B, C, H, W] output; {layer!r} gives {tuple(v.shape)}")
    return fitted, v[0]


def _factors(layer: str, fitted: np.ndarray, v: torch.Tensor, wmat: torch.Tensor, hmat: torch.Tensor, error: float,
             data: np.ndarray) -> ImageFactors:
    k, (h, w) = hmat.shape[0], v.shape[1:]
    return ImageFactors(layer=layer, image=fitted, spatial=wmat.T.reshape(k, h, w).contiguous(), loadings=hmat,
                        error=error, relative_error=error / max(float(np.linalg.norm(data)), 1e-12))


def factorize_image(model: ModelLike, images: object, layer: str, *, k: int = 4, pre_activation: bool = False,
                    negative: str = "clip", seed: int = 0, max_iter: int = 500) -> ImageFactors:
    """Factorise the activations of ``layer`` on one image into ``k`` non-negative groups.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        images: exactly one picture: a path, a ``uint8`` array or a PIL image (fitted to the model's input size).
        layer: any layer with a ``[B, C, h, w]`` output.
        k: number of groups.
        pre_activation: factorise the input of an activation module instead of the layer's output.
        negative: what to do with negative values (``"clip"``, ``"abs"`` or ``"error"``).
        seed: ``random_state`` of scikit-learn's NMF.
    """
    fitted, v = _image_values(model, images, layer, pre_activation)
    data = _nonnegative(v.permute(1, 2, 0).reshape(-1, v.shape[0]), negative, layer)
    nmf, wmat, hmat = _nmf(data, k, seed, max_iter)
    return _factors(layer, fitted, v, wmat, hmat, float(nmf.reconstruction_err_), data)


@dataclass
class NeuronGroups:
    """NMF of many images' activations: ``k`` groups of channels.

    Attributes:
        layer; loadings: ``float32 [k, C]`` (CPU); error / relative_error: of the sampled matrix;
        positions: how many positions were factorised (a uniform sample of at most ``max_positions``);
        images: images read; pre_activation, negative: how the values were read and made non-negative;
        skipped: the images that could not be read (:class:`~.sources.SkippedImage`).
    """

    layer: str
    loadings: torch.Tensor
    error: float
    relative_error: float
    positions: int
    images: int
    negative: str
    pre_activation: bool = False
    model_nmf: object = None
    skipped: list[SkippedImage] = field(default_factory=list)

    @property
    def k(self) -> int:
        return int(self.loadings.shape[0])

    def top_channels(self, group: int, n: int = 8) -> list[tuple[int, float]]:
        """The ``n`` channels with the largest loading in ``group``."""
        return top_channels(self.loadings, group, n)

    def transform(self, model: ModelLike, image: object) -> ImageFactors:
        """Where each group is active in ``image`` (the groups' loadings stay fixed)."""
        fitted, v = _image_values(model, image, self.layer, self.pre_activation)
        data = _nonnegative(v.permute(1, 2, 0).reshape(-1, v.shape[0]), self.negative, self.layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wmat = torch.from_numpy(self.model_nmf.transform(data).astype(np.float32))  # type: ignore[union-attr]
        err = float(np.linalg.norm(data - wmat.double().numpy() @ self.loadings.double().numpy()))
        return _factors(self.layer, fitted, v, wmat, self.loadings, err, data)

    def to_dict(self, n: int = 8) -> dict:
        return {"layer": self.layer, "k": self.k, "error": self.error, "relative_error": self.relative_error,
                "positions": self.positions, "images": self.images, "pre_activation": self.pre_activation,
                "skipped": skipped_dicts(self.skipped),
                "groups": [{"group": g, "top_channels": [{"channel": c, "loading": v}
                                                         for c, v in self.top_channels(g, n)]}
                           for g in range(self.k)]}


def factorize_dataset(model: ModelLike, source: object, layer: str, *, k: int = 6, pre_activation: bool = False,
                      max_positions: int = 20000, negative: str = "clip", seed: int = 0, batch_size: int | None = None,
                      num_workers: int = 0, progress: bool = False, max_iter: int = 400) -> NeuronGroups:
    """Find ``k`` groups of channels that are active together over many images.

    Memory is bounded: a uniform sample of at most ``max_positions`` positions is kept while streaming (the
    positions of smallest pseudo-random priority, as in the band samples of the statistics pass).

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``; source: anything
            :func:`~cnnscope.dataset.sources.open_source` accepts.
        layer: a layer with ``[B, C, h, w]`` output; k: number of groups.
        pre_activation: factorise the input of an activation module instead of the layer's output.
        batch_size: images per forward pass (``None``: a default for the model's device).
    """
    m = as_model(model)
    kept: torch.Tensor | None = None
    kept_prio: torch.Tensor | None = None
    n_images = 0
    skipped: list[SkippedImage] = []
    with torch.no_grad(), evaluating(m.module), Capture(m.module, layer, pre_activation=pre_activation) as cap:
        for batch in iterate_batches(m, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                     description="nmf"):
            skipped += batch.skipped
            if batch.ids.numel() == 0:
                continue
            cap.run(batch.tensor(m))
            kept, kept_prio = _keep(cap[layer], batch.ids, kept, kept_prio, layer, max_positions, seed)
            n_images += int(batch.ids.numel())
    if kept is None:
        raise CnnscopeError("no image could be read for the NMF"
                            + (f"; first problem: {skipped[0].path}: {skipped[0].reason}" if skipped else ""))
    data = _nonnegative(kept, negative, layer)
    nmf, _, hmat = _nmf(data, k, seed, max_iter)
    return NeuronGroups(layer=layer, loadings=hmat, error=float(nmf.reconstruction_err_),
                        relative_error=float(nmf.reconstruction_err_) / max(float(np.linalg.norm(data)), 1e-12),
                        positions=int(data.shape[0]), images=n_images, negative=negative,
                        pre_activation=pre_activation, model_nmf=nmf, skipped=skipped)


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
