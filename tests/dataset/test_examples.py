"""Streaming statistics versus brute force on tiny CNNs; merging; files; the pretrained model on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.capture import Capture, evaluating
from cnnscope.dataset import DatasetStats, collect_statistics, crop, crops, open_source
from cnnscope.dataset.histograms import LogBins
from cnnscope.dataset.ranking import priorities
from cnnscope.errors import CnnscopeError, LayerError
from cnnscope.models import AssumptionWarning, wrap
from tests.conformance import assert_unchanged
from tests.models import ReLU6Net

from .helpers import SIZE, RandomImages, brute_ranking, brute_values, tiny

N_IMAGES = 12


@pytest.fixture(scope="module")
def data():
    return RandomImages(N_IMAGES)


@pytest.fixture(scope="module")
def model():
    return tiny("relu6")


@pytest.fixture(scope="module")
def reference(model, data):
    """One pass over the inputs of the two ReLU6 modules (pre-activation), batch 4, no workers."""
    return collect_statistics(model, data, ["act1", "act2"], pre_activation=True, k=5, bottom_k=4, band_samples=3,
                              batch_size=4, receptive_field="exact")


@pytest.fixture(scope="module")
def outputs(model, data):
    """One pass over the outputs of a ReLU6 module and a convolution."""
    return collect_statistics(model, data, ["act2", "pw"], k=5, bottom_k=4, band_samples=3, batch_size=4,
                              receptive_field=None)


@pytest.mark.parametrize("pre", [True, False])
@pytest.mark.parametrize("batch_size,workers", [(2, 0), (5, 0), (12, 0), (3, 2)])
def test_top_and_bottom_k_equal_brute_force(model, data, batch_size, workers, pre):
    layers = ["act2"] if pre else ["act2", "pw"]
    stats = collect_statistics(model, data, layers, pre_activation=pre, k=5, bottom_k=4, batch_size=batch_size,
                               num_workers=workers, receptive_field=None)
    for layer in layers:
        values = brute_values(model, data.images, layer, pre)
        assert stats[layer].pre_activation is pre
        for which, k, largest in (("top", 5, True), ("bottom", 4, False)):
            want = brute_ranking(values, k, largest)
            got = getattr(stats[layer], which)
            np.testing.assert_array_equal(got.image_ids.numpy(), want["ids"])
            np.testing.assert_array_equal(got.ys.numpy(), want["ys"])
            np.testing.assert_array_equal(got.xs.numpy(), want["xs"])
            np.testing.assert_allclose(got.values.numpy(), want["values"], rtol=1e-6, atol=1e-6)


def test_histograms_count_every_position_and_match_a_searchsorted_binning(model, data, reference, outputs):
    bins = reference.bins
    lower, upper = bins.bin_bounds()
    for stats, layer, pre in ((reference, "act1", True), (reference, "act2", True), (outputs, "act2", False),
                              (outputs, "pw", False)):
        ls = stats[layer]
        values = brute_values(model, data.images, layer, pre)
        n, c, h, w = values.shape
        assert ls.count == n * h * w
        assert (ls.hist.sum(dim=1) == n * h * w).all()
        assert (ls.hist_output.sum(dim=1) == n * h * w).all()
        flat = values.transpose(1, 0, 2, 3).reshape(c, -1).astype(np.float64)
        for ch in range(c):
            v = flat[ch]
            # independent binning: positive values by their lower bound, negative ones by their upper bound
            idx = np.where(v > 0, np.searchsorted(lower, v, side="right") - 1, 0)
            neg = v < 0
            idx[neg] = np.searchsorted(upper, v[neg], side="left")
            small = np.abs(v) < 2.0 ** bins.min_exp
            idx[small & (v == 0)] = bins.zero_bin
            idx[small & (v > 0)] = bins.zero_bin + 1
            idx[small & (v < 0)] = bins.zero_bin - 1
            np.testing.assert_array_equal(ls.hist[ch].numpy(), np.bincount(idx, minlength=bins.n_bins))
        np.testing.assert_allclose(ls.mean.numpy(), flat.mean(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ls.std.numpy(), flat.std(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ls.positive.numpy(), (flat > 0).sum(axis=1))
        np.testing.assert_allclose(ls.minimum.numpy(), flat.min(axis=1), rtol=1e-6)
        np.testing.assert_allclose(ls.maximum.numpy(), flat.max(axis=1), rtol=1e-6)


def test_output_histogram_of_relu6_equals_the_histogram_of_its_outputs(model, data, reference, outputs):
    act = brute_values(model, data.images, "act2", pre=False)
    c = act.shape[1]
    flat = torch.from_numpy(act.transpose(1, 0, 2, 3).reshape(c, -1).copy())
    bins = reference.bins
    want = np.stack([np.bincount(bins.lookup(flat[ch]).numpy(), minlength=bins.n_bins) for ch in range(c)])
    ls = reference["act2"]
    np.testing.assert_array_equal(ls.hist_output.numpy(), want)  # the pre histogram remapped exactly
    np.testing.assert_array_equal(outputs["act2"].hist.numpy(), want)  # the outputs read directly
    np.testing.assert_allclose(ls.moments_output.mean.numpy(), flat.double().mean(dim=1).numpy(), rtol=1e-5,
                               atol=1e-6)
    assert act.max() <= 6.0 and ls.hist_output[:, bins.lookup(torch.tensor([6.5])).item():].sum() == 0


def test_pre_activation_is_the_input_of_relu_in_closed_form():
    """A 1x1 convolution then a ReLU: the pre-activation is ``W x + b`` per pixel (computed here from the pixels),
    the output ``max(W x + b, 0)``; statistics of both agree with these closed forms."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU())
    w = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, 0.5]])
    b = torch.tensor([0.0, -0.6])
    with torch.no_grad():
        net[0].weight.copy_(w[:, :, None, None])
        net[0].bias.copy_(b)
    model = wrap(net, input_size=(6, 5), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    images = RandomImages(5, size=(6, 5), seed=3)
    x = images.images.astype(np.float64) / 255.0  # [N, h, w, 3]
    pre = np.einsum("nhwk,ck->cnhw", x, w.double().numpy()).reshape(2, -1) + b.double().numpy()[:, None]
    post = np.maximum(pre, 0.0)
    kw = dict(k=3, receptive_field=None, batch_size=2)
    before = collect_statistics(model, images, ["1"], pre_activation=True, **kw)["1"]
    after = collect_statistics(model, images, ["1"], **kw)["1"]
    for ls, want in ((before, pre), (after, post)):
        np.testing.assert_allclose(ls.maximum.numpy(), want.max(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ls.minimum.numpy(), want.min(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ls.mean.numpy(), want.mean(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ls.top.values[0].numpy(), np.sort(want[0])[::-1][:3], rtol=1e-5, atol=1e-6)
    assert float(before.minimum.min()) < 0 and float(after.minimum.min()) == 0.0  # the ReLU removes the negatives
    np.testing.assert_array_equal(before.positive.numpy(), after.positive.numpy())
    np.testing.assert_array_equal(before.hist_output.numpy(), after.hist.numpy())
    np.testing.assert_allclose(before.moments_output.mean.numpy(), post.mean(axis=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(LayerError, match="not activations"):
        collect_statistics(model, images, ["0"], pre_activation=True, **kw)


def test_a_plain_module_and_its_wrap_give_the_same_statistics(data):
    """A plain module is wrapped with the defaults of ``wrap`` (ImageNet mean/std, said once) and the input size it
    carries."""
    net = ReLU6Net()
    net.input_size = SIZE
    kw = dict(k=3, bottom_k=2, band_samples=2, batch_size=6, receptive_field=None)
    with pytest.warns(AssumptionWarning):
        plain = collect_statistics(net, data, ["act2", "pw"], **kw)
    wrapped = collect_statistics(wrap(net, input_size=SIZE), data, ["act2", "pw"], **kw)
    assert plain.input_size == wrapped.input_size == SIZE
    for layer in ("act2", "pw"):
        a, b = plain[layer], wrapped[layer]
        for part in ("top", "bottom", "bands"):
            for f in ("values", "image_ids", "ys", "xs"):
                torch.testing.assert_close(getattr(getattr(a, part), f), getattr(getattr(b, part), f),
                                           equal_nan=True)
        torch.testing.assert_close(a.hist, b.hist)
        torch.testing.assert_close(a.moments.mean, b.moments.mean)


def test_band_samples_are_the_lowest_priority_positions_of_each_band(model, data, reference):
    ls, bins = reference["act2"], reference.bins
    values = brute_values(model, data.images, "act2", True)
    n, c, h, w = values.shape
    keys = torch.arange(n * h * w)
    prio = priorities(keys, reference.seed).numpy()
    flat = torch.from_numpy(values.transpose(1, 0, 2, 3).reshape(c, -1).copy())
    for ch in range(c):
        band = bins.lookup(flat[ch], "band").numpy()
        for b in np.unique(band):
            members = np.flatnonzero(band == b)
            order = members[np.lexsort((members, prio[members]))][:reference.band_samples]
            got = ls.bands.image_ids[ch, b].numpy()
            got = got[got >= 0]
            assert len(got) == len(order)
            np.testing.assert_array_equal(got, order // (h * w))
            np.testing.assert_array_equal(ls.bands.ys[ch, b, :len(order)].numpy(), (order % (h * w)) // w)
            np.testing.assert_array_equal(ls.bands.values[ch, b, :len(order)].numpy(), flat[ch].numpy()[order])
    samples = reference.band_examples("act2", 0, 0.0, 1e9)
    assert samples and all(s.value >= 0 for s in samples)
    assert reference.band_count("act2", 0, 0.0, float("inf")) == int(ls.positive[0]) + (flat[0] == 0).sum().item()


def test_merging_two_halves_equals_one_pass(model, data, reference):
    src = open_source(data)
    kw = dict(pre_activation=True, k=5, bottom_k=4, band_samples=3, batch_size=4, receptive_field="exact")
    a = collect_statistics(model, src.subset(range(0, 6)), ["act1", "act2"], **kw)
    b = collect_statistics(model, src.subset(range(6, N_IMAGES)), ["act1", "act2"], **kw)  # no 1-image batch
    for merged in (a.merge(b), b.merge(a)):
        assert merged.images == N_IMAGES and merged.id_ranges == [(0, N_IMAGES)]
        for layer, want in reference.layers.items():
            got = merged[layer]
            for part in ("top", "bottom", "bands"):
                for field in ("values", "image_ids", "ys", "xs", "boxes"):
                    np.testing.assert_array_equal(getattr(getattr(got, part), field).numpy(),
                                                  getattr(getattr(want, part), field).numpy(),
                                                  err_msg=f"{layer} {part}")
            torch.testing.assert_close(got.hist, want.hist, rtol=0, atol=0)
            torch.testing.assert_close(got.hist_output, want.hist_output, rtol=0, atol=0)
            torch.testing.assert_close(got.positive, want.positive, rtol=0, atol=0)
            torch.testing.assert_close(got.mean, want.mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(got.std, want.std, rtol=1e-5, atol=1e-7)
    with pytest.raises(CnnscopeError, match="both contain image ids"):
        a.merge(a)


def test_batches_in_nchw_give_the_same_statistics(model, data, reference):
    stats = collect_statistics(model, data, ["act1", "act2"], pre_activation=True, k=5, bottom_k=4, band_samples=3,
                               batch_size=4, receptive_field=None, channels_last=False)
    for layer, want in reference.layers.items():
        got = stats[layer]
        for part in ("top", "bottom", "bands"):
            for field in ("image_ids", "ys", "xs"):
                torch.testing.assert_close(getattr(getattr(got, part), field), getattr(getattr(want, part), field),
                                           rtol=0, atol=0)
            torch.testing.assert_close(getattr(got, part).values, getattr(want, part).values, rtol=1e-6, atol=1e-6,
                                       equal_nan=True)
        torch.testing.assert_close(got.hist, want.hist, rtol=0, atol=0)
        torch.testing.assert_close(got.hist_output, want.hist_output, rtol=0, atol=0)
        torch.testing.assert_close(got.std, want.std, rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(reference, tmp_path):
    path = reference.save(tmp_path / "stats.npz")
    back = DatasetStats.load(path)
    assert back.names == reference.names and back.bins == reference.bins and back.k == reference.k
    for layer, ls in reference.layers.items():
        got = back[layer]
        assert got.pre_activation
        torch.testing.assert_close(got.top.values, ls.top.values, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(got.bands.priority, ls.bands.priority, rtol=0, atol=0)
        torch.testing.assert_close(got.hist_output, ls.hist_output, rtol=0, atol=0)
        np.testing.assert_array_equal(got.rf.boxes, ls.rf.boxes)
        assert got.moments.count == ls.moments.count
    assert back.examples("act2", 1) == reference.examples("act2", 1)
    with pytest.raises(CnnscopeError, match="not a cnnscope statistics file"):
        DatasetStats.load(tmp_path.joinpath("bad.npz").write_bytes(b"nope") and tmp_path / "bad.npz")


def test_examples_carry_receptive_field_boxes_and_crops(model, data, reference):
    ex = reference.examples("act2", 2)
    rf = reference["act2"].rf
    assert len(ex) == 5 and ex[0].value >= ex[-1].value
    for e in ex:
        assert e.box == rf.box(e.y, e.x)
    patches = crops(model, reference, "act2", channel=2, source=data)
    assert patches.dtype == np.uint8 and patches.shape == (5,) + rf.size + (3,)
    unclipped = 0
    for e, patch in zip(ex, patches):
        t, left, b, r = e.box
        np.testing.assert_array_equal(crop(data.images[e.image_id], e.box), data.images[e.image_id][t:b, left:r])
        if (b - t, r - left) == rf.size:  # a box inside the image: the crop is that part of the image
            np.testing.assert_array_equal(patch, data.images[e.image_id][t:b, left:r])
            unclipped += 1
        else:  # clipped by the border: padded with grey to the receptive field's size
            assert (patch == 128).all(axis=-1).sum() >= rf.size[0] * rf.size[1] - (b - t) * (r - left)
    assert unclipped
    bottom = crops(model, reference, "act2", channel=2, source=data, which="bottom")
    assert bottom.shape == (4,) + rf.size + (3,)
    with pytest.raises(CnnscopeError, match="receptive-field"):
        crops(model, collect_statistics(model, data, ["act2"], k=1, receptive_field=None), "act2", channel=0,
              source=data)


def test_unreadable_images_are_reported_and_skipped(model, data, tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(data.images[i]).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "sub").mkdir()
    Image.fromarray(data.images[3]).save(tmp_path / "sub" / "deep.jpg")
    stats = collect_statistics(model, tmp_path, ["act2"], k=2, batch_size=2, receptive_field=None)
    assert stats.images == 4 and stats.n_skipped == 1
    assert "broken.png" in stats.skipped[0][0]


def test_the_model_is_left_unchanged(model, data):
    net = model.module
    net.train()
    assert assert_unchanged(net, lambda: collect_statistics(model, data, ["act2"], k=2, receptive_field="fast")) \
        is None
    assert net.training
    err = assert_unchanged(net, lambda: collect_statistics(model, data, ["act_2"], k=2))
    assert isinstance(err, LayerError) and "act2" in str(err)
    net.eval()


def test_pretrained_model_examples_are_real_activations(lite0):
    """On the embedded EfficientNet-Lite0 and skimage photos: every recorded top example is the activation the model
    gives at that image and position, and the pre-ReLU6 statistics behave like the article's (sparse positives)."""
    layer = "blocks.3.0.bn1.act"
    source = open_source("sample:chelsea,coffee,astronaut,rocket")
    stats = collect_statistics(lite0, source, [layer], pre_activation=True, k=3, batch_size=4, receptive_field=None)
    ls = stats[layer]
    assert stats.images == len(source) == 4 and ls.count == 4 * 28 * 28
    frac = ls.fraction_positive.numpy()
    assert 0.02 < np.median(frac) < 0.98
    ex = stats.examples(layer, 7)
    x = lite0.preprocess([lite0.fit_image(source.load(e.image_id)) for e in ex])
    with torch.no_grad(), evaluating(lite0.module), Capture(lite0.module, layer, pre_activation=True) as cap:
        cap.run(x)
    got = [cap[layer][i, 7, e.y, e.x].item() for i, e in enumerate(ex)]
    np.testing.assert_allclose(got, [e.value for e in ex], rtol=1e-4, atol=1e-4)
    assert ex[0].value == pytest.approx(float(ls.maximum[7]))


def test_log_bins_cover_any_scale():
    bins = LogBins()
    lower, upper = bins.bin_bounds()
    assert len(lower) == bins.n_bins and (np.diff(lower) >= 0).all()
    v = torch.tensor([-3e5, -2.0, -1e-6, 0.0, 1e-6, 1.0, 3e5])
    idx = bins.lookup(v).numpy()
    assert idx[0] == 0 and idx[-1] == bins.n_bins - 1 and idx[3] == bins.zero_bin
    assert idx[2] == bins.zero_bin - 1 and idx[4] == bins.zero_bin + 1
    with pytest.raises(CnnscopeError):
        LogBins(band_every=7)


def test_an_image_id_is_counted_once(model, data):
    from cnnscope.dataset import StatisticsAccumulator

    acc = StatisticsAccumulator(model, ["pw"], k=2)
    x = brute_values(model, data.images[:3], "pw", False)
    acc.add(torch.tensor([0, 1, 2]), {"pw": torch.from_numpy(x)})
    with pytest.raises(CnnscopeError, match="added twice"):
        acc.add(torch.tensor([5, 2, 6]), {"pw": torch.from_numpy(x)})
    with pytest.raises(CnnscopeError, match="added twice"):
        acc.add(torch.tensor([7, 7, 8]), {"pw": torch.from_numpy(x)})
    with pytest.raises(CnnscopeError, match="repeat"):
        open_source(data).subset([1, 2, 1])
