"""Architecture ablations: every row trained like a direct run with the same seed, split and budget."""

from __future__ import annotations

import json

import pytest
import torch

from cnnscope.cli import main
from cnnscope.errors import CnnscopeError
from cnnscope.zf.ablate import ablate, variant_spec
from cnnscope.zf.architecture import NetSpec
from cnnscope.zf.train import ImageDataset, accuracy, digits_dataset, train


@pytest.fixture(scope="module")
def small_digits():
    ds = digits_dataset(12)
    return ImageDataset(ds.images[:100], ds.labels[:100], ds.classes, 1, "digits100")


def test_rows_equal_direct_training_runs(small_digits, one_thread):
    base = NetSpec(widths=(4, 8))
    seen = []
    table = ablate(small_digits, ["drop:conv2", "width:conv1=2+pool:conv2=off"], base=base, epochs=1, batch_size=40,
                   seed=3, on_row=seen.append)
    assert [r.variant for r in table.rows] == ["base", "drop:conv2", "width:conv1=2+pool:conv2=off"]
    assert seen == table.rows
    assert table.rows[1].spec.widths == (4,) and table.rows[2].spec.widths == (2, 8)
    assert table.rows[2].spec.pooled() == [True, False]
    for row in table.rows:
        direct = train(small_digits, spec=row.spec, epochs=1, batch_size=40, seed=3)
        assert row.test_error == pytest.approx(1 - direct.history[-1]["test_accuracy"], abs=0)
        train_acc = accuracy(direct.model, small_digits.images[direct.train_indices],
                             small_digits.labels[direct.train_indices])
        assert row.train_error == pytest.approx(1 - train_acc, abs=1e-12)
        assert row.params == sum(p.numel() for p in direct.model.module.parameters())
    assert table.rows[1].params < table.rows[0].params
    rows, header = table.table()
    assert header == ("variant", "architecture", "params", "train error", "test error") and len(rows) == 3
    assert json.loads(json.dumps(table.to_dict()))["settings"]["seed"] == 3


def test_bad_variants_fail_before_training(small_digits):
    with pytest.raises(CnnscopeError, match="no layer 'conv5'"):
        ablate(small_digits, ["drop:conv5"], base=NetSpec(widths=(4, 8)))
    with pytest.raises(CnnscopeError, match="given twice"):
        ablate(small_digits, ["drop:conv2", "drop:conv2"], base=NetSpec(widths=(4, 8)))
    assert variant_spec(NetSpec(), "base") == NetSpec()
    assert variant_spec(NetSpec(), "drop:conv3+width:conv1=2").widths == (2, 32)


def test_cli_ablate_prints_and_writes_the_table(tmp_path, capsys, one_thread):
    torch.manual_seed(0)
    out = tmp_path / "abl"
    code = main(["ablate", "digits", "--widths", "4,8", "--size", "12", "--epochs", "1", "--batch-size", "64",
                 "--variant", "drop:conv2", "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0
    doc = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in doc["rows"]] == ["base", "drop:conv2"]
    for r in doc["rows"]:
        assert f"{r['test_error']:.2%}" in text
    assert "test error" in text and (out / "ablation.png").stat().st_size > 0
    assert main(["ablate", "digits", "--variant", "drop:conv9", "--out", str(tmp_path / "bad")]) == 1
    assert "no layer 'conv9'" in capsys.readouterr().err
