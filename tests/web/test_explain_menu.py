"""The explain page's method menu reads the attribution registry: a method registered by one decorated class is
offered, and runs, without other edits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.atlas import helpers


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_a_new_attribution_method_is_in_the_menu(tiny_atlas):
    from fastapi.testclient import TestClient

    from cnnscope.attribution import METHODS, GradientMethod, list_methods, register_method
    from cnnscope.web import create_app

    photo = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    with METHODS.scoped():

        @register_method
        class DoubledGradient(GradientMethod):
            """Twice the gradient (a test method)."""

            name = "doubled_gradient"
            title = "Doubled gradient"
            reference = "test"

            def combine(self, x, grad):
                return 2 * grad

        with TestClient(create_app(tiny_atlas, model=helpers.tiny_model())) as c:
            html = c.get("/explain").text
            assert 'name="methods" value="doubled_gradient"' in html
            assert c.get("/api/explain").json()["methods"] == list_methods()
            r = c.post("/api/explain", files={"image": ("a.png", _png(photo), "image/png")},
                       data={"methods": "doubled_gradient,saliency"})
            assert r.status_code == 200, r.text
            stats = r.json()["attribution"]
            assert stats["doubled_gradient"]["sum"] == pytest.approx(2 * stats["saliency"]["sum"], rel=1e-5)
            assert stats["doubled_gradient"]["max"] == pytest.approx(2 * stats["saliency"]["max"], rel=1e-5)
    with TestClient(create_app(tiny_atlas, model=helpers.tiny_model())) as c:
        assert "doubled_gradient" not in c.get("/explain").text  # gone with the scope
