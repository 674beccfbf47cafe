"""Every test plans into its own empty cache directory (``single_thread`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def plan_cache(tmp_path, monkeypatch):
    """An empty ``$CNNSCOPE_CACHE`` for this test (the folder plans are written to)."""
    folder = tmp_path / "cnnscope-cache"
    monkeypatch.setenv("CNNSCOPE_CACHE", str(folder))
    return folder
