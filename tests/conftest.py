"""Shared fixtures: the embedded pretrained model (loaded once) and the sample photos."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test writes cnnscope's cache (occlusion plans, ...) under a temporary folder, never the user's."""
    old = os.environ.get("CNNSCOPE_CACHE")
    os.environ["CNNSCOPE_CACHE"] = str(tmp_path_factory.mktemp("cnnscope-cache"))
    yield
    if old is None:
        os.environ.pop("CNNSCOPE_CACHE", None)
    else:
        os.environ["CNNSCOPE_CACHE"] = old


@pytest.fixture(scope="session")
def lite0():
    """The embedded ImageNet-pretrained EfficientNet-Lite0 (``LoadedModel``), on the CPU, in eval mode."""
    from cnnscope import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def samples():
    """skimage's sample photos, ``name -> uint8 [H,W,3]``."""
    from cnnscope import sample_images

    return sample_images()


@pytest.fixture
def single_thread():
    """One torch thread for this test (on tiny inputs, thread start-up costs more than it saves)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
