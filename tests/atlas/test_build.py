"""The resumable build: real numbers, resume after max_units and after SIGKILL, refusal of mixed atlases, the
model adapter and the kinds registry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from cnnscope.atlas import AtlasError, AtlasStore, BuildOptions, build_atlas
from cnnscope.errors import CnnscopeError, LayerError, MethodError
from cnnscope.models import fingerprint as model_fingerprint
from tests.atlas import helpers
from tests.conformance import assert_unchanged


def _contents(path) -> dict:
    """``(layer, unit) -> sorted [(kind, name, sha256, numbers)]``, a build's comparable content."""
    with AtlasStore(path) as st:
        return {(layer, unit): sorted((a.kind, a.name, a.sha256 or "", repr(a.numbers))
                                      for a in st.artifacts(layer, unit)) for layer, unit in st.all_units()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted build of the tiny atlas (blobs stored as files to exercise that path too)."""
    out = tmp_path_factory.mktemp("reference")
    helpers.build_tiny(out, inline_max=0)
    return out


def test_numbers_match_a_direct_forward(reference):
    """The stored per-image means equal the layer's activations computed without cnnscope's capture."""
    m = helpers.tiny_model()
    x = m.batch([a for _, a in helpers.tiny_images()])
    m.module.eval()  # the build runs in eval mode (BatchNorm running statistics)
    with torch.no_grad():
        acts = {"features.2": m.module.features[:3](x), "features.5": m.module.features(x)}
    with AtlasStore(reference) as st:
        assert st.integrity_check() == []
        assert [(r.name, r.built) for r in st.layers()] == [("features.2", 8), ("features.5", 16)]
        for layer, unit in st.all_units():
            means = {a.name: a for a in st.artifacts(layer, unit)}["means"].numbers["per_image"]
            expected = acts[layer][:, unit].mean(dim=(1, 2))
            torch.testing.assert_close(torch.tensor(means), expected, rtol=1e-5, atol=1e-6)
        meta = st.meta()
    assert meta["kinds"] == ["unit_mean"] and meta["model"]["name"] == "tiny_inplace"
    assert meta["options"]["units_per_chunk"] == 2 and meta["options"]["batch_size"] is None
    assert len(meta["fingerprint"]) == 64
    assert meta["kind_info"]["unit_mean"]["artifacts"] == [["map", "image/png"], ["means", "application/json"]]


def test_resume_after_max_units_equals_uninterrupted(tmp_path, reference):
    first = helpers.build_tiny(tmp_path, inline_max=0, max_units=5)
    assert len(first.built) == 5 and first.skipped == 0
    second = helpers.build_tiny(tmp_path, inline_max=0)
    assert len(second.built) == 24 - 5 and second.skipped == 5
    assert set(first.built).isdisjoint(second.built)
    third = helpers.build_tiny(tmp_path, inline_max=0)
    assert third.built == [] and third.skipped == 24
    assert _contents(tmp_path) == _contents(reference)


def _unit_count(path) -> int:
    try:
        con = sqlite3.connect(f"file:{path / 'atlas.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _kill_after(out, min_units: int, sleep: float) -> int:
    """Run the tiny build in a subprocess, SIGKILL it once ``min_units`` units are stored; return that count."""
    env = {**os.environ, "CNNSCOPE_TEST_KIND_SLEEP": str(sleep), "PYTHONPATH": str(helpers.ROOT)}
    proc = subprocess.Popen([sys.executable, str(helpers.ROOT / "tests" / "atlas" / "helpers.py"), str(out), "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _unit_count(out) < min_units:
            assert proc.poll() is None, f"build ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "build made no progress"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _unit_count(out)


def test_sigkill_mid_build_then_resume(tmp_path, reference):
    """Killed twice at different points (SIGKILL), then resumed: same units and artifacts, no duplicates."""
    n1 = _kill_after(tmp_path, 3, sleep=0.15)
    assert 3 <= n1 < 24
    with AtlasStore(tmp_path) as st:  # the killed build left a sound, partial atlas
        assert st.integrity_check() == []
    n2 = _kill_after(tmp_path, n1 + 5, sleep=0.1)
    assert n1 < n2 < 24
    report = helpers.build_tiny(tmp_path, inline_max=0)
    assert report.skipped == n2 and len(report.built) == 24 - n2
    with AtlasStore(tmp_path) as st:
        assert st.integrity_check() == []
        dup = st.con.execute("SELECT COUNT(*) FROM (SELECT layer, unit, kind, name FROM artifacts "
                             "GROUP BY layer, unit, kind, name HAVING COUNT(*) > 1)").fetchone()[0]
        assert dup == 0
    assert _contents(tmp_path) == _contents(reference)


def test_refuses_another_model_or_other_settings(tmp_path):
    helpers.build_tiny(tmp_path, max_units=2)
    other = helpers.tiny_model()
    with torch.no_grad():
        other.module.fc.bias.add_(1.0)
    with pytest.raises(AtlasError, match="built from another model"):
        build_atlas(other, tmp_path, helpers.TINY_LAYERS, source=helpers.tiny_images(), kinds=["unit_mean"],
                    options=BuildOptions(units_per_chunk=2))
    with pytest.raises(AtlasError, match="other settings.*images 4 images \\(arrays\\) -> 3 images"):
        build_atlas(helpers.tiny_model(), tmp_path, helpers.TINY_LAYERS, source=helpers.tiny_images(3),
                    kinds=["unit_mean"], options=BuildOptions(units_per_chunk=2))
    with pytest.raises(AtlasError, match="other settings.*units_per_chunk 2 -> 3"):
        build_atlas(helpers.tiny_model(), tmp_path, helpers.TINY_LAYERS, source=helpers.tiny_images(),
                    kinds=["unit_mean"], options=BuildOptions(units_per_chunk=3))


def test_clear_errors(tmp_path):
    m = helpers.tiny_model()
    with pytest.raises(LayerError, match="did you mean: features.2"):
        build_atlas(m, tmp_path, ["features.22"], source=helpers.tiny_images(), kinds=["unit_mean"])
    with pytest.raises(MethodError, match="unknown artifact kind 'unit_men'; did you mean: unit_mean"):
        build_atlas(m, tmp_path, ["features.2"], source=helpers.tiny_images(), kinds=["unit_men"])
    with pytest.raises(CnnscopeError, match="needs images"):
        build_atlas(m, tmp_path, ["features.2"], kinds=["unit_mean"])
    with pytest.raises(CnnscopeError, match="outside 0-7"):
        build_atlas(m, tmp_path, ["features.2"], channels="6-9", source=helpers.tiny_images(), kinds=["unit_mean"])
    with pytest.raises(CnnscopeError, match="images per forward"):
        build_atlas(m, tmp_path, ["features.2"], source=helpers.tiny_images(), kinds=["unit_mean"],
                    options=BuildOptions(batch_size=0))
    with pytest.raises(TypeError):  # everything after the layers is keyword-only
        build_atlas(m, tmp_path, ["features.2"], "0-1")


def test_build_leaves_the_model_unchanged(tmp_path):
    m = helpers.tiny_model()
    m.module.train()
    assert assert_unchanged(m.module, lambda: build_atlas(m, tmp_path / "ok", helpers.TINY_LAYERS, channels="0-1",
                                                          source=helpers.tiny_images(), kinds=["unit_mean"])) is None
    err = assert_unchanged(m.module, lambda: build_atlas(m, tmp_path / "bad", ["features.9"],
                                                         source=helpers.tiny_images(), kinds=["unit_mean"]))
    assert isinstance(err, LayerError)


@pytest.mark.filterwarnings("ignore::cnnscope.models.AssumptionWarning")
def test_a_plain_module_builds_the_same_atlas_as_its_wrapper(tmp_path):
    """``build_atlas`` takes the ``nn.Module`` itself (wrapped by ``as_model``): same fingerprint, same artifacts."""
    from cnnscope import wrap
    from tests.models import InplaceReLUNet

    net = InplaceReLUNet()
    net.input_size = 32  # read by as_model; ImageNet mean/std are its default as they are wrap()'s
    wrapped = wrap(net, input_size=32)
    assert model_fingerprint(net) == model_fingerprint(wrapped)
    for model, out in ((net, tmp_path / "plain"), (wrapped, tmp_path / "wrapped")):
        build_atlas(model, out, helpers.TINY_LAYERS, channels=[0, 3], source=helpers.tiny_images(),
                    kinds=["unit_mean"], options=BuildOptions(units_per_chunk=2))
    assert _contents(tmp_path / "plain") == _contents(tmp_path / "wrapped")
    assert len(_contents(tmp_path / "plain")) == 4


def test_unreadable_images_are_skipped_reported_and_recorded(tmp_path):
    """The dataset kinds' pass skips unreadable files; the report and the atlas's meta list them, and the
    examples are those of the readable images only."""
    import random

    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for name, img in helpers.tiny_images(3):
        Image.fromarray(img).save(folder / f"{name}.png")
    (folder / "zz_broken.png").write_bytes(b"not a png")
    m = helpers.tiny_model()
    before = torch.get_rng_state().clone(), np.random.get_state(), random.getstate()
    report = build_atlas(m, tmp_path / "atlas", ["features.2"], channels="0-1", source=str(folder),
                         kinds=["examples", "histogram"], options=BuildOptions(units_per_chunk=2, top_k=2))
    after = torch.get_rng_state(), np.random.get_state(), random.getstate()
    assert torch.equal(before[0], after[0]) and before[2] == after[2]  # the global random state is untouched
    assert np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
    broken = str(folder / "zz_broken.png")
    assert [s.path for s in report.skipped_images] == [broken] and report.n_skipped_images == 1
    with AtlasStore(tmp_path / "atlas") as st:
        meta = st.get_meta("skipped_images")
        assert [s["path"] for s in meta] == [broken] and meta[0]["reason"] == report.skipped_images[0].reason
        assert st.get_meta("n_skipped_images") == 1
        hist = next(a for a in st.artifacts("features.2", 0) if a.kind == "histogram")
        assert hist.numbers["count"] == 3 * 32 * 32  # features.2 of 32 px inputs: 3 readable images x 32 x 32
