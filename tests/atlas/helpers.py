"""A test-only artifact kind and a tiny atlas builder shared by the atlas and web tests.

``unit_mean`` is a real, checkable producer: for each unit it stores the unit's spatial-mean activation on
every image (numbers) and its activation map on the first image (PNG). Tests compare those numbers with a
direct forward pass, and use the kind to exercise the store and the resumable build without waiting for the
slower producers. Set ``CNNSCOPE_TEST_KIND_SLEEP`` (seconds per chunk) to slow a build down for kill tests.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cnnscope.atlas.encode import image_artifact, numbers_artifact
from cnnscope.atlas.kinds import ArtifactKind, BuildContext, register_kind
from cnnscope.capture import Capture, evaluating

ROOT = Path(__file__).resolve().parents[2]
KIND = "unit_mean"


@register_kind
class UnitMean(ArtifactKind):
    name = KIND
    title = "Mean activation (test kind)"
    artifacts = {"map": "image/png", "means": "application/json"}
    order = 5
    needs_images = True
    optional = True
    thumbnail = "map"

    def produce(self, ctx: BuildContext, units: list[int]) -> dict:
        delay = float(os.environ.get("CNNSCOPE_TEST_KIND_SLEEP", "0"))
        if delay:
            time.sleep(delay)
        m = ctx.model
        x = m.batch([ctx.source.load(i) for i in range(len(ctx.source))])
        with torch.no_grad(), evaluating(m.module), Capture(m.module, ctx.layer.name) as cap:
            cap.run(x)
        act = cap[ctx.layer.name].float()
        out = {}
        for u in units:
            a = act[:, u]
            means = a.flatten(1).mean(1) if a.ndim == 3 else a
            amap = a[0] if a.ndim == 3 else a[:1].view(1, 1)
            lo, hi = float(amap.min()), float(amap.max())
            img = ((amap - lo) / (hi - lo + 1e-12) * 255).round().to(torch.uint8).cpu().numpy()
            img = np.repeat(np.repeat(img, 4, 0), 4, 1)
            out[u] = [image_artifact(KIND, "map", np.stack([img] * 3, -1), {"min": lo, "max": hi},
                                     seed=ctx.options.seed),
                      numbers_artifact(KIND, "means", {"per_image": means.tolist(), "mean": float(means.mean())})]
        return out


def tiny_model():
    sys.path.insert(0, str(ROOT))
    from cnnscope import wrap
    from tests.models import InplaceReLUNet

    return wrap(InplaceReLUNet(), input_size=32, name="tiny_inplace")


def tiny_images(n: int = 4) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(f"img{k}", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for k in range(n)]


TINY_LAYERS = ["features.2", "features.5"]


def build_tiny(out, channels=None, **kw):
    """Build an atlas of the tiny net with the test kind (used by the kill/resume subprocess too)."""
    from cnnscope.atlas import BuildOptions, build_atlas

    opts = BuildOptions(units_per_chunk=kw.pop("units_per_chunk", 2), seed=0)
    return build_atlas(tiny_model(), out, TINY_LAYERS, channels=channels, source=tiny_images(), kinds=[KIND],
                       options=opts, **kw)


if __name__ == "__main__":  # python tests/atlas/helpers.py OUT [inline_max]
    build_tiny(sys.argv[1], inline_max=int(sys.argv[2]) if len(sys.argv) > 2 else 256 * 1024)
