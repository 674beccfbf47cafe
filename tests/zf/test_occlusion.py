"""The occlusion study (paper Fig. 7): real maps on EfficientNet-Lite0, exact batching on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.errors import CnnscopeError, ImageError, LayerError
from cnnscope.models import AssumptionWarning, wrap
from cnnscope.zf import occlusion_study
from cnnscope.zf.occlusion_study import positions
from tests.conformance import assert_unchanged
from tests.models import InplaceReLUNet, ResidualNet

#: chelsea's head at 224x224 (rows, cols): eyes, nose and cheeks, not the background on the right
CAT_FACE = (40, 20, 210, 185)


def test_positions_cover_the_image_with_the_last_square_flush():
    assert positions(10, 4, 3) == [0, 3, 6]
    assert positions(11, 4, 3) == [0, 3, 6, 7]
    assert positions(5, 5, 2) == [0]
    with pytest.raises(CnnscopeError):
        positions(5, 6, 1)


def test_probability_is_lowest_over_the_cat(lite0, samples, one_thread):
    s = occlusion_study(lite0, samples["chelsea"], "blocks.5", size=56, stride=28, batch_size=25)
    assert s.label in ("Egyptian cat", "tabby", "tiger cat")
    assert s.probability.shape == s.activation.shape == s.top_class.shape == (7, 7)
    i = int(s.probability.argmin())
    r, c = divmod(i, len(s.lefts))
    ys, xs = s.centers()
    top, left, bottom, right = CAT_FACE
    assert top <= ys[r] <= bottom and left <= xs[c] <= right
    assert float(s.probability.min()) < 0.9 * s.base_probability
    # (b) and (d) are real model outputs: occluding changes them, somewhere by a lot
    assert float(s.activation.max() - s.activation.min()) > 0.05 * abs(s.base_activation)
    assert s.projection.method == "guided"  # Lite0 has residual blocks: the true deconvnet refuses
    assert s.projection.reason.startswith("the true deconvnet cannot invert 'blocks.1.1' (InvertedResidual)")
    assert s.projection.values.shape == (1, 3, 224, 224)
    assert s.image.shape == (224, 224, 3) and s.image.dtype == np.uint8
    assert s.probability.device == lite0.device


def test_every_map_entry_is_the_forward_of_that_occluded_image():
    net = InplaceReLUNet(num_classes=5).train()
    model = wrap(net, 20, labels=[f"c{i}" for i in range(5)])
    img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    s = assert_unchanged(net, lambda: occlusion_study(model, img, "features.5", size=6, stride=5, batch_size=3))
    assert s is None
    s = occlusion_study(model, img, "features.5", size=6, stride=5, batch_size=3, target=2)
    s1 = occlusion_study(model, img, "features.5", size=6, stride=5, batch_size=100, target=2)
    torch.testing.assert_close(s.probability, s1.probability)
    net.eval()
    for r, t in enumerate(s.tops):
        for c, left in enumerate(s.lefts):
            x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0)
            x[:, :, t:t + 6, left:left + 6] = 0.5
            with torch.no_grad():
                feats = net.features(model.normalize(x))
                prob = net(model.normalize(x)).softmax(1)[0]
            assert float(s.probability[r, c]) == pytest.approx(float(prob[2]), rel=1e-5, abs=1e-7)
            assert int(s.top_class[r, c]) == int(prob.argmax())
            assert float(s.activation[r, c]) == pytest.approx(float(feats[0, s.channel].sum()), rel=1e-5)
    net.train()
    assert s.projection.method == "deconvnet"  # a plain stack: the true deconvnet


def test_a_plain_module_and_its_wrapper_give_identical_maps():
    net = InplaceReLUNet(num_classes=5).eval()
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(1))  # model space: no resizing
    with pytest.warns(AssumptionWarning, match="ImageNet mean/std"):  # the grey square in model space needs them
        plain = occlusion_study(net, x, "features.5", size=6, stride=5, batch_size=4)
    wrapped = occlusion_study(wrap(net, 20), x[0], "features.5", size=6, stride=5)
    for name in ("activation", "probability", "top_class", "top_probability"):
        torch.testing.assert_close(getattr(plain, name), getattr(wrapped, name))
    torch.testing.assert_close(plain.projection.values, wrapped.projection.values)
    assert plain.channel == wrapped.channel and plain.target == wrapped.target
    assert np.array_equal(plain.image, wrapped.image)


def test_the_square_is_the_fill_grey_in_model_space():
    net = InplaceReLUNet(num_classes=5).eval()
    model = wrap(net, 12, labels=[f"c{i}" for i in range(5)])
    img = np.random.default_rng(2).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    s = occlusion_study(model, img, "features.5", size=12, stride=12, fill=0.25)
    grey = model.normalize(torch.full((1, 3, 12, 12), 0.25))  # the square covers the whole image
    with torch.no_grad():
        prob = net(grey).softmax(1)[0]
    assert float(s.probability[0, 0]) == pytest.approx(float(prob[s.target]), rel=1e-5)
    pre = occlusion_study(model, img, "features.5", size=6, stride=6, pre_activation=True, channel=1)
    conv = occlusion_study(model, img, "features.4", size=6, stride=6, channel=1)
    torch.testing.assert_close(pre.activation, conv.activation)  # features.5 is the ReLU after features.4
    torch.testing.assert_close(pre.projection.values, conv.projection.values)
    assert pre.pre_activation and pre.to_dict()["pre_activation"]


def test_bad_inputs():
    model = wrap(ResidualNet(), 16, labels=None)
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(LayerError, match="did you mean"):
        occlusion_study(model, img, "layer9")
    with pytest.raises(ImageError, match="one image, got 2"):
        occlusion_study(model, [img, img], "layer1")
    with pytest.raises(TypeError):
        occlusion_study(model, img, "layer1", None)  # options are keyword-only
    with pytest.raises(CnnscopeError, match="occluder size"):
        occlusion_study(model, img, "layer1", size=40)
    with pytest.raises(CnnscopeError, match="out of range"):
        occlusion_study(model, img, "layer1", size=8, target=7)
    err = assert_unchanged(model.module, lambda: occlusion_study(model, img, "fc", size=8))
    assert isinstance(err, LayerError) and "no spatial output" in str(err)


def test_the_most_probable_label_panel_names_every_class_in_its_own_colour():
    from matplotlib.colors import to_hex

    from cnnscope.plot.zf import occlusion_figure

    m = wrap(InplaceReLUNet(num_classes=10, seed=0), input_size=32)
    img = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    study = occlusion_study(m, img, "features.5", size=6, stride=3)
    fig = occlusion_figure(study)
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    handles = legend.legend_handles
    present = sorted(set(np.asarray(study.top_class).astype(int).flatten().tolist()))
    names = [h.get_label() for h in handles]
    colors = [to_hex(h.get_facecolor()) for h in handles]
    assert sorted(names) == sorted(study.labels[c][:22] for c in present)
    assert len(set(colors)) == len(colors)
