"""Pretrained weights by name: torchvision's weights enums in the torch hub cache, timm's in the Hugging Face cache.

Nothing is downloaded: every test puts a random-weight state dict under the exact file name the library caches,
in a temporary TORCH_HOME / HF_HUB_CACHE, and the download functions are replaced by ones that fail as an offline
machine does.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnscope import ModelError, load_model
from cnnscope.cli.app import main
from cnnscope.models import list_models
from cnnscope.models import weights as named

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's file name of ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def offline(monkeypatch):
    """Downloads fail like on a machine without network; the calls are recorded."""
    calls = []

    def no_url(url, dst, progress):
        calls.append(url)
        raise ConnectionError("no network (test)")

    def no_hf(repo, file, cache):
        calls.append(f"{repo}/{file}")
        raise ConnectionError("no network (test)")

    monkeypatch.setattr(named, "download_url", no_url)
    monkeypatch.setattr(named, "download_hf", no_hf)
    return calls


@pytest.fixture
def torch_home(tmp_path, monkeypatch, offline):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def resnet18_sd():
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


def place_resnet18(home, sd):
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / RESNET18_FILE)
    return folder / RESNET18_FILE


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- torchvision ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_torchvision_weights_are_found_in_torch_home(torch_home, resnet18_sd, offline, samples, name):
    path = place_resnet18(torch_home, resnet18_sd)
    assert named.torch_cache() == torch_home / "hub" / "checkpoints"
    m = load_model("resnet18", weights=name)
    assert offline == []  # found in the cache: no download tried
    assert m.pretrained and str(path) in m.weights_note and "IMAGENET1K_V1" in m.weights
    for (k, want), got in zip(resnet18_sd.items(), m.module.state_dict().values()):
        assert torch.equal(want, got), k
    meta = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert list(m.labels) == meta.meta["categories"]
    assert (m.input_size, m.resize_size, m.interpolation, m.resize_mode) == ((224, 224), 256, "bilinear",
                                                                             "center_crop")
    assert m.mean == tuple(meta.transforms().mean) and m.std == tuple(meta.transforms().std)
    for photo in (samples["chelsea"], samples["coffee"]):  # the weights' own pipeline, to the pixel
        want = meta.transforms()(Image.fromarray(photo)).unsqueeze(0)
        assert torch.allclose(m.preprocess(photo), want, atol=1e-6)


def test_torchvision_weights_from_the_default_cache_of_torch_home(tmp_path, monkeypatch, resnet18_sd, offline):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # torch hub's default is $XDG_CACHE_HOME/torch/hub
    place_resnet18(tmp_path / "torch", resnet18_sd)
    assert load_model("resnet18", weights="DEFAULT").pretrained


def test_missing_torchvision_weights_are_one_line_naming_file_and_folder(torch_home, offline):
    with pytest.raises(ModelError) as err:
        load_model("resnet18", weights="DEFAULT")
    text = str(err.value)
    folder = torch_home / "hub" / "checkpoints"
    assert "\n" not in text and f"place {RESNET18_FILE} in {folder}" in text
    assert offline == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]


def test_an_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    """torch hub's own download (used as is) writes to a temporary name and removes it when the transfer fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    class Broken:
        def __init__(self):
            self.sent = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def info(self):
            from email.message import Message

            headers = Message()
            headers["Content-Length"] = "1000000"
            return headers

        def read(self, n):
            if self.sent:
                raise ConnectionResetError("connection reset (test)")
            self.sent = True
            return b"x" * 8192

    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: Broken())
    with pytest.raises(ModelError, match="ConnectionResetError.*place resnet18-f37072fd.pth in"):
        load_model("resnet18", weights="IMAGENET1K_V1")
    folder = tmp_path / "hub" / "checkpoints"
    assert list(folder.iterdir()) == []  # no truncated file under the real name, no .partial left


def test_unknown_weights_name_lists_the_known_ones(torch_home):
    with pytest.raises(ModelError, match="'IMAGENET_V9'; did you mean: IMAGENET1K_V2, IMAGENET1K_V1"):
        load_model("resnet50", weights="IMAGENET_V9")
    with pytest.raises(ModelError, match="one set of weights"):
        load_model("efficientnet_lite0", weights="IMAGENET1K_V1")


def test_a_foreign_file_under_the_cache_name_is_one_clear_error(torch_home):
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(torchvision.models.vgg11().state_dict(), folder / RESNET18_FILE)
    with pytest.raises(ModelError, match="does not hold torchvision's IMAGENET1K_V1 weights of resnet18.*delete it"):
        load_model("resnet18", weights="DEFAULT")


def test_cli_predict_with_default_weights_from_torch_home(capsys, torch_home, resnet18_sd, offline, samples):
    """The done-when line: cached IMAGENET1K_V1 file, no network, and the JSON says the weights are pretrained."""
    path = place_resnet18(torch_home, resnet18_sd)
    code, out, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", "DEFAULT", "--json",
                         "--device", "cpu")
    assert code == 0, err
    assert offline == [] and "RANDOM" not in err
    doc = json.loads(out)
    assert doc["model"]["pretrained"] is True and str(path) in doc["model"]["weights"]
    net = torchvision.models.resnet18()
    net.load_state_dict(resnet18_sd)
    meta = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    with torch.no_grad():
        probs = net.eval()(meta.transforms()(Image.fromarray(samples["chelsea"])).unsqueeze(0)).softmax(1)[0]
    top = doc["results"][0]["top"]
    assert [t["index"] for t in top] == probs.topk(5).indices.tolist()
    assert [t["label"] for t in top] == [meta.meta["categories"][i] for i in probs.topk(5).indices]
    assert np.allclose([t["probability"] for t in top], probs.topk(5).values.numpy(), atol=1e-5)


