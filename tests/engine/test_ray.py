"""The Ray engine on a local Ray (2 CPUs, no dashboard): same results as the in-process engine, also when a worker
process is killed while it holds a piece."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnscope import wrap
from cnnscope.engine import LocalEngine, get_engine
from cnnscope.errors import CnnscopeError, LayerError
from tests.models import ReLU6Net

NO_RAY = "the Ray engine needs the extra: pip install 'cnnscope[ray]'"


@pytest.fixture(scope="module")
def engine():
    """Two one-thread actors on a local Ray started for this module."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    eng = get_engine("ray", workers=2)
    yield eng
    eng.close()
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    return wrap(ReLU6Net(seed=3), input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def layer_sums(model, seed: int) -> torch.Tensor:
    """A piece: the conv1 output of one seeded random batch, summed per channel (module level: picklable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        return model.module.conv1(x).sum(dim=(0, 2, 3))


def slow_once(model, item: tuple[int, str]):
    """A piece that, the first time it runs item 0, writes its process id and sleeps (to be killed)."""
    seed, marker = item
    path = Path(marker)
    if seed == 0 and not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(30)
    return layer_sums(model, seed)


def test_map_equals_local(engine, tiny):
    items = list(range(6))
    local = dict(LocalEngine().map_with_model(tiny, layer_sums, items))
    got = dict(engine.map_with_model(tiny, layer_sums, items))
    assert sorted(got) == items
    for i in items:
        assert torch.equal(got[i], local[i])
    assert engine.workers == 2 and len(set(engine.pids())) == 2


def refuse(model, item):
    raise LayerError(f"no layer {item!r} in this model")


def test_piece_error_is_the_same_one_line_error(engine, tiny):
    with pytest.raises(LayerError, match=r"^no layer 'blocks.99' in this model$"):
        list(engine.map_with_model(tiny, refuse, ["blocks.99"]))
    with pytest.raises(RuntimeError, match="manual_seed"):  # other errors keep their type
        list(engine.map_with_model(tiny, layer_sums, ["not a seed"]))


def test_killed_worker_is_retried(engine, tiny, tmp_path):
    marker = tmp_path / "pid"
    items = [(s, str(marker)) for s in range(4)]
    killed = {}

    def kill_when_busy() -> None:
        deadline = time.time() + 60
        while not marker.exists() or not marker.read_text():
            if time.time() > deadline:
                return
            time.sleep(0.05)
        killed["pid"] = int(marker.read_text())
        os.kill(killed["pid"], signal.SIGKILL)

    watcher = threading.Thread(target=kill_when_busy)
    watcher.start()
    t0 = time.time()
    got = dict(engine.map_with_model(tiny, slow_once, items))
    watcher.join()
    assert "pid" in killed and time.time() - t0 < 30  # the sleeping task was killed, not waited for
    assert killed["pid"] not in engine.pids()  # a new process replaced it
    for s in range(4):
        assert torch.equal(got[s], layer_sums(tiny, s))


@pytest.mark.parametrize("diversity", [1, 2])
def test_render_equals_local(engine, tiny, single_thread, diversity):
    from cnnscope.featurevis import channel, render

    objs = [channel("act2", c) for c in range(5)]
    kw = {"recipe": "lucid", "steps": 6, "size": 24, "seed": [3, 1, 4, 1, 5], "batch_size": 2 * diversity,
          "thresholds": [3], "diversity": diversity}
    local = render(tiny, objs, **kw)
    got = render(tiny, objs, engine=engine, **kw)
    assert local.timing["chunks"] == got.timing["chunks"] == 3 and got.timing["engine"] == "ray"
    assert np.array_equal(got.images, local.images)
    assert torch.equal(got.activations, local.activations)
    assert torch.equal(got.trace, local.trace)
    assert np.array_equal(got.snapshots[3], local.snapshots[3])
    assert got.labels == local.labels and got.spec == local.spec
    assert got.images.shape == (5 * diversity, 24, 24, 3) and float(got.activations.std()) > 0


def test_unreachable_cluster_is_one_line(monkeypatch):
    pytest.importorskip("ray", reason=NO_RAY)
    from cnnscope.engine import ray_engine

    def refuse(**kwargs):
        raise ConnectionError(f"Could not find any running Ray instance at {kwargs.get('address')}.\nmore")

    monkeypatch.setattr(ray_engine.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_engine.ray, "init", refuse)
    with pytest.raises(CnnscopeError, match=r"cannot start or reach the Ray cluster at '10.0.0.9:6379' \(Could "
                                            r"not find any running Ray instance at 10.0.0.9:6379.\); start one with "
                                            r"`ray start --head`") as info:
        get_engine("ray", address="10.0.0.9:6379")
    assert "\n" not in str(info.value)


def test_missing_ray_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cnnscope.engine.ray_engine", None)
    with pytest.raises(CnnscopeError, match=r"^engine 'ray' needs Ray: pip install 'cnnscope\[ray\]'"):
        get_engine("ray")
    with pytest.raises(CnnscopeError, match="address applies to engine='ray' only"):
        get_engine("local", address="auto")


@pytest.mark.slow
def test_cli_render_on_ray_writes_the_same_pictures(engine, tmp_path, capsys):
    from PIL import Image

    from cnnscope.cli import main

    engine.close()  # the command starts its own actors on the two CPUs (and ends them)
    common = ["render", "efficientnet_lite0", "blocks.1.0", "--channels", "0-2", "--steps", "2", "--size", "32",
              "--batch-size", "1", "--no-progress", "--out"]
    assert main([*common, str(tmp_path / "local")]) == 0
    assert main([*common, str(tmp_path / "ray"), "--engine", "ray"]) == 0
    for c in range(3):
        name = f"blocks.1.0_c{c:04d}.png"
        a, b = (np.asarray(Image.open(tmp_path / f / name)) for f in ("local", "ray"))
        assert np.array_equal(a, b) and a.std() > 0
    assert main([*common, str(tmp_path / "x"), "--address", "auto"]) == 1
    assert capsys.readouterr().err.strip().endswith("error: address applies to engine='ray' only")
