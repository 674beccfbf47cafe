"""Feature-space view: the penultimate features of a set of images in 2-D, with the classifier's regions.

The small-CNN tutorial's last view. The features are the input of the final linear layer (``head``: logits
``= W f + b``). They are projected to 2-D by PCA (scikit-learn), fitted on these images. Every point ``z`` of the
2-D plane is mapped back to feature space through the PCA inverse (``f = mean + z C``, ``C`` the two components)
and classified by the head, so the picture shows the classifier's decision regions on the plane through the
features' mean spanned by their two main directions. That plane is exact for the images only as far as PCA
captures their features: :attr:`FeatureSpace.agreement` says for how many images the region at their projected
point is the model's own prediction (1.0 whenever the features lie in a 2-D plane).

Example:
    >>> fs = feature_space(model, images, resolution=101)
    >>> fs.coords, fs.classes, fs.explained    # [N, 2] points, [R, R] regions, variance captured per axis
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..batching import chunks, resolve_batch_size, track
from ..capture import Capture, first_tensor, list_layers, resolve_layers
from ..errors import CnnscopeError, LayerError
from ..models import ModelLike, as_model
from .common import image_set


@dataclass
class FeatureSpace:
    """Images in the 2-D PCA plane of their penultimate features, and the head's class over that plane (a sweep
    over a set: every tensor is on the CPU).

    Attributes:
        names: one per image.
        layer: the layer whose (flattened) output is the head's input.
        head: the final linear layer.
        features: ``[N, D]`` penultimate features.
        coords: ``[N, 2]`` their PCA coordinates.
        predictions: ``[N]`` the model's predicted class of each image (from its outputs).
        point_classes: ``[N]`` the region's class at each projected point (through the PCA inverse).
        mean, components: ``[D]`` and ``[2, D]``: the PCA (``f = mean + z @ components``).
        explained: ``[2]`` fraction of the features' variance along each axis.
        xs, ys: ``[R]`` grid coordinates of the two axes.
        classes: ``[R, R]`` the head's class at each grid point (row = second axis).
        confidence: ``[R, R]`` its softmax probability there.
        labels: class index -> name of every class on the grid or predicted.
    """

    names: list[str]
    layer: str
    head: str
    features: torch.Tensor
    coords: torch.Tensor
    predictions: torch.Tensor
    point_classes: torch.Tensor
    mean: torch.Tensor
    components: torch.Tensor
    explained: torch.Tensor
    xs: torch.Tensor
    ys: torch.Tensor
    classes: torch.Tensor
    confidence: torch.Tensor
    labels: dict[int, str]

    @property
    def agreement(self) -> float:
        """Fraction of the images whose projected point lies in the region of their own predicted class."""
        return float((self.point_classes == self.predictions).float().mean())

    def to_dict(self) -> dict:
        return {"names": self.names, "layer": self.layer, "head": self.head, "coords": self.coords.tolist(),
                "predictions": self.predictions.tolist(), "point_classes": self.point_classes.tolist(),
                "agreement": self.agreement, "explained": self.explained.tolist(), "xs": self.xs.tolist(),
                "ys": self.ys.tolist(), "classes": self.classes.tolist(), "confidence": self.confidence.tolist(),
                "labels": {str(k): v for k, v in self.labels.items()}}


def _find_head(module: nn.Module, infos, head: str | None) -> tuple[str, nn.Linear]:
    """The final linear layer: ``head`` when given, else the last ``nn.Linear`` that ran."""
    if head is not None:
        name, mod = next(iter(resolve_layers(module, [head]).items()))
        if not isinstance(mod, nn.Linear):
            raise LayerError(f"head {head!r} is a {type(mod).__name__}, not an nn.Linear (the final linear layer)")
        return name, mod
    mods = dict(module.named_modules())
    ran = [i.name for i in infos if i.output_shape is not None and isinstance(mods.get(i.name), nn.Linear)]
    if not ran:
        raise LayerError("the model has no nn.Linear layer to read the classifier from; name it with head=")
    return ran[-1], mods[ran[-1]]


def _find_layer(infos, head: str, width: int, layer: str | None) -> str:
    """The feature layer: ``layer`` when given, else the last module before the head with ``width`` outputs."""
    if layer is not None:
        return layer
    names = [i.name for i in infos]
    stop = names.index(head) if head in names else len(names)
    for info in reversed(infos[:stop]):
        if info.output_shape is not None and info.name and not info.name.startswith(head + ".") \
                and int(np.prod(info.output_shape)) == width:
            return info.name
    raise LayerError(f"no layer before the head {head!r} outputs its {width} inputs; name the penultimate layer "
                     "with layer=")


def _pca(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="full").fit(features)
    return pca.transform(features), pca.mean_, pca.components_, np.nan_to_num(pca.explained_variance_ratio_)


def feature_space(model: ModelLike, images: object, *, layer: str | None = None, head: str | None = None,
                  resolution: int = 101, margin: float = 0.15, batch_size: int | None = None,
                  progress: bool = False) -> FeatureSpace:
    """Project the images' penultimate features to 2-D (PCA) and classify the plane with the final linear layer.

    Args:
        model: a classifier ending in a linear layer (not modified).
        images: three or more images (anything :meth:`~cnnscope.models.LoadedModel.batch` takes, or
            ``name -> image``).
        layer: the layer whose flattened output is the head's input (default: the last layer before the head with
            as many outputs as the head has inputs).
        head: the final ``nn.Linear`` (default: the last one that runs).
        resolution: grid points per axis.
        margin: the grid extends the points' range by this fraction on every side.
        batch_size: images per forward (default by device).
        progress: show a progress bar.

    Raises:
        CnnscopeError: fewer than three images, or a resolution below 2.
        LayerError: no linear head, no matching feature layer, or features that do not give the model's outputs
            through the head (something runs between them: name them with ``layer=``/``head=``).
    """
    m = as_model(model)
    names, items = image_set(images)
    if len(items) < 3:
        raise CnnscopeError(f"a feature-space view needs at least 3 images, got {len(items)}")
    if resolution < 2:
        raise CnnscopeError(f"resolution must be at least 2, got {resolution}")
    x = m.batch(items)
    infos = list_layers(m.module, tuple(x.shape[-2:]), in_channels=x.shape[1])
    head_name, lin = _find_head(m.module, infos, head)
    layer_name = _find_layer(infos, head_name, lin.in_features, layer)
    feats, logits = [], []
    bs = resolve_batch_size(batch_size, m.device)
    with torch.no_grad(), Capture(m.module, [layer_name], stop_early=False, layout="raw") as cap:
        for sl in track(chunks(len(x), bs), progress, "features", total=-(-len(x) // bs)):
            out = cap.run(x[sl])
            feats.append(cap.activations[layer_name].flatten(1))
            logits.append(first_tensor(out))
    f = torch.cat(feats)
    z = torch.cat(logits).float()
    y = lin(f.to(lin.weight.dtype)).float() if f.shape[1] == lin.in_features else None
    if y is None or y.shape != z.shape or not torch.allclose(y, z, rtol=1e-4, atol=1e-4 * float(z.abs().max()) + 1e-6):
        raise LayerError(f"the output of {layer_name!r} through {head_name!r} is not the model's output; name the "
                         "penultimate layer (layer=) and the final linear layer (head=)")
    fn = f.detach().double().cpu().numpy()
    coords, mean, comps, explained = _pca(fn)
    w = lin.weight.detach().double().cpu().numpy()
    b = lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0])
    origin, axes = mean @ w.T + b, comps @ w.T  # head logits at mean + z @ comps = origin + z @ axes
    lo, hi = coords.min(0), coords.max(0)
    pad = margin * np.maximum(hi - lo, 1e-12)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    grid = torch.from_numpy(origin + np.stack([gx.ravel(), gy.ravel()], 1) @ axes).softmax(1)
    conf, cls = grid.max(1)
    point_classes = torch.from_numpy(origin + coords @ axes).argmax(1)
    predictions = z.argmax(1).cpu()
    present = sorted(set(cls.tolist()) | set(predictions.tolist()))
    return FeatureSpace(names=list(names), layer=layer_name, head=head_name, features=f.float().cpu(),
                        coords=torch.from_numpy(coords).float(), predictions=predictions, point_classes=point_classes,
                        mean=torch.from_numpy(mean).float(), components=torch.from_numpy(comps).float(),
                        explained=torch.from_numpy(explained).float(), xs=torch.from_numpy(xs).float(),
                        ys=torch.from_numpy(ys).float(), classes=cls.view(resolution, resolution),
                        confidence=conf.float().view(resolution, resolution),
                        labels={int(c): m.label(int(c)) for c in present})
