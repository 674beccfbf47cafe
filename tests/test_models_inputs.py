"""Models and inputs that used to fail with raw exceptions or silently wrong numbers: dtypes, normalisation, k,
devices, weights and model files, ``--debug`` anywhere, and large pictures read within a small memory budget."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from cnnscope import CnnscopeError, ImageError, ModelError, load_model, wrap
from cnnscope.cli import main
from cnnscope.images import load_image, resize
from cnnscope.models import devices, registry
from tests.models import seeded


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    assert code != 0 and "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def resnet():
    seeded(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def photo():
    from cnnscope import sample_images

    return sample_images(["chelsea"])["chelsea"]


# -- 1. dtypes -------------------------------------------------------------------------------------------------------
def test_float64_model_predicts_like_the_float32_model(resnet, photo):
    import copy

    m32 = wrap(resnet, 64, labels=[f"c{i}" for i in range(1000)])
    m64 = wrap(copy.deepcopy(resnet).double(), 64, labels=m32.labels)
    assert m64.batch(photo).dtype == torch.float64 and m64.preprocess(photo).dtype == torch.float64
    assert m64.to_input(torch.rand(1, 3, 8, 8)).dtype == torch.float64  # pictures follow the model's dtype
    top32, top64 = m32.predict(photo, k=5)[0], m64.predict(photo, k=5)[0]
    assert [i for i, _, _ in top32] == [i for i, _, _ in top64]
    assert np.allclose([p for *_, p in top32], [p for *_, p in top64], atol=1e-5)
    # the probabilities are softmax(logits) of the float64 network on the same batch, computed in float64
    with torch.no_grad():
        expect = m64.module(m64.batch(photo))[0].softmax(0).topk(5)
    assert [int(i) for i in expect.indices] == [i for i, _, _ in top64]
    assert np.allclose(expect.values.numpy(), [p for *_, p in top64], atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_get_inputs_in_their_dtype(resnet, photo, dtype):
    import copy

    m = wrap(copy.deepcopy(resnet).to(dtype), 64)
    x = m.batch(photo)
    assert x.dtype == dtype
    ref = wrap(resnet, 64).batch(photo)
    assert torch.equal(x, ref.to(dtype))  # normalised in float32, rounded once
    top = m.predict(photo, k=3)[0]
    assert len(top) == 3 and all(np.isfinite(p) for *_, p in top)


def test_examples_on_a_float64_model_match_float32(tmp_path, photo):
    import copy

    from cnnscope.dataset.examples import collect_statistics
    from tests.models import InplaceReLUNet

    for i in range(3):
        Image.fromarray(np.roll(photo, 40 * i, axis=1)).save(tmp_path / f"p{i}.png")
    seeded(1)
    net = InplaceReLUNet().eval()
    s32 = collect_statistics(wrap(net, 32), str(tmp_path), ["features.2"], receptive_field=None)
    s64 = collect_statistics(wrap(copy.deepcopy(net).double(), 32), str(tmp_path), ["features.2"], receptive_field=None)
    assert s64.images == s32.images == 3
    assert torch.allclose(s64["features.2"].mean.double(), s32["features.2"].mean.double(), rtol=1e-4, atol=1e-5)


# -- 2. normalisation and channels -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"mean": [0.5], "std": [0.5]}, "first convolution takes 3 input channels"),
    ({"std": [0.0, 0.0, 0.0]}, "std must be positive"),
    ({"std": [0.2, -0.1, 0.2]}, "std must be positive"),
    ({"mean": [float("nan"), 0.4, 0.4]}, "finite"),
    ({"std": [float("inf"), 0.2, 0.2]}, "finite"),
    ({"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}, "mean has 2 channel(s) but std has 3"),
])
def test_bad_normalisation_is_refused(resnet, kwargs, message):
    with pytest.raises(ModelError) as info:
        wrap(resnet, 64, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_model_that_converts_its_own_input_is_accepted(resnet, photo):
    class GreyFront(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x.expand(-1, 3, -1, -1))

    m = wrap(GreyFront(resnet), 64, mean=[0.5], std=[0.25])  # the probe forward settles it
    x = m.batch(photo)
    assert x.shape == (1, 1, 64, 64)
    with torch.no_grad():
        expect = resnet(x.expand(-1, 3, -1, -1)).softmax(1)[0].max()
    assert abs(m.predict(photo, k=1)[0][0][2] - float(expect)) < 1e-6


def test_a_four_channel_tensor_is_an_image_error(resnet):
    from cnnscope.attribution import attribute

    m = wrap(resnet, 64)
    with pytest.raises(ImageError, match=r"takes \[B,3,H,W\] tensors, got shape \(1, 4, 64, 64\)"):
        attribute(m, torch.zeros(1, 4, 64, 64), "saliency")
    with pytest.raises(ImageError):
        m.predict(torch.zeros(1, 4, 64, 64))


# -- 3. k ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [-1, 0, True, 2.5])
def test_predict_k_must_be_positive(resnet, photo, k):
    with pytest.raises(CnnscopeError, match="k .classes per image. must be a positive integer"):
        wrap(resnet, 64).predict(photo, k=k)


def test_predict_k_above_the_class_count_returns_every_class(photo):
    seeded(2)
    net = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    m = wrap(net, 64)
    top = m.predict(photo, k=50)[0]
    with torch.no_grad():
        probs = net(m.batch(photo)).softmax(1)[0]
    assert [i for i, _, _ in top] == probs.argsort(descending=True).tolist()
    assert np.allclose([p for *_, p in top], probs.sort(descending=True).values.numpy(), atol=1e-7)


def test_cli_k_above_the_class_count_says_so(capsys, tmp_path):
    seeded(3)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path / "ten.pth"
    torch.save(net.state_dict(), path)
    code, out, err = run(capsys, "predict", "resnet18", "sample:coffee", "--weights", str(path), "-k", "20", "--json")
    assert code == 0
    assert "note: 10 classes, read from the shape of fc.weight in" in err
    assert "note: resnet18 has 10 classes; showing all of them" in err
    top = json.loads(out)["results"][0]["top"]
    assert sorted(t["index"] for t in top) == list(range(10))


@pytest.mark.parametrize("args, option", [(("--size", "-5"), "--size"), (("--depth", "-1"), "--depth")])
def test_cli_layers_rejects_negative_sizes(capsys, args, option):
    code, _, err = run(capsys, "layers", "resnet18", *args)
    one_line_error(code, err, option, "cnnscope layers --help")


# -- 4. devices ---------------------------------------------------------------------------------------------------
def test_devices_are_checked_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(devices, "_cuda_count", lambda: 0)

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the device was checked")

    monkeypatch.setattr(registry, "_build", never)
    with pytest.raises(ModelError, match="'cuda' is not available: PyTorch finds no CUDA GPU"):
        load_model("resnet18", device="cuda")
    with pytest.raises(ModelError, match="unknown device 'gpu'; use cpu, cuda, cuda:N, mps or auto"):
        load_model("resnet18", device="gpu")


def test_device_spellings(monkeypatch):
    monkeypatch.setattr(devices, "_cuda_count", lambda: 2)
    assert devices.resolve_device("auto") == torch.device("cuda")
    assert devices.resolve_device("CUDA:1") == torch.device("cuda", 1)
    assert devices.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ModelError, match=r"'cuda:2' does not exist: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        devices.resolve_device("cuda:2")
    monkeypatch.setattr(devices, "_cuda_count", lambda: 0)
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(ModelError, match="no Apple MPS GPU"):
        devices.resolve_device("mps")


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'; use cpu, cuda, cuda:N, mps or auto"),
                                             ("cuda", "'cuda' is not available")])
def test_cli_bad_device_is_one_line(capsys, monkeypatch, device, message):
    monkeypatch.setattr(devices, "_cuda_count", lambda: 0)
    code, _, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--device", device)
    one_line_error(code, err, message)
    assert "RANDOM" not in err  # refused before the model was loaded


# -- 5. weights and model files ------------------------------------------------------------------------------------
def test_a_text_file_is_not_a_checkpoint(capsys, tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ModelError, match="is not a PyTorch checkpoint"):
        load_model("resnet18", weights=path)
    code, _, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", str(path))
    one_line_error(code, err, "notes.pth is not a PyTorch checkpoint")


def test_a_pickled_model_needs_trust(capsys, tmp_path, photo):
    seeded(4)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    code, _, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", str(path))
    one_line_error(code, err, "holds pickled Python objects", "--trust-pickle")
    code, _, err = run(capsys, "predict", str(path), "sample:chelsea")
    one_line_error(code, err, "--trust-pickle")
    with pytest.raises(ModelError, match="trust_pickle=True"):
        load_model(str(path))
    # trusted: as weights for the named architecture, and as the model itself; both compute what net computes
    as_weights = load_model("resnet18", weights=path, trust_pickle=True)
    as_model = load_model(str(path), trust_pickle=True)
    assert as_weights.notes == [f"10 classes, read from the shape of fc.weight in {path}"]
    assert as_model.source == "file" and as_model.name == "whole.pt" and not as_model.module.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        assert torch.allclose(as_weights.module(x), ref, atol=1e-6)
        assert torch.allclose(as_model.module(x), ref, atol=1e-6)
    code, out, err = run(capsys, "predict", str(path), "sample:chelsea", "--trust-pickle", "--json", "-k", "3")
    assert code == 0 and "note: whole.pt is a plain nn.Module: cnnscope assumed" in err
    got = [t["index"] for t in json.loads(out)["results"][0]["top"]]
    with torch.no_grad():
        expect = net(as_model.batch(photo))[0].topk(3).indices.tolist()
    assert got == expect


def test_torchscript_loads_as_a_model(capsys, tmp_path, photo):
    seeded(5)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), path)
    m = load_model(str(path))
    assert m.source == "file" and m.labels is not None and len(m.labels) == 1000  # 1000 outputs: ImageNet's
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m.module(x), net(x), atol=1e-5)
    code, out, err = run(capsys, "predict", str(path), "sample:chelsea", "--json", "-k", "2")
    assert code == 0, err
    with torch.no_grad():
        expect = net(m.batch(photo)).softmax(1)[0].topk(2)
    top = json.loads(out)["results"][0]["top"]
    assert [t["index"] for t in top] == expect.indices.tolist()
    assert np.allclose([t["probability"] for t in top], expect.values.numpy(), atol=1e-5)
    code, _, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", str(path))
    one_line_error(code, err, "is a TorchScript model", f"cnnscope predict {path} IMAGE")


def test_a_state_dict_given_as_model_says_how_to_use_it(capsys, tmp_path, resnet):
    path = tmp_path / "sd.pth"
    torch.save(resnet.state_dict(), path)
    code, _, err = run(capsys, "predict", str(path), "sample:chelsea")
    one_line_error(code, err, "holds weights only", f"--weights {path}")
    code, _, err = run(capsys, "predict", str(tmp_path / "missing.pt"), "sample:chelsea")
    one_line_error(code, err, "missing.pt does not exist")


@pytest.mark.parametrize("arch, aux, size", [
    ("googlenet", "aux1.", 64),
    pytest.param("inception_v3", "AuxLogits.", 96, marks=pytest.mark.slow),
])
def test_official_torchvision_state_dicts_with_aux_heads_load(tmp_path, arch, aux, size):
    """Under torchvision's own file name the model is built as torchvision builds it for that file
    (transform_input=True); under another name it is not (a state dict does not say), and a note says which."""
    from cnnscope.models import weights as named

    seeded(6)
    source = torchvision.models.get_model(arch, weights=None, aux_logits=True, transform_input=True,
                                          init_weights=False).eval()
    sd = source.state_dict()
    assert any(k.startswith(aux) for k in sd)  # what the official files hold
    official = named.torchvision_files(arch)[0].file
    x = torch.randn(2, 3, size, size)
    for name, transform in ((official, True), (f"{arch}.pth", False)):
        path = tmp_path / name
        torch.save(sd, path)
        m = load_model(arch, weights=path)
        assert not any(k.startswith(aux) for k in m.module.state_dict())
        assert m.module.transform_input is transform
        assert len(m.notes) == 1 and f"transform_input={transform}" in m.notes[0]
        plain = torchvision.models.get_model(arch, weights=None, aux_logits=False, transform_input=transform,
                                             init_weights=False).eval()
        plain.load_state_dict({k: v for k, v in sd.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))})
        with torch.no_grad():  # eval: the aux heads never change the output
            assert torch.allclose(m.module(x), plain(x), atol=1e-5)


def test_num_classes_from_the_cli_and_python(capsys, tmp_path):
    seeded(7)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    path = tmp_path / "ten.pth"
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, path)
    m = load_model("resnet18", weights=path, num_classes=10)
    assert m.notes == [] and m.labels is None and m.module.fc.out_features == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m.module(x), net(x), atol=1e-6)
    code, out, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", str(path), "--num-classes",
                         "10", "--json")
    assert code == 0 and "read from the shape" not in err
    code, _, err = run(capsys, "predict", "resnet18", "sample:chelsea", "--weights", str(path), "--num-classes", "5")
    one_line_error(code, err, "fc.weight (10, 512) vs (5, 512)")
    with pytest.raises(ModelError, match="num_classes must be a positive integer"):
        load_model("resnet18", num_classes=0)
    with pytest.raises(ModelError, match="embedded efficientnet_lite0 has ImageNet's 1000 classes"):
        load_model("efficientnet_lite0", num_classes=10)


# -- 6. --debug anywhere -------------------------------------------------------------------------------------------
def test_debug_after_the_subcommand():
    from cnnscope.cli.app import _debug_first

    assert _debug_first(["predict", "--debug", "m", "x"]) == ["--debug", "predict", "m", "x"]
    assert _debug_first(["predict", "m", "--", "--debug"]) == ["predict", "m", "--", "--debug"]
    proc = subprocess.run([sys.executable, "-m", "cnnscope", "predict", "--debug", "nope", "x.png"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelError" in proc.stderr
    assert "No such option" not in proc.stderr


# -- 7. large pictures ---------------------------------------------------------------------------------------------
def _gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


def _upscaled(photo, factor):
    return np.asarray(Image.fromarray(photo).resize((photo.shape[1] * factor, photo.shape[0] * factor),
                                                    Image.BICUBIC))


def _full_then_fit(path, size, mode):
    """The former path: the whole picture decoded, then one resize (and a centre crop)."""
    arr = load_image(path)
    if mode == "resize":
        return resize(arr, (size, size))
    scale = size / 0.875 / min(arr.shape[:2])
    nh, nw = max(size, round(arr.shape[0] * scale)), max(size, round(arr.shape[1] * scale))
    big = resize(arr, (nh, nw))
    top, left = (nh - size) // 2, (nw - size) // 2
    return big[top:top + size, left:left + size]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_reduced_reading_matches_the_full_picture(tmp_path, resnet, photo, suffix, mode):
    path = tmp_path / f"big{suffix}"
    Image.fromarray(_upscaled(photo, 6)).save(path, quality=95)  # 1800 x 2706
    m = wrap(resnet, 64)
    m.resize_mode = mode
    reduced = load_image(path, at_least=m.fit_needs())
    assert max(reduced.shape[:2]) < 1000  # really reduced (a factor of 4 here)
    new, old = m.fit_image(path).astype(int), _full_then_fit(path, 64, mode).astype(int)
    assert new.shape == old.shape == (64, 64, 3)
    assert np.abs(new - old).max() <= 2 and np.abs(new - old).mean() < 0.3


def test_reduced_reading_keeps_exif_rotation_and_sixteen_bits(tmp_path, resnet, photo):
    m = wrap(resnet, (48, 64))
    big = _upscaled(photo, 5)  # 1500 x 2255, landscape
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.fromarray(big).save(rotated, quality=95, exif=exif)
    assert load_image(rotated, at_least=(48, 64)).shape[0] > load_image(rotated, at_least=(48, 64)).shape[1]
    new, old = m.fit_image(rotated).astype(int), resize(load_image(rotated), (48, 64)).astype(int)
    assert np.abs(new - old).max() <= 2
    grey16 = tmp_path / "grey16.png"
    values = (big[..., 1].astype(np.uint32) * 257).astype(np.uint16)
    Image.fromarray(values).save(grey16)
    assert Image.open(grey16).mode.startswith("I;16")
    new, old = m.fit_image(grey16).astype(int), resize(load_image(grey16), (48, 64)).astype(int)
    assert np.abs(new - old).max() <= 2 and np.abs(new - old).mean() < 0.3


def test_conversions_run_in_blocks_and_equal_the_formula():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 65536, size=(1100, 1000, 4), dtype=np.uint16)  # two blocks of rows
    out = load_image(rgba)
    f = rgba.astype(np.float64) / 65535.0
    expect = np.clip(np.round((f[..., :3] * f[..., 3:] + (1 - f[..., 3:])) * 255.0), 0, 255).astype(np.uint8)
    assert np.array_equal(out, expect)


MEASURE = r"""
import sys, tracemalloc, warnings
warnings.simplefilter("ignore")
import click, torchvision
from cnnscope.cli.app import cli, read_image_arg
from cnnscope.models import wrap
m = wrap(torchvision.models.resnet18(weights=None).eval(), 224)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
with click.Context(cli) as ctx:
    ctx.meta["cnnscope.model"] = m  # what open_model leaves for read_image_arg
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak resident size (VmHWM)
    base = status("VmRSS")
    tracemalloc.start()
    name, arr = read_image_arg(sys.argv[1])
    top = m.predict(arr, k=1)
    traced = tracemalloc.get_traced_memory()[1]