def test_cli_predict_without_the_file_is_one_line(capsys, torch_home):
    code, out, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", "DEFAULT", "--device", "cpu")
    lines = err.strip().splitlines()
    assert code != 0 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and RESNET18_FILE in lines[0]
    assert str(torch_home / "hub" / "checkpoints") in lines[0]


def test_models_lists_what_is_cached_and_what_would_be_downloaded(capsys, torch_home, resnet18_sd):
    path = place_resnet18(torch_home, resnet18_sd)
    rows = {r["name"]: r for r in list_models(include_timm=False)}
    assert rows["resnet18"]["pretrained"] and str(path) in rows["resnet18"]["weights"]
    assert rows["resnet18"]["files"] == [{"name": "IMAGENET1K_V1", "file": RESNET18_FILE, "cached": str(path),
                                          "folder": str(path.parent), "origin":
                                          "https://download.pytorch.org/models/resnet18-f37072fd.pth"}]
    assert not rows["resnet34"]["pretrained"] and "would be downloaded (resnet34-b627a593.pth" in \
        rows["resnet34"]["weights"]
    assert rows["efficientnet_lite0"]["weights"] == "embedded"
    code, out, _ = run(capsys, "models")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("resnet18 "))
    assert line.split()[:3] == ["resnet18", "torchvision", "pretrained"] and str(path) in line


# -- timm ----------------------------------------------------------------------------------------------------------
def place_hf(cache, repo, sd, file="model.safetensors", revision="0123abcd"):
    from safetensors.torch import save_file

    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    if file.endswith(".safetensors"):
        save_file(sd, str(snap / file))
    else:
        torch.save(sd, snap / file)
    return snap / file


@pytest.fixture(scope="module")
def timm_resnet18():
    import timm

    torch.manual_seed(1)
    return timm.create_model("resnet18", pretrained=False).eval()


@pytest.mark.parametrize("env, file, weights", [("HF_HUB_CACHE", "model.safetensors", "DEFAULT"),
                                                ("HF_HOME", "pytorch_model.bin", "a1_in1k")])
def test_timm_weights_are_found_in_the_hugging_face_cache(tmp_path, monkeypatch, offline, timm_resnet18, samples,
                                                          env, file, weights):
    import timm
    from timm.data import create_transform, resolve_data_config

    for var in ("HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(env, str(tmp_path))
    cache = tmp_path if env == "HF_HUB_CACHE" else tmp_path / "hub"
    path = place_hf(cache, "timm/resnet18.a1_in1k", timm_resnet18.state_dict(), file)
    m = load_model("timm:resnet18", weights=weights)
    assert offline == [] and m.pretrained and str(path) in m.weights
    for (k, want), got in zip(timm_resnet18.state_dict().items(), m.module.state_dict().values()):
        assert torch.equal(want, got), k
    cfg = timm.models.get_pretrained_cfg("resnet18.a1_in1k")
    assert m.input_size == cfg.input_size[1:] and m.interpolation == cfg.interpolation == "bicubic"
    assert m.resize_size == int(224 / cfg.crop_pct) and m.mean == cfg.mean and len(m.labels) == 1000
    pipeline = create_transform(**resolve_data_config({}, model=m.module))  # timm's own eval transform
    want = pipeline(Image.fromarray(samples["coffee"])).unsqueeze(0)
    assert torch.allclose(m.preprocess(samples["coffee"]), want, atol=1e-6)


def test_missing_timm_weights_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo_dir = tmp_path / "models--timm--resnet18.a1_in1k"

    def interrupted(repo, file, cache):  # huggingface_hub leaves .incomplete blobs for resuming
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "blobs" / "deadbeef.incomplete").write_bytes(b"half")
        raise ConnectionError("connection reset (test)")

    monkeypatch.setattr(named, "download_hf", interrupted)
    with pytest.raises(ModelError) as err:
        load_model("timm:resnet18", weights="DEFAULT")
    text = str(err.value)
    assert "\n" not in text and "place model.safetensors in the Hugging Face cache " + str(tmp_path) in text
    assert "models--timm--resnet18.a1_in1k" in text
    assert not list(repo_dir.rglob("*.incomplete"))


def test_hf_offline_is_said_without_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        load_model("timm:resnet18", weights="DEFAULT")


def test_timm_weights_given_as_a_safetensors_file(tmp_path, timm_resnet18):
    path = place_hf(tmp_path, "me/net", timm_resnet18.state_dict())
    m = load_model("timm:resnet18", weights=str(path))
    assert m.pretrained and all(torch.equal(a, b) for a, b in zip(timm_resnet18.state_dict().values(),
                                                                   m.module.state_dict().values()))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model("timm:resnet18", weights=str(bad))


def test_weights_names_and_files_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert named.looks_like_name("DEFAULT") and named.looks_like_name("a1_in1k")
    assert not named.looks_like_name("weights.pth") and not named.looks_like_name("runs/w")
    (tmp_path / "DEFAULT").write_bytes(io.BytesIO(b"x").read())
    assert not named.looks_like_name("DEFAULT")  # a file of that name here is a file
    os.remove(tmp_path / "DEFAULT")
