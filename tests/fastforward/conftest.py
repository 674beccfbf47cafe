"""Every test plans into its own empty cache directory; tiny-model tests run single-threaded (thread start-up costs
more than it saves on 10x14 inputs)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def plan_cache(tmp_path, monkeypatch):
    """An empty ``$CNNSCOPE_CACHE`` for this test (the folder plans are written to)."""
    folder = tmp_path / "cnnscope-cache"
    monkeypatch.setenv("CNNSCOPE_CACHE", str(folder))
    return folder


@pytest.fixture
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
