"""Image loading: every common format is converted to uint8 RGB; bad input names the file and the reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnscope.images import ImageError, load_image, sample_images, save_image, to_float, to_uint8


def test_modes_are_converted(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    cases = {
        "rgb.png": Image.fromarray(rgb),
        "grey.png": Image.fromarray(grey),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((9, 7), 255, np.uint8)])),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (9, 7, 3), name
    assert np.array_equal(load_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgb)
    assert np.array_equal(load_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))


def test_sixteen_bit_and_alpha_compositing(tmp_path):
    arr16 = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out[:, :, 0].tolist() == [[0, 255], [128, 1]]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest transparent -> white
    out = load_image(rgba)
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]


def test_arrays_in_every_layout():
    f = np.linspace(0, 1, 12).reshape(3, 4)
    assert load_image(f).shape == (3, 4, 3)
    chw = np.zeros((3, 5, 6), np.float32)
    assert load_image(chw).shape == (5, 6, 3)
    assert load_image(np.ones((2, 2), bool))[0, 0].tolist() == [255, 255, 255]
    assert load_image(np.full((2, 2, 3), 200.0))[0, 0, 0] == 200  # 0..255 floats


@pytest.mark.parametrize("bad, reason", [
    (np.zeros((2, 2, 5)), "shape"),
    (np.zeros((4,)), "shape"),
    (np.full((2, 2), -3.0), r"\[0, 1\]"),
    (np.array([[np.nan]]), "NaN"),
])
def test_bad_arrays(bad, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(bad)


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.txt: not an image"):
        load_image(tmp_path / "notes.txt")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageError, match=r"broken\.png"):
        load_image(broken)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="type"):
        load_image(42)


def test_sample_images_are_real_photos():
    imgs = sample_images(["chelsea", "coffee"])
    assert imgs["chelsea"].shape == (300, 451, 3) and imgs["coffee"].shape == (400, 600, 3)
    assert all(im.dtype == np.uint8 and im.std() > 20 for im in imgs.values())
    with pytest.raises(ImageError, match="did you mean"):
        sample_images(["chelsey"])


def test_float_roundtrip_and_save(tmp_path):
    img = sample_images(["coffee"])["coffee"]
    t = to_float(img)
    assert t.shape == (1, 3, 400, 600) and float(t.max()) <= 1.0
    assert np.array_equal(to_uint8(t[0]), img)
    path = save_image(img, tmp_path / "sub" / "c.png")
    assert np.array_equal(load_image(path), img)
