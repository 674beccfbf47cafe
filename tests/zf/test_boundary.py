"""Decision planes: equal to the analytic answer for a linear classifier, and to direct predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.errors import CnnscopeError
from cnnscope.models import wrap
from cnnscope.zf import decision_plane
from tests.conformance import assert_unchanged
from tests.models import GapLinearNet


def _images(n: int, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_linear_classifier_matches_the_closed_form():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    model = wrap(lin, 8, labels=list("abcd"))
    imgs = _images(3)
    p = decision_plane(model, imgs, resolution=9, batch_size=10)
    x = torch.stack([model.preprocess(i)[0] for i in imgs])
    with torch.no_grad():
        z0, z1, z2 = lin(x)  # logits are affine in the plane coordinates
    a, b = torch.meshgrid(p.betas, p.alphas, indexing="ij")[::-1]
    logits = z0 + a[..., None] * (z1 - z0) + b[..., None] * (z2 - z0)
    assert torch.equal(p.classes, logits.argmax(-1)) and p.classes.device.type == "cpu"
    torch.testing.assert_close(p.confidence, logits.softmax(-1).amax(-1), rtol=1e-4, atol=1e-6)
    assert p.marks == [("0", 0.0, 0.0), ("1", 1.0, 0.0), ("2", 0.0, 1.0)]


def test_images_sit_at_their_marks_and_are_classified_as_the_model_does():
    model = wrap(GapLinearNet().train(), 8, labels=["a", "b", "c"])
    imgs = _images(3)
    p = assert_unchanged(model.module, lambda: decision_plane(model, imgs, resolution=5, span=(0.0, 1.0)))
    assert p is None
    p = decision_plane(model, imgs, resolution=5, span=(0.0, 1.0))
    preds = [model.predict(i, k=1)[0][0][0] for i in imgs]
    assert int(p.classes[0, 0]) == preds[0] and int(p.classes[0, -1]) == preds[1] and int(p.classes[-1, 0]) == preds[2]


def test_one_image_with_random_or_given_directions():
    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    img = _images(1)
    p1 = decision_plane(model, img, resolution=5, seed=3)
    p2 = decision_plane(model, img, resolution=5, seed=3)
    assert torch.equal(p1.classes, p2.classes) and p1.mode == "directions"
    mid = 2  # alpha = beta = 0 is the image itself
    assert int(p1.classes[mid, mid]) == model.predict(img[0], k=1)[0][0][0]
    d = [torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)]
    flat = decision_plane(model, img, directions=d, resolution=3)
    assert len(set(flat.classes.flatten().tolist())) == 1  # zero directions: the whole plane is the image


def test_bad_inputs():
    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    with pytest.raises(CnnscopeError, match="three images"):
        decision_plane(model, _images(2))
    with pytest.raises(CnnscopeError, match="two directions"):
        decision_plane(model, _images(1), directions=[torch.zeros(3, 4, 4)] * 2)
    with pytest.raises(CnnscopeError, match="empty"):
        decision_plane(model, [])
    with pytest.raises(TypeError):
        decision_plane(model, _images(3), None)  # options are keyword-only


def test_a_plain_module_and_its_wrapper_give_the_same_plane():
    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    x = model.batch(_images(3))
    a = decision_plane(model, x, resolution=5, batch_size=7)
    b = decision_plane(model.module, x, resolution=5)
    assert torch.equal(a.classes, b.classes)
    torch.testing.assert_close(a.confidence, b.confidence)


# -- the legend: every class on the grid once, each in its own colour, the images' classes always named --------


def _many_class_plane(resolution: int = 15):
    """A nearest-centre classifier (linear: logit_k = 2 <x, c_k> - |c_k|^2) with 49 centres on the images' plane,
    so dozens of classes share it."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 49))
    model = wrap(lin, 8, labels=[f"c{i}" for i in range(49)])
    x = model.batch(_images(3)).flatten(1)
    grid = torch.linspace(-0.4, 1.4, 7)
    centres = torch.stack([x[0] + a * (x[1] - x[0]) + b * (x[2] - x[0]) for a in grid for b in grid])
    with torch.no_grad():
        lin[1].weight.copy_(2 * centres)
        lin[1].bias.copy_(-(centres ** 2).sum(1))
    return model, decision_plane(model, _images(3), resolution=resolution)


