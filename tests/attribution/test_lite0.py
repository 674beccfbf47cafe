"""Attribution on the pretrained EfficientNet-Lite0 (in-place ReLU6) and skimage's real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.attribution import attribute, auto_layer, explain
from tests.conformance import assert_unchanged

#: (x0, y0, x1, y1) in skimage's 451x300 ``chelsea``: the cat. Everything right of x=390 (and so outside the
#: box) is the blurred room behind it. Read once off the photo.
CAT_BOX = (20, 0, 390, 300)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
pytestmark = pytest.mark.usefixtures("single_thread")  # 2 threads on 2 shared cores stall badly under load


def box_mask(box, photo_hw=(300, 451), size=(224, 224)) -> torch.Tensor:
    """The box as a boolean ``[H, W]`` mask in the model's 224x224 input (the photo is resized, not cropped)."""
    x0, y0, x1, y1 = box
    sy, sx = size[0] / photo_hw[0], size[1] / photo_hw[1]
    m = torch.zeros(size, dtype=torch.bool)
    m[round(y0 * sy):round(y1 * sy), round(x0 * sx):round(x1 * sx)] = True
    return m


@pytest.fixture(scope="module")
def chelsea(lite0, samples):
    assert samples["chelsea"].shape == (300, 451, 3)
    return lite0.preprocess(samples["chelsea"])


def test_auto_layer_is_the_last_spatial_block(lite0):
    assert auto_layer(lite0.module) == "bn2"  # 1280x7x7, just before global pooling


def test_gradcam_peak_lies_on_the_cat(lite0, chelsea):
    a = attribute(lite0, chelsea, "gradcam")
    assert a.target[0] in CAT_CLASSES and a.layer == "bn2" and a.values.shape == (1, 1, 7, 7)
    cam = a.values[0, 0]
    k = int(cam.argmax())
    px, py = (k % 7 + 0.5) / 7 * 451, (k // 7 + 0.5) / 7 * 300  # the peak cell's centre in photo pixels
    x0, y0, x1, y1 = CAT_BOX
    assert x0 <= px <= x1 and y0 <= py <= y1, (px, py)
    up = a.heatmap()[0]
    inside, outside = up[box_mask(CAT_BOX)].mean(), up[~box_mask(CAT_BOX)].mean()
    assert inside > 3 * outside, (float(inside), float(outside))


def test_occluding_the_cat_lowers_its_probability(lite0, chelsea):
    with torch.no_grad():
        p = lite0.module(chelsea).softmax(1)[0]
        hidden = chelsea.clone()
        hidden[..., box_mask(CAT_BOX)] = 0.0  # the mean colour in normalised space
        q = lite0.module(hidden).softmax(1)[0]
    top = int(p.argmax())
    assert top in CAT_CLASSES
    assert float(q[top]) < 0.5 * float(p[top])
    assert float(q[list(CAT_CLASSES)].sum()) < float(p[list(CAT_CLASSES)].sum()) - 0.2


def test_occlusion_windows_equal_direct_forwards(lite0, chelsea):
    # Partial occlusions of this photo *raise* the Egyptian-cat probability (the fur is everywhere and a grey
    # patch pushes tabby/Egyptian cat apart), so there is no "higher on the face" claim to test; instead the
    # batched windows must equal one forward per occluded copy.
    a = attribute(lite0, chelsea, "occlusion", window=112, stride=112, score="prob", batch_size=3)
    assert a.values.shape == chelsea.shape
    cls = a.target[0]
    with torch.no_grad():
        p = lite0.module(chelsea).softmax(1)[0, cls]
        for y0 in (0, 112):
            for x0 in (0, 112):
                hidden = chelsea.clone()
                hidden[..., y0:y0 + 112, x0:x0 + 112] = 0.0
                drop = p - lite0.module(hidden).softmax(1)[0, cls]
                block = a.values[0, :, y0:y0 + 112, x0:x0 + 112]
                torch.testing.assert_close(block, torch.full_like(block, float(drop)), rtol=1e-4, atol=1e-6)


def test_guided_methods_on_inplace_relu6_leave_lite0_unchanged(lite0, chelsea):
    got = {}

    def run():
        for method in ("guided_backprop", "deconvnet", "guided_gradcam", "saliency"):
            got[method] = attribute(lite0, chelsea, method, target="tabby")

    assert assert_unchanged(lite0.module, run) is None
    for method, a in got.items():
        assert a.target == [281] and a.spec["target"]["labels"] == ["tabby (281)"]
        assert torch.isfinite(a.values).all() and a.values.abs().sum() > 0, method
    # the rule changes the gradient: guided backprop is not the plain gradient
    assert not torch.allclose(got["guided_backprop"].values, got["saliency"].values)


def test_explain_gives_predictions_maps_and_a_panel(lite0, samples, tmp_path):
    from cnnscope.plot.attribution import panel_figure, save_panel

    got = {}
    err = assert_unchanged(lite0.module, lambda: got.setdefault("e", explain(
        lite0, [samples["chelsea"], samples["coffee"]], methods=["gradcam", "saliency"], names=["chelsea", "coffee"])))
    assert err is None, err
    cat, coffee = got["e"]
    assert cat.predicted[0] in CAT_CLASSES and coffee.predicted[1] == "espresso"
    assert cat.image.shape == (224, 224, 3) and cat.image.dtype == np.uint8
    assert cat.target == f"{cat.predicted[1]} ({cat.predicted[0]})"
    assert cat.target_probability == pytest.approx(cat.predicted[2])
    overlays = coffee.overlays()
    assert set(overlays) == {"gradcam", "saliency"}
    assert all(o.shape == (224, 224, 3) and o.dtype == np.uint8 for o in overlays.values())
    fig = panel_figure(cat)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 3 and cat.predicted[1] in titles[0] and "%" in titles[0]
    assert titles[1].startswith("Grad-CAM") and "bn2" in titles[1]
    path = save_panel(cat, tmp_path / "panel.png")
    assert path.stat().st_size > 10_000
    summary = cat.to_dict()
    assert summary["methods"]["gradcam"]["layer"] == "bn2" and summary["top"][0]["index"] == cat.predicted[0]
    # a model-space tensor is explained as it is and shown as the model sees it
    x = lite0.preprocess(samples["chelsea"])
    [again] = explain(lite0, x, methods=["gradcam"])
    assert again.name == "image0" and np.array_equal(again.image, lite0.deprocess(x))
    torch.testing.assert_close(again.results["gradcam"].values, cat.results["gradcam"].values)
