"""The explain page's computation (attribution methods + panel figure); filled in once cnnscope.attribution lands."""

from __future__ import annotations

import numpy as np


def explain_panel(model, image: np.ndarray, methods: list[str], target: int | None) -> dict:
    raise NotImplementedError("cnnscope.attribution is not available yet")
