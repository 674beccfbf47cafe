"""The occlusion plan is planned once per model and remembered across processes, in $CNNSCOPE_CACHE; a stale,
corrupt or foreign cache entry is ignored, and a wrong plan can never give a wrong map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnscope.attribution import attribute
from cnnscope.fastforward import cache_dir, plan_cache
from cnnscope.fastforward.plan_cache import FOLDER, fingerprint

from .test_incremental import DeepNet, _images

OPTS = {"window": 8, "stride": 4, "target": [1, 4]}
ROOT = Path(__file__).resolve().parents[2]


def _occlusion(net, x, **opts):
    return attribute(net, x, "occlusion", **OPTS, **opts)


def _full(net, x):
    return attribute(net, x, "occlusion", incremental=False, **OPTS).values


def _files(folder: Path) -> list[Path]:
    return sorted((folder / FOLDER).glob("*.json"))


def _fresh_process(net: torch.nn.Module) -> torch.nn.Module:
    """The same model as a new object: nothing about it is in this process's memory."""
    twin = DeepNet().eval()
    twin.load_state_dict(net.state_dict())
    return twin


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNSCOPE_CACHE", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CNNSCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "cnnscope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnnscope"


def test_fingerprint_is_content_not_identity():
    net = DeepNet().eval()
    twin = _fresh_process(net)
    assert fingerprint(net) == fingerprint(twin)  # another object, same structure and numbers
    with torch.no_grad():
        twin.fc.bias[0] += 1e-3
    assert fingerprint(twin) != fingerprint(net)  # one number changed in place
    from .test_incremental import CoordNet

    other = CoordNet().eval()
    other.load_state_dict(net.state_dict())
    assert fingerprint(other) != fingerprint(net)  # same numbers, another forward


def test_a_plan_is_written_once_and_read_by_a_fresh_model(single_thread, plan_cache, monkeypatch):
    net, x = DeepNet().eval(), _images()
    first = _occlusion(net, x)
    assert first.spec["incremental"]["plan"] == "planned"
    files = _files(plan_cache)
    assert len(files) == 1 and not list((plan_cache / FOLDER).glob(".*"))  # no temporary file left behind
    assert _occlusion(net, x.flip(-1)).spec["incremental"]["plan"] == "memory"

    from cnnscope.fastforward import forward

    monkeypatch.setattr(forward, "make_plan", lambda *a, **k: pytest.fail("planned again"))
    twin = _fresh_process(net)
    again = _occlusion(twin, x)
    assert again.spec["incremental"]["plan"] == "disk"
    assert again.spec["incremental"]["layers"] == first.spec["incremental"]["layers"]
    torch.testing.assert_close(again.values, first.values, rtol=1e-5, atol=1e-7)
    assert _files(plan_cache) == files


def test_a_plan_is_remembered_across_processes(single_thread, plan_cache):
    """A real second process: it reads the plan the first one wrote and does not plan."""
    script = textwrap.dedent("""
        import json, sys, torch
        torch.set_num_threads(1)
        from cnnscope.attribution import attribute
        from tests.fastforward.test_incremental import DeepNet, _images
        a = attribute(DeepNet().eval(), _images(), "occlusion", window=8, stride=4, target=[1, 4])
        print(json.dumps(a.spec["incremental"]["plan"]))
    """)
    env = {**os.environ, "CNNSCOPE_CACHE": str(plan_cache)}
    origins = [json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                                         text=True, check=True).stdout.splitlines()[-1]) for _ in range(2)]
    assert origins == ["planned", "disk"]


def test_a_corrupt_or_foreign_entry_is_ignored_and_replaced(single_thread, plan_cache):
    net, x = DeepNet().eval(), _images()
    want = _occlusion(net, x).values
    (path,) = _files(plan_cache)
    good = json.loads(path.read_text())
    for bad in ("{not json", json.dumps({**good, "format": -1}),
                json.dumps({**good, "key": {**good["key"], "fingerprint": "another model"}}),
                json.dumps({**good, "plan": {**good["plan"], "stages": [{"layer": "no.such.layer"}]}})):
        path.write_text(bad)
        got = _occlusion(_fresh_process(net), x)
        assert got.spec["incremental"]["plan"] == "planned", bad[:40]
        torch.testing.assert_close(got.values, want, rtol=1e-5, atol=1e-7)
        assert json.loads(path.read_text())["key"] == good["key"]  # written anew


