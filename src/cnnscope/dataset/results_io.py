"""``.npz`` contents of :class:`~.results.DatasetStats` (arrays + JSON metadata): what ``save``/``load`` and the
shards of a pass in a work folder read and write."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import fields

import numpy as np
import torch

from ..capture.receptive_field import ReceptiveField
from ..errors import CnnscopeError
from .classes import ClassStats
from .histograms import LogBins
from .results import FORMAT, DatasetStats, Examples, LayerStats, Moments
from .sources import SkippedImage


def stats_to_bytes(stats: DatasetStats) -> bytes:
    """The contents of the ``.npz`` file ``DatasetStats.save`` writes."""
    arrays: dict[str, np.ndarray] = {}
    layer_meta = {}
    for i, (name, ls) in enumerate(stats.layers.items()):
        p = f"l{i}_"
        for part in ("top", "bottom", "bands"):
            ex = getattr(ls, part)
            for f in fields(ex):
                value = getattr(ex, f.name)
                if value is not None:
                    arrays[p + part + "_" + f.name] = value.numpy()
        for part in ("hist", "hist_output", "positive", "minimum", "maximum"):
            arrays[p + part] = getattr(ls, part).numpy()
        for part in ("moments", "moments_output"):
            m = getattr(ls, part)
            arrays[p + part + "_mean"], arrays[p + part + "_m2"] = m.mean.numpy(), m.m2.numpy()
        if ls.rf is not None:
            arrays[p + "rf_boxes"] = ls.rf.boxes
        bc = ls.by_class
        if bc is not None:
            for part in ("images", "max_sum", "mean_sum", "maximum") + (("hist",) if bc.hist is not None else ()):
                arrays[p + "class_" + part] = getattr(bc, part).numpy()
        layer_meta[name] = {"prefix": p, "pre_activation": ls.pre_activation, "grid": list(ls.grid),
                            "count": ls.moments.count, "count_output": ls.moments_output.count,
                            "rf": None if ls.rf is None else {"method": ls.rf.method,
                                                              "input_size": list(ls.rf.input_size)},
                            "classes": None if ls.by_class is None else ls.by_class.classes}
    meta = {"format": FORMAT, "model": stats.model, "input_size": list(stats.input_size),
            "resize_mode": stats.resize_mode, "source": stats.source, "images": stats.images,
            "id_ranges": [list(r) for r in stats.id_ranges], "names": {str(k): v for k, v in stats.names.items()},
            "skipped": [list(s) for s in stats.skipped], "n_skipped": stats.n_skipped, "k": stats.k,
            "bottom_k": stats.bottom_k, "band_samples": stats.band_samples, "seed": stats.seed,
            "bins": stats.bins.to_dict(), "layers": layer_meta,
            "labels": {str(k): v for k, v in stats.labels.items()}, "fingerprint": stats.fingerprint}
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def stats_from_bytes(contents: bytes, name: str = "statistics", sha256: str | None = None) -> DatasetStats:
    """Read the contents written by :func:`stats_to_bytes` (``name`` names them in errors); with ``sha256`` (hex
    digest) the contents are first checked against it.

    Raises:
        CnnscopeError: a checksum that does not match (a truncated or altered file), or not a statistics file.
    """
    if sha256 is not None and hashlib.sha256(contents).hexdigest() != sha256:
        raise CnnscopeError(f"{name}: checksum mismatch (the file is truncated or corrupt)")
    try:
        data = np.load(io.BytesIO(contents), allow_pickle=False)
        meta = json.loads(str(data["meta"]))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CnnscopeError(f"{name}: not a cnnscope statistics file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CnnscopeError(f"{name}: unsupported format {meta.get('format')!r} (expected {FORMAT})")

    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(data[key])

    layers = {}
    for name, lm in meta["layers"].items():
        p = lm["prefix"]
        grid = tuple(lm["grid"])

        def ex(part: str, p: str = p) -> Examples:
            pr = p + part + "_priority"
            return Examples(*(t(p + part + "_" + f) for f in ("values", "image_ids", "ys", "xs", "boxes")),
                            priority=t(pr) if pr in data else None)

        rf = None
        if lm["rf"] is not None:
            rf = ReceptiveField(layer=name, input_size=tuple(lm["rf"]["input_size"]), output_size=grid,
                                boxes=data[p + "rf_boxes"], method=lm["rf"]["method"])
        layers[name] = LayerStats(
            layer=name, pre_activation=lm["pre_activation"], grid=grid, top=ex("top"), bottom=ex("bottom"),
            hist=t(p + "hist"), hist_output=t(p + "hist_output"),
            moments=Moments(lm["count"], t(p + "moments_mean"), t(p + "moments_m2")),
            moments_output=Moments(lm["count_output"], t(p + "moments_output_mean"), t(p + "moments_output_m2")),
            positive=t(p + "positive"), minimum=t(p + "minimum"), maximum=t(p + "maximum"),
            bands=ex("bands"), rf=rf, by_class=_load_classes(lm.get("classes"), p, data))
    return DatasetStats(model=meta["model"], input_size=tuple(meta["input_size"]), resize_mode=meta["resize_mode"],
               source=meta["source"], images=meta["images"], id_ranges=[tuple(r) for r in meta["id_ranges"]],
               names={int(k): v for k, v in meta["names"].items()},
               skipped=[SkippedImage(*s) for s in meta["skipped"]], n_skipped=meta["n_skipped"], k=meta["k"],
               bottom_k=meta["bottom_k"],
               band_samples=meta["band_samples"], seed=meta["seed"], bins=LogBins(**meta["bins"]), layers=layers,
               labels={int(k): v for k, v in meta.get("labels", {}).items()}, fingerprint=meta.get("fingerprint"))


def _load_classes(classes: list[str] | None, prefix: str, data) -> ClassStats | None:
    if classes is None:
        return None
    p = prefix + "class_"
    hist = torch.from_numpy(data[p + "hist"]) if p + "hist" in data else None
    return ClassStats(list(classes), *(torch.from_numpy(data[p + part]) for part in
                                       ("images", "max_sum", "mean_sum", "maximum")), hist=hist)
