"""Curve tracing in an image by following the strongest response of a curve family, compared with Canny edges
(Cammarata et al., *Curve Detectors*, Distill 2020, Fig. 27: curve extraction with the curve family).

Each position of the layer's grid gets a *strength* (the largest response of the family's members there) and an
*orientation* (the direction of ``sum_k relu(a_k) e^{i theta_k}``, the members' preferred orientations weighted by
their positive responses, so two neighbouring members responding alike give the orientation between them). The maps
are resampled (bicubic) to the image's pixels through the layer's receptive-field centres.

Tracing starts at the strongest local maxima and walks both ways along the curve (perpendicular to the orientation,
which names the convex side): one ``step`` along the tangent, then back onto the ridge (the strongest of a few
points across the curve), until the strength drops below ``stop`` times the seed's, the walk leaves the image or it
reaches a curve already traced. Points near a finished curve seed no other, nor do points with a stronger response
across the curve within ``suppress`` pixels (the side lobes of a ridge).

Points are ``(row, col)`` pixel coordinates (pixel centres at whole numbers), as ``skimage``'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..capture import Capture, evaluating
from ..errors import CnnscopeError, LayerError
from ..images import load_image
from ..models import LoadedModel, ModelLike, as_model
from ..units import parse_channels


def members(channels: str | Sequence[int], n: int) -> list[int]:
    """Channel indices in the order given (a text selection ``\"0,4,8-11\"`` in ascending order), checked against
    ``n`` channels: orientations given alongside are matched by position."""
    if isinstance(channels, str):
        return parse_channels(channels, n)
    chosen = [int(c) for c in channels]
    parse_channels(chosen, n)  # range and duplicate checks
    return chosen


@dataclass
class FamilyMaps:
    """A curve family's responses to one image, resampled to its pixels (CPU ``float64 [H, W]`` tensors).

    Attributes:
        strength: the largest member response at each pixel.
        orientation: the orientation (degrees, the convex side) at each pixel.
        vector: ``[2, H, W]``, ``sum_k relu(a_k) (cos theta_k, sin theta_k)`` (its angle is ``orientation``).
        channels: the members' channel indices.
    """

    strength: torch.Tensor
    orientation: torch.Tensor
    vector: torch.Tensor
    channels: list[int]


@dataclass
class Traces:
    """Curves traced in one image (:func:`trace_curves`).

    Attributes:
        layer: the family's layer.
        channels: the family's channels; ``orientations`` their preferred orientations (degrees).
        polylines: one ``float64 [n, 2]`` array of ``(row, col)`` points per curve, strongest seed first.
        strengths: each curve's seed strength.
        maps: the :class:`FamilyMaps` the curves were traced on.
        size: ``(H, W)`` of the image.
    """

    layer: str
    channels: list[int]
    orientations: list[float]
    polylines: list[np.ndarray]
    strengths: list[float]
    maps: FamilyMaps
    size: tuple[int, int]

    def points(self, spacing: float = 0.5) -> np.ndarray:
        """Points along every curve, at most ``spacing`` pixels apart, ``[N, 2]`` ``(row, col)``."""
        return densify(self.polylines, spacing)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channels": self.channels, "orientations": self.orientations,
                "size": list(self.size), "strengths": self.strengths,
                "polylines": [p.round(3).tolist() for p in self.polylines]}


def densify(polylines: Sequence[np.ndarray], spacing: float = 0.5) -> np.ndarray:
    """Points along polylines at most ``spacing`` apart, ``[N, 2]`` (``[0, 2]`` for none)."""
    out = [np.zeros((0, 2))]
    for line in polylines:
        line = np.asarray(line, np.float64).reshape(-1, 2)
        out.append(line[:1])
        for a, b in zip(line[:-1], line[1:]):
            k = max(1, math.ceil(float(np.hypot(*(b - a))) / spacing))
            out.append(a + (b - a) * (np.arange(1, k + 1) / k)[:, None])
    return np.concatenate(out)


def _picture(m: LoadedModel, image: object) -> torch.Tensor:
    """A model-space ``[1, C, H, W]`` batch; pictures keep their own size (curve families are convolutional)."""
    if isinstance(image, torch.Tensor):
        x = m.batch(image)
    else:
        pic = load_image(image)  # type: ignore[arg-type]
        x = m.batch(pic, size=pic.shape[:2])
    if x.shape[0] != 1:
        raise CnnscopeError(f"trace_curves() traces one image at a time, got a batch of {x.shape[0]}")
    return x


def _to_pixels(m: LoadedModel, layer: str, act: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[K, h, w]`` layer maps -> ``[K, H, W]`` at the image's pixels, sampled at the receptive-field centres."""
    from ..capture.receptive_field import receptive_fields
    from .responses import rf_centers

    h, w = act.shape[-2:]
    if (h, w) == tuple(size):  # a stride-1, same-padded layer: its grid is the image's pixels
        return act
    cy, cx = rf_centers(receptive_fields(m.module, layer, size)[layer])
    # fractional grid index of every pixel centre, from the linear map index -> centre (pixel-edge coordinates)
    sy = (cy[-1] - cy[0]) / max(h - 1, 1)
    sx = (cx[-1] - cx[0]) / max(w - 1, 1)
    iy = (np.arange(size[0]) + 0.5 - cy[0]) / (sy if sy else 1.0)
    ix = (np.arange(size[1]) + 0.5 - cx[0]) / (sx if sx else 1.0)
    gy = torch.as_tensor(2 * iy / max(h - 1, 1) - 1, dtype=act.dtype)
    gx = torch.as_tensor(2 * ix / max(w - 1, 1) - 1, dtype=act.dtype)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    return torch.nn.functional.grid_sample(act[None], grid, mode="bicubic", padding_mode="border",
                                           align_corners=True)[0]


def family_maps(model: ModelLike, images: object, layer: str, *, channels: str | Sequence[int],
                orientations: Sequence[float], pre_activation: bool = False,
                mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | torch.Tensor | None = None,
                normalize: str | None = "image") -> FamilyMaps:
    """Strength and orientation of a curve family's response at every pixel of one image.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        images: one picture (path, PIL image, ``uint8 [H, W, 3]``; read at its own size) or a model-space tensor
            (the ``images`` of docs/CONVENTIONS.md; exactly one).
        layer: the family's layer.
        channels: the members (channel indices of ``layer``).
        orientations: each member's preferred orientation in degrees (the convex side), same order.
        pre_activation: read the input of an activation module.
        mean, std: per-channel dataset statistics of the layer (one value per channel); members are then compared
            in standard deviations above their dataset mean.
        normalize: without ``mean``/``std``: ``"image"`` (default) puts each member's values in standard deviations
            above its mean over this image's positions (members of different scales compare; a uniform response,
            such as a bias, drops out); ``None`` compares the raw values.
    """
    m = as_model(model)
    x = _picture(m, images)
    with evaluating(m.module), torch.no_grad(), Capture(m.module, layer, pre_activation=pre_activation) as cap:
        cap.run(x)
        act = cap[layer]
    if act.ndim != 4:
        raise LayerError(f"layer {layer!r} gives {tuple(act.shape)} tensors; tracing needs [B, C, H, W] feature maps")
    chosen = members(channels, act.shape[1])
    if len(chosen) != len(orientations) or len(chosen) < 2:
        raise CnnscopeError(f"a curve family needs one orientation per channel and at least 2 members, got "
                            f"{len(chosen)} channels and {len(orientations)} orientations")
    a = act[0, chosen].double().cpu()
    if mean is not None or std is not None:
        from .responses import zscore

        a, _, _ = zscore(a, chosen, mean, std)
        a = torch.nan_to_num(a, nan=0.0)  # a channel constant over the dataset: at its mean everywhere
    elif normalize == "image":
        mu, sd = a.mean(dim=(1, 2), keepdim=True), a.std(dim=(1, 2), keepdim=True)
        a = torch.where(sd > 0, (a - mu) / sd.clamp(min=1e-300), torch.zeros_like(a))
    elif normalize is not None:
        raise CnnscopeError(f"normalize is 'image' or None, got {normalize!r}")
    a = _to_pixels(m, layer, a, tuple(x.shape[-2:]))
    theta = torch.deg2rad(torch.as_tensor(list(orientations), dtype=torch.float64))[:, None, None]
    pos = a.clamp(min=0)
    vec = torch.stack([(pos * torch.cos(theta)).sum(0), (pos * torch.sin(theta)).sum(0)])
    orient = torch.rad2deg(torch.atan2(vec[1], vec[0])) % 360.0
    return FamilyMaps(strength=a.amax(0), orientation=orient, vector=vec, channels=chosen)


def _sample(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear values of ``img`` at ``(row, col)`` points ``[n, 2]`` (points outside: ``-inf``)."""
    h, w = img.shape[-2:]
    r, c = pts[:, 0], pts[:, 1]
    inside = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
    r0 = np.clip(np.floor(r).astype(int), 0, max(h - 2, 0))
    c0 = np.clip(np.floor(c).astype(int), 0, max(w - 2, 0))
    fr, fc = np.clip(r - r0, 0, 1), np.clip(c - c0, 0, 1)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    v = (img[..., r0, c0] * (1 - fr) * (1 - fc) + img[..., r0, c1] * (1 - fr) * fc
         + img[..., r1, c0] * fr * (1 - fc) + img[..., r1, c1] * fr * fc)
    return np.where(inside, v, -np.inf)


def _tangent(vec: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Unit tangent ``(drow, dcol)`` at ``p``: perpendicular to the orientation (x right, y up)."""
    vx, vy = (_sample(vec, p[None])[:, 0])
    norm = math.hypot(vx, vy)
    if not math.isfinite(norm) or norm == 0:
        return np.zeros(2)
    # orientation (vx, vy) in (x, y up) is (-vy, vx) in (row, col); the tangent is perpendicular to it
    return np.array([-vx, -vy]) / norm


def trace_curves(model: ModelLike, images: object, layer: str, *, channels: str | Sequence[int],
                 orientations: Sequence[float], pre_activation: bool = False,
                 mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | torch.Tensor | None = None,
                 normalize: str | None = "image", threshold: float = 0.5, stop: float = 0.5, step: float = 1.0,
                 ridge: float = 1.5,
                 suppress: float = 3.0, max_turn: float = 30.0, min_length: float = 5.0,
                 max_curves: int = 100, max_steps: int = 2000) -> Traces:
    """Trace the curves of one image by following the strongest response of a curve family.

    Args:
        model: a ``LoadedModel`` or an ``nn.Module``.
        images, layer, channels, orientations, pre_activation, mean, std, normalize: see :func:`family_maps` (a
            :class:`~cnnscope.stimuli.Family` gives ``layer``, ``channels`` and ``stats.preferred``).
        threshold: seeds are local maxima of the strength above ``threshold`` times its largest value.
        stop: a walk ends where the strength falls below ``stop`` times its seed's.
        step: pixels per step along the curve.
        ridge: after each step the walk moves to the strongest point within ``ridge`` pixels across the curve.
        suppress: points within this many pixels of a traced curve seed no other and end other walks.
        max_turn: a walk ends where the orientation turns by more than this many degrees in one step.
        min_length: curves shorter than this (pixels) are dropped.
        max_curves: at most this many curves.
        max_steps: at most this many steps per direction.

    Returns:
        :class:`Traces`.
    """
    if not 0 <= threshold <= 1 or not 0 <= stop <= 1 or not step > 0 or ridge < 0 or suppress < 0:
        raise CnnscopeError(f"trace_curves() needs threshold and stop in [0, 1], step > 0, ridge >= 0 and "
                            f"suppress >= 0; got {threshold}, {stop}, {step}, {ridge}, {suppress}")
    from scipy.ndimage import maximum_filter

    fm = family_maps(model, images, layer, channels=channels, orientations=orientations,
                     pre_activation=pre_activation, mean=mean, std=std, normalize=normalize)
    s, vec = fm.strength.numpy(), fm.vector.numpy()
    h, w = s.shape
    top = float(np.max(s)) if np.isfinite(s).any() else 0.0
    visited = np.zeros((h, w), bool)
    rr, cc = np.mgrid[0:h, 0:w]
    seeds = np.argwhere((s == maximum_filter(s, size=3, mode="nearest")) & (s >= threshold * top) & (s > 0))
    seeds = seeds[np.argsort(-s[seeds[:, 0], seeds[:, 1]], kind="stable")]
    cos_turn = math.cos(math.radians(max_turn))
    offsets = np.linspace(-ridge, ridge, 2 * math.ceil(ridge / 0.5) + 1) if ridge > 0 else np.zeros(1)

    def mark(points: np.ndarray) -> None:
        for p in points:
            r0, r1 = max(0, int(p[0] - suppress)), min(h, int(p[0] + suppress) + 2)
            c0, c1 = max(0, int(p[1] - suppress)), min(w, int(p[1] + suppress) + 2)
            visited[r0:r1, c0:c1] |= (rr[r0:r1, c0:c1] - p[0]) ** 2 + (cc[r0:r1, c0:c1] - p[1]) ** 2 <= suppress ** 2

    def ridge_top(seed: np.ndarray) -> bool:
        """Whether no point across the curve within ``suppress`` pixels responds more (a side ridge is no seed)."""
        t = _tangent(vec, seed.astype(np.float64))
        offs = np.linspace(-suppress, suppress, 4 * math.ceil(suppress) + 1)
        across = seed[None] + offs[:, None] * np.array([-t[1], t[0]])[None]
        return bool(np.max(_sample(s, across)) <= s[seed[0], seed[1]] * (1 + 1e-6))

    def walk(seed: np.ndarray, sign: float, floor: float) -> list[np.ndarray]:
        p, t = seed.astype(np.float64), _tangent(vec, seed.astype(np.float64)) * sign
        out: list[np.ndarray] = []
        for _ in range(max_steps):
            if not t.any():
                break
            q = p + step * t
            across = q[None] + offsets[:, None] * np.array([-t[1], t[0]])[None]
            vals = _sample(s, across)
            q = across[int(np.argmax(vals))]
            value = float(np.max(vals))
            if not math.isfinite(value) or value < floor:
                break
            i, j = int(round(q[0])), int(round(q[1]))
            if visited[i, j] and np.hypot(*(q - seed)) > suppress + step:
                break
            if len(out) > 2 * suppress / step and np.hypot(*(q - seed)) < suppress:  # closed the loop
                break
            t_new = _tangent(vec, q)
            t_new = t_new if t_new @ t >= 0 else -t_new
            if t_new @ t < cos_turn:  # the orientation swings round: the curve ends (or forks) here
                break
            t = t_new
            out.append(q)
            p = q
        return out

    polylines, strengths = [], []
    for seed in seeds:
        if len(polylines) >= max_curves:
            break
        if visited[seed[0], seed[1]] or not ridge_top(seed):
            continue
        floor = stop * float(s[seed[0], seed[1]])
        ahead = walk(seed, 1.0, floor)
        mark(np.asarray(ahead[:-max(1, int(suppress / step))]).reshape(-1, 2))  # the loop's end meets the seed
        back = walk(seed, -1.0, floor)
        line = np.asarray(back[::-1] + [seed.astype(np.float64)] + ahead)
        mark(line)
        if np.hypot(*np.diff(line, axis=0).T).sum() >= min_length:
            polylines.append(line)
            strengths.append(float(s[seed[0], seed[1]]))
    return Traces(layer=layer, channels=fm.channels, orientations=[float(o) for o in orientations],
                  polylines=polylines, strengths=strengths, maps=fm, size=(h, w))


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact distance from each point of ``a`` to the nearest point of ``b`` (``inf`` when ``b`` is empty)."""
    if not len(b):
        return np.full(len(a), np.inf)
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a)[0] if len(a) else np.zeros(0)


def compare_with_canny(traces: Traces, image: object, *, sigma: float = 2.0, distance: float = 3.0,
                       canny: np.ndarray | None = None) -> dict:
    """How traced curves and Canny edges (``skimage.feature.canny`` on the image's luma) agree.

    Args:
        traces: from :func:`trace_curves` on ``image``.
        image: the same picture (path, PIL image or ``uint8 [H, W, 3]``).
        sigma: Canny's Gaussian scale, pixels.
        distance: a point agrees when it lies within this many pixels of the other set.
        canny: an edge map ``bool [H, W]`` to use instead of computing one.

    Returns:
        ``traced_near_edge`` (fraction of traced points, every half pixel along the curves, within ``distance``
        of a Canny edge pixel's centre), ``edge_near_trace`` (fraction of edge pixels within ``distance`` of a
        traced point); distances are exact (nearest neighbours), the counts, and
        ``edges`` (the ``bool [H, W]`` edge map, not JSON: drop it before saving).
    """
    if canny is None:
        from skimage.feature import canny as skcanny

        pic = load_image(image)  # type: ignore[arg-type]
        if pic.shape[:2] != tuple(traces.size):
            raise CnnscopeError(f"the image is {pic.shape[1]}x{pic.shape[0]} but the curves were traced on a "
                                f"{traces.size[1]}x{traces.size[0]} image; pass the same picture")
        gray = pic.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        canny = skcanny(gray, sigma=sigma)
    edges = np.asarray(canny, bool)
    pts = traces.points()
    edge_pts = np.argwhere(edges).astype(np.float64)  # pixel centres (row, col)
    near = _nearest(pts, edge_pts) <= distance
    found = _nearest(edge_pts, pts) <= distance
    return {"traced_near_edge": float(near.mean()) if len(near) else 0.0,
            "edge_near_trace": float(found.mean()) if len(found) else 0.0, "n_traced_points": int(len(pts)),
            "n_edge_pixels": int(edges.sum()), "distance": float(distance), "sigma": float(sigma), "edges": edges}
