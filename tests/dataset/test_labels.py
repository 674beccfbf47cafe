"""Human labels against activation: composition per band, band-weighted distributions and agreement.

Synthetic labelled sets with hand-computed weights and shares; a fully labelled population, where the stratified
estimate must equal the exact share; and activation bands of a real pass checked against a brute-force forward.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cnnscope.cli import main
from cnnscope.dataset import collect_statistics
from cnnscope.dataset.labels import (
    ActivationBand,
    LabelDataError,
    activation_bands,
    band_counts,
    label_report,
)
from cnnscope.dataset.results import Example
from cnnscope.web.labels import LabelError, LabelStore, read_example_csv

from .helpers import RandomImages, brute_values, tiny


def _ex(image_id: int, value: float, y: int = 0, x: int = 0) -> Example:
    return Example(image_id, f"img{image_id}", y, x, value, (0, 0, 1, 1))


def _synthetic() -> tuple[list[ActivationBand], dict]:
    """Three bands of 100, 10 and 2 positions; 4, 2 and 1 labelled examples."""
    bands = [ActivationBand(0, 0.0, 1.0, 100.0, 0.5, [_ex(0, 0.2), _ex(1, 0.4), _ex(2, 0.6), _ex(3, 0.8)]),
             ActivationBand(1, 1.0, 2.0, 10.0, 0.3, [_ex(4, 1.2), _ex(5, 1.8), _ex(9, 1.5)]),
             ActivationBand(2, 2.0, 3.0, 2.0, 0.2, [_ex(6, 2.5)])]
    labels = {(0, 0, 0): "curve", (1, 0, 0): "other", (2, 0, 0): "other", (3, 0, 0): "other",
              (4, 0, 0): "curve", (5, 0, 0): "edge", (6, 0, 0): "curve",
              (7, 0, 0): "curve"}  # image 7 is not a band sample: unmatched; image 9 is sampled but unlabelled
    return bands, labels


def test_synthetic_composition_weights_and_agreement():
    bands, labels = _synthetic()
    r = label_report(bands, labels, layer="L", unit=3, bins=3)
    # weights count_b / n_b: 100/4 = 25, 10/2 = 5 (the unlabelled sample does not count), 2/1 = 2
    assert {(e.image_id, e.weight) for e in r.examples} == {(0, 25.0), (1, 25.0), (2, 25.0), (3, 25.0), (4, 5.0),
                                                            (5, 5.0), (6, 2.0)}
    # weighted values: curve 25*0.2 + 5*1.2 + 2*2.5 = 16, other 25*(0.4+0.6+0.8) = 45, edge 5*1.8 = 9; total 70
    assert r.labels == ["other", "curve", "edge"]
    assert r.agreement == pytest.approx({"other": 45 / 70, "curve": 16 / 70, "edge": 9 / 70})
    assert r.value_total == pytest.approx(70.0)
    assert r.composition == [[3, 1, 0], [0, 1, 1], [0, 1, 0]]
    assert np.allclose(r.fractions, [[0.75, 0.25, 0.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0]])
    assert r.hist_edges == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert r.hist_counts == {"other": [3, 0, 0], "curve": [1, 1, 1], "edge": [0, 1, 0]}
    assert r.hist_weighted["curve"] == pytest.approx([25.0, 5.0, 2.0])
    assert r.unmatched == 1 and r.coverage == pytest.approx(1.0)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["bands"][1]["composition"] == {"other": 0, "curve": 1, "edge": 1} and d["bands"][1]["labelled"] == 2
    # the same labels as records (as the labels file lists them)
    records = [{"image_id": i, "y": y, "x": x, "label": lab} for (i, y, x), lab in labels.items()]
    assert label_report(bands, records, layer="L", unit=3).agreement == pytest.approx(r.agreement)


def test_fully_labelled_population_gives_the_exact_share():
    """Every position of every band labelled: the stratified estimate is the exact share of the summed value."""
    g = np.random.default_rng(3)
    values = g.exponential(1.0, 2000)
    truth = np.where(values > 1.5, "curve", np.where(g.random(2000) < 0.5, "edge", "other"))
    edges = np.linspace(0, values.max(), 6)
    edges[-1] = np.nextafter(values.max(), np.inf)
    bands = []
    for b in range(5):
        inside = np.flatnonzero((values >= edges[b]) & (values < edges[b + 1]))
        bands.append(ActivationBand(b, float(edges[b]), float(edges[b + 1]), float(len(inside)), 0.2,
                                    [_ex(int(i), float(values[i])) for i in inside]))
    r = label_report(bands, {(i, 0, 0): str(truth[i]) for i in range(2000)})
    for lab in ("curve", "edge", "other"):
        assert r.agreement[lab] == pytest.approx(values[truth == lab].sum() / values.sum(), rel=1e-9)
    # half of each band labelled: the weights double, the estimate stays unbiased (and exact for the curve share
    # of the top bands, which are all curves)
    half = {(i, 0, 0): str(truth[i]) for b in bands for i in [e.image_id for e in b.examples][::2]}
    r2 = label_report(bands, half)
    assert sum(r2.agreement.values()) == pytest.approx(1.0)
    assert r2.agreement["curve"] == pytest.approx(r.agreement["curve"], abs=0.05)


def test_missing_bands_warn_and_nothing_matching_is_an_error():
    bands, labels = _synthetic()
    only_low = {k: v for k, v in labels.items() if k[0] <= 3}
    with pytest.warns(UserWarning, match=r"hold 50% of the unit's expected value; bands \[1, 2\] have no labelled"):
        r = label_report(bands, only_low, layer="L", unit=3)
    assert r.coverage == pytest.approx(0.5) and r.agreement == pytest.approx({"other": 0.9, "curve": 0.1})
    with pytest.raises(LabelDataError, match="none of the 1 labels of L:3 is on a sampled band example"):
        label_report(bands, {(7, 0, 0): "curve"}, layer="L", unit=3)
    with pytest.raises(LabelDataError, match="no activation bands"):
        label_report([], labels)
    with pytest.raises(LabelDataError, match="each needs image_id, y, x and label"):
        label_report(bands, [{"image_id": 0, "label": "x"}])


@pytest.fixture(scope="module")
def pass_and_values():
    model = tiny("relu6")
    data = RandomImages(6)
    stats = collect_statistics(model, data, ["act2"], pre_activation=True, k=16, bottom_k=1, band_samples=8,
                               batch_size=6, seed=4)
    return stats, brute_values(model, data.images, "act2", pre=True)


def test_activation_bands_of_a_real_pass(pass_and_values):
    stats, values = pass_and_values
    for c in (0, 5):
        v = values[:, c]
        bands = activation_bands(stats, "act2", c, bands=10, per_band=4, seed=1)
        assert len(bands) == 10 and bands[0].low == 0.0 and bands[-1].high > float(v.max())
        assert bands[-1].high == pytest.approx(float(v.max()), rel=1e-6)
        # the counts add up to every position >= 0; each band's count is exact up to the bins its edges cut
        assert sum(b.count for b in bands) == pytest.approx(float((v >= 0).sum()), rel=1e-9)
        lower, upper = stats.bins.bin_bounds()
        for b in bands:
            top = np.inf if b.index == len(bands) - 1 else b.high  # the forward here may round the maximum up
            exact = float(((v >= b.low) & (v < top)).sum())
            cut = [i for i in range(len(lower)) if lower[i] < b.low < upper[i] or lower[i] < b.high < upper[i]]
            slack = float(stats["act2"].hist[c][cut].sum())
            assert abs(b.count - exact) <= slack + 1e-9, (c, b.index)
            for ex in b.examples:  # every example lies in its band, with the value the forward pass gives
                assert b.low <= ex.value < b.high
                assert ex.value == pytest.approx(float(v[ex.image_id, ex.y, ex.x]), abs=1e-6)
            assert len({(e.image_id, e.y, e.x) for e in b.examples}) == len(b.examples)
            kept = stats["act2"].bands
            sampled = int(((kept.values[c] >= b.low) & (kept.values[c] < b.high) & (kept.image_ids[c] >= 0)).sum())
            # at most what the pass sampled; fewer where a full sampling band's priorities cut the rest off (only
            # records below the smallest full band's largest kept priority are a uniform sample of the interval)
            if b.low > float(np.sort(v.ravel())[-16]):  # the top-16 pool holds the whole band: drawn from it
                assert len(b.examples) == min(4, exact), (c, b.index)
            else:
                assert len(b.examples) <= min(4, sampled)
        assert len(bands[-1].examples) >= 1  # the top band holds the maximum
        assert sum(b.contribution for b in bands) == pytest.approx(1.0)
        counts, contrib = band_counts(stats, "act2", c, [0.0, bands[-1].high])
        assert counts[0] == pytest.approx(float((v >= 0).sum())) and contrib[0] == pytest.approx(1.0)


def test_negative_bands(pass_and_values):
    stats, values = pass_and_values
    v = values[:, 5]
    bands = activation_bands(stats, "act2", 5, bands=4, negative_bands=3, per_band=3)
    assert len(bands) == 7 and [b.index for b in bands] == list(range(7))
    assert bands[0].low == pytest.approx(float(v.min()), rel=1e-5) and bands[3].low == 0.0
    assert sum(b.count for b in bands) == pytest.approx(float(v.size), rel=1e-9)
    assert [b.contribution for b in bands[:3]] == [0.0, 0.0, 0.0]
    for b in bands:
        assert all(b.low <= e.value < b.high for e in b.examples)
    assert bands[0].examples  # the bottom-k pool holds the most negative band
    # negative examples carry no expected value: labelling them changes the composition, not the agreement
    base = {(e.image_id, e.y, e.x): "curve" for b in bands[3:] for e in b.examples}
    more = base | {(e.image_id, e.y, e.x): "opposing curve" for b in bands[:3] for e in b.examples}
    r, r2 = label_report(bands, base), label_report(bands, more)
    assert r2.agreement == {"curve": 1.0, "opposing curve": 0.0} and r.agreement == {"curve": 1.0}
    assert r2.composition[0] == [0, len(bands[0].examples)] and r2.hist_value["opposing curve"] == [0.0] * 20


def test_activation_bands_refuse_units_never_positive(pass_and_values):
    stats, values = pass_and_values
    with pytest.raises(LabelDataError, match="increasing"):
        activation_bands(stats, "act2", 0, bands=[1.0, 0.5])
    from dataclasses import replace

    ls = stats["act2"]
    negative = replace(stats, layers={"act2": replace(ls, maximum=ls.maximum * 0 - 1)})
    with pytest.raises(LabelDataError, match="never positive"):
        activation_bands(negative, "act2", 0)


def test_read_example_csv():
    text = "label,layer,unit,image,y,x,extra\ncurve,act2,3,7,1,2,z\n\"edge, faint\",act2,3,img5,0,0,\n"
    rows = read_example_csv(text, {"img5": 5})
    assert rows == [{"layer": "act2", "unit": 3, "image_id": 7, "name": "", "y": 1, "x": 2, "label": "curve"},
                    {"layer": "act2", "unit": 3, "image_id": 5, "name": "img5", "y": 0, "x": 0,
                     "label": "edge, faint"}]
    with pytest.raises(LabelError, match="lacks the column.s. y, x"):
        read_example_csv("layer,unit,image,label\n")
    with pytest.raises(LabelError, match="line 3: image 'img5' is neither .* pass --atlas or --stats"):
        read_example_csv(text)
    with pytest.raises(LabelError, match="line 2: y must be a number"):
        read_example_csv("layer,unit,image,y,x,label\nL,0,1,-1,0,a\n")


@pytest.mark.slow
def test_cli_import_and_report(tmp_path, pass_and_values, capsys):
    stats, values = pass_and_values
    stats_file = stats.save(tmp_path / "stats.npz")
    bands = activation_bands(stats, "act2", 5, bands=5, per_band=None, seed=stats.seed)
    rows = ["layer,unit,image,y,x,label"]
    given = {}
    for b in bands:
        for k, ex in enumerate(b.examples[:3]):
            lab = "curve" if b.index >= 3 else ("edge" if k % 2 else "other")
            rows.append(f"act2,5,{ex.name},{ex.y},{ex.x},{lab}")
            given[(ex.image_id, ex.y, ex.x)] = lab
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    db = tmp_path / "labels.sqlite"
    assert main(["labels", "import", str(csv_file), "--labels", str(db), "--stats", str(stats_file)]) == 0
    assert f"{len(given)} example labels stored" in capsys.readouterr().out
    with LabelStore(db, atlas_root=None, fingerprint=None, readonly=True) as ls:
        assert {(e["image_id"], e["y"], e["x"]): e["label"] for e in ls.example_labels("act2", 5)} == given
    expected = label_report(bands, given, layer="act2", unit=5)
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["labels", "report", "--labels", str(db), "--stats", str(stats_file), "--layer", "act2",
                     "--unit", "5", "--bands", "5", "--out", str(out)]) == 0
    assert "share of the expected value: " in capsys.readouterr().out
    got = json.loads((out / "labels_act2_c0005.json").read_text())
    assert got["agreement"] == pytest.approx(expected.agreement)
    assert (out / "labels_act2_c0005.png").stat().st_size > 1000
    # the CSV itself works as --labels; an unknown image name is one line
    assert main(["labels", "report", "--labels", str(csv_file), "--stats", str(stats_file), "--layer", "act2",
                 "--unit", "5", "--bands", "5", "--out", str(tmp_path / "r2")]) == 0
    assert json.loads((tmp_path / "r2" / "labels_act2_c0005.json").read_text())["agreement"] == got["agreement"]
    capsys.readouterr()
    csv_file.write_text("layer,unit,image,y,x,label\nact2,5,nowhere.png,0,0,curve\n")
    assert main(["labels", "import", str(csv_file), "--labels", str(db), "--stats", str(stats_file)]) == 1
    err = capsys.readouterr().err
    assert "image 'nowhere.png' is neither an image id nor a known name" in err and err.count("\n") == 1
    assert main(["labels", "report", "--labels", str(db), "--layer", "act2", "--unit", "5"]) == 1
    assert "pass one of --atlas" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_bands_then_report_from_the_csv(tmp_path, capsys):
    """`labels bands` on the embedded model, the CSV filled in, `labels report` on the saved pass."""
    import csv

    from cnnscope.dataset import DatasetStats

    out = tmp_path / "bands"
    assert main(["labels", "bands", "efficientnet_lite0", "blocks.1.0", "-c", "3", "--images", "samples:1",
                 "--bands", "4", "--per-band", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    stats = DatasetStats.load(out / "stats.npz")
    layer = next(iter(stats.layers))
    bands = activation_bands(stats, layer, 3, bands=4, per_band=3, seed=0)
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["image"]), int(r["y"]), int(r["x"])) for r in rows] == [
        (e.image_id, e.y, e.x) for b in bands for e in b.examples]
    assert json.loads((out / f"bands_{layer}_c0003.json").read_text())["bands"][0]["count"] == pytest.approx(
        bands[0].count)
    for r in rows:
        r["label"] = "curve" if int(r["band"]) >= 2 else "other"
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["labels", "report", "--labels", str(out / "labels.csv"), "--stats", str(out / "stats.npz"),
                 "--layer", layer, "--unit", "3", "--bands", "4", "--out", str(tmp_path / "report")]) == 0
    got = json.loads((tmp_path / "report" / f"labels_{layer}_c0003.json").read_text())
    given = {(int(r["image"]), int(r["y"]), int(r["x"])): r["label"] for r in rows}
    assert got["agreement"] == pytest.approx(label_report(bands, given).agreement)
    assert got["unmatched"] == 0 and got["coverage"] == pytest.approx(1.0)