def _check_legend(legend, classes, mark_classes, labels):
    grid = [int(c) for c in np.unique(np.asarray(classes))]
    listed = [e["class"] for e in legend]
    assert len(listed) == len(set(listed)), "a class is listed twice"
    assert set(grid) <= set(listed) and set(mark_classes) <= set(listed)
    assert set(listed) == set(grid) | set(mark_classes), "the legend names a class that is nowhere"
    colors = [e["color"] for e in legend]
    assert len(set(colors)) == len(colors), "a colour is reused"
    assert all(len(c) == 7 and c[0] == "#" and int(c[1:], 16) >= 0 for c in colors)
    assert all(e["label"] == labels[e["class"]] for e in legend)
    area = {c: int((np.asarray(classes) == c).sum()) for c in listed}
    assert [area[c] for c in listed] == sorted(area.values(), reverse=True), "legend not ordered by area"


def test_legend_names_every_class_of_the_grid_in_its_own_colour():
    from matplotlib.colors import to_hex

    from cnnscope.plot.boundary import boundary_figure, class_legend

    model, p = _many_class_plane()
    legend = class_legend(p.classes, p.labels, required=p.mark_classes)
    assert len(legend) > 20  # more classes than one 20-colour map holds
    _check_legend(legend, p.classes, p.mark_classes, p.labels)
    fig = boundary_figure(p, legend=legend)
    drawn = fig.axes[1].get_legend()  # the legend as drawn: same classes, same order, same colours
    assert [t.get_text().split(" (")[0] for t in drawn.get_texts()] == [e["label"] for e in legend]
    assert [to_hex(h.get_facecolor()) for h in drawn.legend_handles] == [e["color"] for e in legend]
    rgb = fig.axes[0].images[0].get_array()  # every cell painted in its class's legend colour
    color = {e["class"]: e["color"] for e in legend}
    for (r, c), k in np.ndenumerate(p.classes.numpy()):
        assert to_hex(rgb[r, c]) == color[int(k)]


def test_the_images_classes_are_their_own_predictions_even_off_the_grid():
    from cnnscope.plot.boundary import class_legend

    model = wrap(GapLinearNet(), 8, labels=["a", "b", "c"])
    imgs = _images(3)
    p = decision_plane(model, imgs, resolution=4)  # -0.5, 0.17, 0.83, 1.5: no grid point on an image
    assert p.mark_classes == [model.predict(i, k=1)[0][0][0] for i in imgs]
    grid = {int(c) for c in p.classes.unique()}
    legend = class_legend(torch.zeros(4, 4, dtype=torch.long), {0: "a", 1: "b", 2: "c"}, required=[2, 1, 2])
    assert [e["class"] for e in legend] == [0, 2, 1]  # required classes after the grid's, once each
    assert set(p.labels) == grid | set(p.mark_classes)
    assert p.to_dict()["mark_classes"] == p.mark_classes


def test_distinct_colors_never_repeat():
    from cnnscope.plot.boundary import distinct_colors

    cols = distinct_colors(300)
    assert len(set(cols)) == 300 and cols[:3] == distinct_colors(3)


def test_boundary_command_writes_the_legend_as_drawn(tmp_path, capsys):
    import json

    from cnnscope.cli import main

    model, plane = _many_class_plane()
    path = tmp_path / "lin.pt"
    model.module.input_size = (8, 8)  # read by the adapter; the mean/std are ImageNet's, as wrap()'s
    torch.save(model.module, path)
    imgs = []
    for k, img in enumerate(_images(3)):
        imgs.append(tmp_path / f"i{k}.png")
        from cnnscope.images import save_image

        save_image(img, imgs[-1])
    code = main(["boundary", str(path), *map(str, imgs), "--trust-pickle", "--resolution", "9",
                 "--out", str(tmp_path / "b")])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "b" / "boundary.json").read_text())
    labels = {int(k): v for k, v in data["labels"].items()}
    _check_legend(data["legend"], data["classes"], data["mark_classes"], labels)
    assert len(data["legend"]) > 12 and f"{len(data['legend'])} classes in the legend" in out


@pytest.mark.slow
def test_boundary_on_lite0_names_every_class_of_the_plane(tmp_path, capsys):
    import json

    from cnnscope.cli import main

    code = main(["boundary", "efficientnet_lite0", "sample:chelsea", "sample:coffee", "sample:rocket",
                 "--resolution", "9", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "boundary.json").read_text())
    labels = {int(k): v for k, v in data["labels"].items()}
    _check_legend(data["legend"], data["classes"], data["mark_classes"], labels)
    named = {e["label"] for e in data["legend"]}
    assert {"espresso", "missile"} <= named and len(data["legend"]) > 16  # more than the old 16-entry cap
    assert "coffee: espresso (967)" in out
