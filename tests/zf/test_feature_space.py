"""Feature-space view: on a net whose penultimate features are 2-D, PCA keeps everything, so the region at each
image's point is the model's own prediction; the regions are the head's classes on the plane."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.errors import CnnscopeError, LayerError
from cnnscope.models import wrap
from cnnscope.zf.feature_space import feature_space
from tests.conformance import assert_unchanged
from tests.zf.test_boundary import _check_legend

pytestmark = pytest.mark.usefixtures("single_thread")


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def _net(width: int = 2, classes: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, width), nn.Linear(width, classes))


def _images(n: int, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_two_dimensional_features_put_every_image_in_its_own_region():
    net = _net()
    model = wrap(net, 8, labels=list("abcd"))
    imgs = _images(12)
    with torch.no_grad():  # four classes around the features' mean: right, up, left, down
        f = net[:5](model.batch(imgs))
        w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) / f.std(0)
        net[5].weight.copy_(w)
        net[5].bias.copy_(-w @ f.mean(0))
    fs = assert_unchanged(net, lambda: feature_space(model, imgs, resolution=31))
    assert fs is None
    fs = feature_space(model, imgs, resolution=31, batch_size=5)
    x = model.batch(imgs)
    with torch.no_grad():
        feats, logits = net[:5](x), net(x)
    assert fs.layer == "4" and fs.head == "5"
    torch.testing.assert_close(fs.features, feats)
    torch.testing.assert_close(fs.mean + fs.coords @ fs.components, feats, rtol=1e-4, atol=1e-5)  # PCA loses nothing
    assert float(fs.explained.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(fs.predictions, logits.argmax(1)) and len(fs.predictions.unique()) >= 3
    assert torch.equal(fs.point_classes, fs.predictions) and fs.agreement == 1.0
    gy, gx = torch.meshgrid(fs.ys, fs.xs, indexing="ij")
    z = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        head = net[5](fs.mean + z @ fs.components)  # the head itself on the plane mapped back to feature space
    assert (fs.classes.flatten() == head.argmax(1)).float().mean() > 0.99  # ties within float rounding aside
    assert len(fs.classes.unique()) > 1 and set(fs.labels) >= set(fs.classes.unique().tolist())
    assert fs.coords[:, 0].min() > fs.xs[0] and fs.coords[:, 1].max() < fs.ys[-1]


def test_wider_features_are_an_approximation_that_is_reported():
    net = _net(width=5)
    model = wrap(net, 8)
    fs = feature_space(model.module, model.batch(_images(10)), resolution=5)
    assert fs.features.shape == (10, 5) and 0.0 < float(fs.explained.sum()) < 1.0
    with torch.no_grad():
        expect = net[5](fs.mean + fs.coords @ fs.components).argmax(1)
    assert torch.equal(fs.point_classes, expect)
    assert fs.agreement == float((fs.point_classes == fs.predictions).float().mean())


def test_layers_that_do_not_give_the_output_are_refused():
    model = wrap(nn.Sequential(*_net(), Scale()), 8)
    with pytest.raises(LayerError, match="is not the model's output"):
        feature_space(model, _images(4))
    with pytest.raises(LayerError, match="not an nn.Linear"):
        feature_space(model, _images(4), head="6")
    with pytest.raises(CnnscopeError, match="at least 3 images"):
        feature_space(wrap(_net(), 8), _images(2))
    with pytest.raises(LayerError, match="is not the model's output"):
        feature_space(wrap(_net(), 8), _images(3), layer="3", head="4")  # a linear layer, but not the last
    fs = feature_space(wrap(_net(), 8), _images(3), layer="4", head="5", resolution=3)  # named by hand
    assert fs.features.shape == (3, 2) and fs.classes.shape == (3, 3)



def test_featurespace_command_writes_points_regions_and_legend(tmp_path, capsys):
    from cnnscope.cli import main
    from cnnscope.images import save_image

    net = _net()
    net.input_size = (8, 8)
    torch.save(net, tmp_path / "net.pt")
    for i, img in enumerate(_images(5)):
        save_image(img, tmp_path / "imgs" / f"{i}.png")
    code = main(["featurespace", str(tmp_path / "net.pt"), str(tmp_path / "imgs"), "--trust-pickle",
                 "--resolution", "11", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "o" / "featurespace.json").read_text())
    assert len(data["coords"]) == 5 and data["agreement"] == 1.0 and np.asarray(data["classes"]).shape == (11, 11)
    labels = {int(k): v for k, v in data["labels"].items()}
    _check_legend(data["legend"], data["classes"], data["predictions"], labels)
    assert np.load(tmp_path / "o" / "features.npy").shape == (5, 2)
    assert (tmp_path / "o" / "featurespace.png").stat().st_size > 5000
    assert "100% of the images lie in their own predicted class's region" in out


@pytest.mark.slow
def test_lite0_feature_space_names_every_class(lite0, samples):
    from cnnscope.plot.boundary import class_legend

    names = ["chelsea", "coffee", "rocket", "astronaut"]
    fs = feature_space(lite0, {n: samples[n] for n in names}, resolution=21)
    assert (fs.layer, fs.head) == ("global_pool.flatten", "classifier") and fs.features.shape == (4, 1280)
    assert fs.predictions.tolist() == [lite0.predict(samples[n], k=1)[0][0][0] for n in names]
    legend = class_legend(fs.classes, fs.labels, required=fs.predictions.tolist())
    _check_legend(legend, fs.classes, fs.predictions.tolist(), fs.labels)
