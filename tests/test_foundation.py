"""The shared foundation of every area: the model adapter, the one input check, units, batching, registries."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope import AssumptionWarning, ImageError, LayerError, ModelError, Unit, as_model, parse_channels, unit, wrap
from cnnscope.batching import chunks, resolve_batch_size
from cnnscope.errors import CnnscopeError, MethodError
from cnnscope.images import LUMA, luma, to_float
from cnnscope.registry import Registry, RegistryError
from cnnscope.units import read_unit
from tests.models import InplaceReLUNet


class GreyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


# -- adapter -------------------------------------------------------------------------------------------------
def test_as_model_passes_loaded_models_through_and_remembers_plain_modules():
    net = InplaceReLUNet()
    loaded = wrap(net, input_size=32)
    assert as_model(loaded) is loaded
    a, b = as_model(net), as_model(net)
    assert a is b and a.module is net
    assert a.input_size == (224, 224) and a.mean == (0.485, 0.456, 0.406)
    assert "ImageNet mean/std" in a.assumed and "224x224" in a.assumed
    assert a.labels is None  # 10 outputs: no ImageNet names


def test_as_model_never_keeps_a_module_alive():
    import gc
    import weakref

    net = InplaceReLUNet()
    gone = weakref.ref(net)
    wrapper = as_model(net)
    assert as_model(net) is wrapper
    del net, wrapper
    gc.collect()
    assert gone() is None


def test_as_model_reads_what_the_module_says():
    net = GreyNet()
    net.input_size = 48
    m = as_model(net)
    assert m.input_size == (48, 48) and m.mean == (0.0,) and m.std == (1.0,)
    assert len(m.labels) == 1000 and m.labels[285] == "Egyptian cat"
    assert as_model(InplaceReLUNet(), input_size=(20, 30)).input_size == (20, 30)


def test_as_model_rejects_other_objects():
    with pytest.raises(ModelError, match="LoadedModel .* or a torch.nn.Module, got str"):
        as_model("resnet50")


def test_assumption_is_said_once_when_pictures_are_converted():
    m = as_model(InplaceReLUNet(seed=3))
    picture = np.full((10, 12, 3), 128, np.uint8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m.batch(torch.zeros(1, 3, 8, 8))  # model-space tensors need no assumption
        assert not seen
        m.batch(picture)
        m.batch(picture)
    assert [w.category for w in seen] == [AssumptionWarning]


def test_batch_converts_pictures_exactly_like_preprocess_and_checks_tensors():
    m = wrap(InplaceReLUNet(), input_size=16)
    pics = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    x = m.batch(pics)
    expected = (torch.from_numpy(pics).permute(0, 3, 1, 2).float() / 255 - torch.tensor(m.mean).view(1, 3, 1, 1)) \
        / torch.tensor(m.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(m.batch(list(pics)), x)
    torch.testing.assert_close(m.batch(x[0]), x[:1])
    torch.testing.assert_close(m.batch([x[0], x[1]]), x)
    for bad, msg in [(torch.zeros(1, 1, 8, 8), r"\[B,3,H,W\]"), (torch.zeros(0, 3, 8, 8), "empty batch"),
                     (torch.full((1, 3, 4, 4), float("inf")), "NaN or infinite"),
                     ([torch.zeros(3, 4, 4), torch.zeros(3, 5, 5)], "one size"), ("/no/such.png", "no such file"),
                     (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float tensors")]:
        with pytest.raises(ImageError, match=msg):
            m.batch(bad)


def test_one_channel_models_see_luma():
    m = as_model(GreyNet())
    pic = np.zeros((4, 4, 3), np.uint8)
    pic[..., 0] = 255
    x = m.batch(pic, size=(4, 4))
    assert x.shape == (1, 1, 4, 4)
    torch.testing.assert_close(x, torch.full((1, 1, 4, 4), LUMA[0]))
    rgb = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(luma(rgb)[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])


def test_to_float_takes_one_picture_a_batch_or_a_list():
    pic = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = to_float(pic)
    assert t.shape == (1, 3, 2, 3) and t.dtype == torch.float32
    assert float(t[0, 2, 1, 2]) == pytest.approx(pic[1, 2, 2] / 255)
    torch.testing.assert_close(to_float([pic, pic]), torch.cat([t, t]))
    with pytest.raises(ImageError, match="uint8"):
        to_float(pic.astype(np.float32))


# -- units ---------------------------------------------------------------------------------------------------
def test_unit_and_read_unit_forms():
    act = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ch = act[:, 1]
    torch.testing.assert_close(read_unit(act, 1, None), ch.mean((1, 2)))
    torch.testing.assert_close(read_unit(act, 1, "max"), ch.amax((1, 2)))
    torch.testing.assert_close(read_unit(act, 1, "center"), ch[:, 2, 2])
    torch.testing.assert_close(read_unit(act, 1, (3, 0)), ch[:, 3, 0])
    torch.testing.assert_close(read_unit(act.mean((2, 3)), 2, None), act.mean((2, 3))[:, 2])
    with pytest.raises(LayerError, match="outside"):
        read_unit(act, 1, (4, 0), "l")
    with pytest.raises(LayerError, match="outside"):
        read_unit(act, 3, None, "l")
    assert unit("a.b", 3) == Unit("a.b", 3, None)
    assert unit("a.b", 3, [1, 2]).position == (1, 2)
    assert str(unit("a", 1, (2, 3))) == "a channel 1 at (row=2, col=3)"
    for bad in [(-1, 0), (1.5, 2), "middle"]:
        with pytest.raises(LayerError, match="position"):
            unit("a", 0, bad)
    with pytest.raises(LayerError, match="channel"):
        unit("a", -2)


@pytest.mark.parametrize("spec, expected", [(None, [0, 1, 2, 3, 4, 5]), ("all", [0, 1, 2, 3, 4, 5]),
                                            ("0,4,2-3", [0, 2, 3, 4]), (5, [5]), ([3, 1, 3], [1, 3])])
def test_parse_channels(spec, expected):
    assert parse_channels(spec, 6) == expected


@pytest.mark.parametrize("spec, msg", [("1-x", "bad channel list"), ("4-2", "bad channel list"), ("7", "outside"),
                                       ([], "no channels")])
def test_parse_channels_errors(spec, msg):
    with pytest.raises(CnnscopeError, match=msg):
        parse_channels(spec, 6)


# -- batching ------------------------------------------------------------------------------------------------
def test_batch_size_defaults_by_device_and_chunks():
    assert resolve_batch_size(None, "cpu", cpu=8, gpu=32) == 8
    assert resolve_batch_size(None, torch.device("cuda", 0), cpu=8, gpu=32) == 32
    assert resolve_batch_size(5, "cpu") == 5
    for bad in (0, -1, 2.5, True):
        with pytest.raises(CnnscopeError, match="images per forward"):
            resolve_batch_size(bad, "cpu")
    assert [(s.start, s.stop) for s in chunks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert list(chunks(0, 3)) == []


# -- registry ------------------------------------------------------------------------------------------------
def test_registry_decorators_duplicates_and_scopes():
    reg: Registry = Registry("widget")

    @reg.register
    class A:
        name = "a"

    @reg.register("b")
    class B:
        pass

    assert reg.names() == ["a", "b"] and reg.get("b") is B and "a" in reg and len(reg) == 2
    with pytest.raises(RegistryError, match="already registered"):
        @reg.register("a")
        class A2:
            pass
    with pytest.raises(RegistryError, match="needs a non-empty name"):
        reg.register(type("Nameless", (), {}))
    with pytest.raises(MethodError, match="unknown widget 'c'"):
        reg.get("c")
    with reg.scoped():
        reg.register("c")(object)
        assert "c" in reg
    assert "c" not in reg


def test_registry_imports_its_package_on_first_read(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from cnnscope.registry import Registry\nREG = Registry('plugin', "
                                     "package='plugins_pkg')\n")
    (pkg / "first.py").write_text("from . import REG\n\n@REG.register\nclass One:\n    name = 'one'\n")
    (pkg / "second.py").write_text("from . import REG\n\n@REG.register('two')\ndef two():\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("plugins_pkg")
    assert mod.REG.names() == ["one", "two"]  # found without any list naming them
    assert mod.REG.get("two")() == 2
