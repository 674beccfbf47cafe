"""ImageNet-1k class names, offline (torchvision ships them inside its weight metadata)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order (``"tench"``, ``"goldfish"``, ...)."""
    from torchvision.models import ResNet18_Weights

    cats = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    if len(cats) != 1000:  # pragma: no cover - would mean a broken torchvision install
        raise RuntimeError(f"torchvision ships {len(cats)} ImageNet categories, expected 1000")
    return tuple(cats)
