"""Tiny-model tests run single-threaded: thread start-up costs more than it saves on 10x14 inputs."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
