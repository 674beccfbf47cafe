"""Fixtures of the Zeiler & Fergus tests: one small digits training run shared by the module tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def one_thread():
    """Tiny CNNs gain nothing from threads, and on shared cores extra threads only wait; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, one_thread):
    """A 1-epoch SmallConvNet on scikit-learn's digits with checkpoints at epochs 0 and 1."""
    from cnnscope.zf.train import train

    out = tmp_path_factory.mktemp("digits_run")
    return train("digits", epochs=1, checkpoint_epochs=[0, 1], out=out, widths=(8, 16, 32), batch_size=32,
                 lr=3e-3, seed=0)


@pytest.fixture(scope="session")
def digits_test_images(digits_run):
    """``name -> uint8 image`` of 150 held-out digits."""
    from cnnscope.zf.train import digits_dataset

    ds = digits_dataset()
    return {f"digit{i}": ds.images[i] for i in digits_run.test_indices[:150]}


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder: a command called without --out (an error case) creates its default output
    folder there, not in the checkout."""
    monkeypatch.chdir(tmp_path)