def test_another_models_entry_is_not_used(single_thread, plan_cache):
    x = _images()
    a, b = DeepNet().eval(), DeepNet().eval()
    with torch.no_grad():
        b.stem[0].weight.mul_(0.5)
    _occlusion(a, x)
    (path_a,) = _files(plan_cache)
    got = _occlusion(b, x)
    assert got.spec["incremental"]["plan"] == "planned"  # b's weights differ: its key, its own file
    assert len(_files(plan_cache)) == 2
    # a's file under b's name is another model's entry: refused, planned again
    path_b = next(p for p in _files(plan_cache) if p != path_a)
    path_b.write_text(path_a.read_text())
    again = _occlusion(_fresh_process(b), x)
    assert again.spec["incremental"]["plan"] == "planned"
    torch.testing.assert_close(again.values, _full(b, x), rtol=1e-4, atol=1e-5)


def test_a_wrong_plan_never_gives_a_wrong_map(single_thread, plan_cache):
    """A readable entry for this very key whose crops are too small (a stale plan): the checks refuse it, the plan
    is made anew, and the map equals full forwards."""
    net, x = DeepNet().eval(), _images()
    _occlusion(net, x)
    (path,) = _files(plan_cache)
    body = json.loads(path.read_text())
    for stage in body["plan"]["stages"]:
        for cuts in (stage["rows"], stage["cols"]):
            for c in cuts:  # shrink every crop to the changed positions themselves: no context for the kernels
                c[2], c[3] = c[0] * c[4], c[1] * c[4]
    path.write_text(json.dumps(body))
    got = _occlusion(_fresh_process(net), x)
    assert got.spec["incremental"]["used"] and got.spec["incremental"]["plan"] == "planned"
    torch.testing.assert_close(got.values, _full(net, x), rtol=1e-4, atol=1e-5)
    assert json.loads(path.read_text())["plan"] != body["plan"]


def test_an_unwritable_cache_is_skipped(single_thread, plan_cache, monkeypatch):
    plan_cache.parent.mkdir(parents=True, exist_ok=True)
    blocker = plan_cache.parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CNNSCOPE_CACHE", str(blocker))  # a file where the folder should be
    net, x = DeepNet().eval(), _images()
    a = _occlusion(net, x)
    assert a.spec["incremental"]["used"]
    assert _occlusion(net, x).spec["incremental"]["plan"] == "memory"


def test_unavailability_is_remembered_too(single_thread, plan_cache, monkeypatch):
    from .test_incremental import GatedNet

    net, x = GatedNet().eval(), _images()
    first = _occlusion(net, x)
    assert first.spec["incremental"]["used"] is False
    from cnnscope.fastforward import forward

    monkeypatch.setattr(forward, "make_plan", lambda *a, **k: pytest.fail("planned again"))
    twin = GatedNet().eval()
    twin.load_state_dict(net.state_dict())
    again = _occlusion(twin, x)
    assert again.spec["incremental"] == first.spec["incremental"]


def test_the_memory_cache_does_not_outlive_the_model():
    import gc

    from cnnscope.fastforward.plan import IncrementalUnavailable

    net, x = DeepNet().eval(), _images()
    key = plan_cache.plan_key(x, ([(0, 8)], [(0, 8)]), batch=4, layers=None, tau=None, folded=False,
                              channels_last=False)
    plan_cache.remember(net, key, IncrementalUnavailable("test"))
    assert str(plan_cache.lookup(net, key)) == "test"
    n = len(plan_cache._MEMORY)
    del net
    gc.collect()
    assert len(plan_cache._MEMORY) == n - 1


def test_a_plan_asked_for_by_alias_is_the_plan_of_its_layer(single_thread, plan_cache):
    """Split layers given by alias are planned, cached and read back under their dotted names."""
    from cnnscope.capture import set_layer_aliases

    net = DeepNet().eval()
    set_layer_aliases(net, {"first": "blocks.0"})
    x = _images()
    a = attribute(net, x, "occlusion", window=8, stride=4, split_layer="first")
    assert a.spec["incremental"]["used"] and a.spec["incremental"]["layers"] == ["blocks.0"]
    b = attribute(net, x, "occlusion", window=8, stride=4, split_layer="blocks.0")
    assert b.spec["incremental"]["plan"] in ("memory", "disk")  # the same key: no planning again
    torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