print(status("VmHWM") - base, traced, arr.shape[0], arr.shape[1], top[0][0][0])
"""


def test_a_large_picture_costs_a_small_multiple_of_its_size(tmp_path):
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure the peak resident size")
    path = tmp_path / "large.png"
    Image.fromarray(_gradient(6000, 6000)).save(path, compress_level=1)
    decoded = 6000 * 6000 * 3
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak, traced, h, w, _ = (int(v) for v in proc.stdout.split())
    assert (h, w) == (1500, 1500)  # read once, reduced by 4, kept at 6 x 224 or more
    assert traced < 0.25 * decoded  # numpy never holds the full picture (the former path: about 2x)
    assert peak < 2.5 * decoded  # the decoder's own buffer (4 bytes a pixel) and a little more (the former path: 6x)


def test_a_training_checkpoint_is_a_model_for_every_command(capsys, tmp_path, photo):
    from cnnscope.zf.train import SmallConvNet, save_checkpoint

    seeded(8)
    net = SmallConvNet(3, 4, (4, 8)).eval()
    m = wrap(net, 32, (0.5,) * 3, (0.25,) * 3, labels=["a", "b", "c", "d"], name="tiny")
    path = save_checkpoint(m, tmp_path / "tiny.pt", 2, [])
    code, out, err = run(capsys, "predict", str(path), "sample:chelsea", "--json", "-k", "4")
    assert code == 0, err
    with torch.no_grad():
        probs = net(m.batch(photo)).softmax(1)[0]
    top = json.loads(out)["results"][0]["top"]
    assert [t["label"] for t in top] == [m.labels[i] for i in probs.argsort(descending=True)]
    assert np.allclose([t["probability"] for t in top], probs.sort(descending=True).values.numpy(), atol=1e-6)


def test_pillow_decompression_bomb_limit_is_an_image_error(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3600 pixels is over twice the limit: Pillow refuses
    with pytest.raises(ImageError, match="wide.png: Image size .3600 pixels. exceeds limit.*MAX_IMAGE_PIXELS"):
        load_image(path)


def test_a_32_bit_picture_reads_the_same_reduced_or_not(tmp_path):
    """A 32-bit TIFF is scaled by its own maximum: a reduction that averaged one bright pixel away would brighten
    the whole picture, so such pictures are read at full size."""
    from PIL import Image

    from cnnscope.images import load_image

    arr = np.random.default_rng(0).integers(1000, 4000, (600, 600)).astype(np.int32)
    arr[10, 10] = 60000
    path = tmp_path / "deep.tif"
    Image.fromarray(arr, mode="I").save(path)
    full, small = load_image(path), load_image(path, at_least=(10, 10))
    assert small.shape == full.shape and np.array_equal(small, full)
    assert abs(float(full.mean()) - float(arr.mean()) / 60000 * 255) < 1
