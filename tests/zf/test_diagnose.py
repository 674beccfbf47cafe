"""The filter diagnosis: closed forms of the aliased and high-frequency shares, dead filters, and the stride-4 vs
stride-2 first-layer comparison of the paper (Sec. 5.1) on the sample photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.cli import main
from cnnscope.models import wrap
from cnnscope.zf.architecture import ConvNet, NetSpec
from cnnscope.zf.diagnose import ALIASED, aliased_energy, compare_rows, diagnose, table_lines
from cnnscope.zf.filters import high_frequency_share
from cnnscope.zf.train import get_dataset, train


def _cosine(freq: float, size: int = 32) -> torch.Tensor:
    """A [1, 1, size, size] map varying along the columns with ``freq`` cycles/pixel."""
    x = torch.arange(size, dtype=torch.float64)
    return torch.cos(2 * np.pi * freq * x).expand(size, size).reshape(1, 1, size, size)


def test_aliased_energy_of_cosines():
    low, high = _cosine(3 / 32), _cosine(6 / 32)  # 0.094 and 0.1875 cycles/px
    for maps, stride, share in ((low, 4, 0.0), (high, 4, 1.0), (high, 2, 0.0), (high, 1, 0.0)):
        above, total = aliased_energy(maps + 5.0, (stride, stride))  # the mean is removed first
        assert float(above / total) == pytest.approx(share, abs=1e-12)
    both = torch.cat([low, 2 * high], dim=1)  # per channel
    above, total = aliased_energy(both, (1, 4))  # stride 4 along the columns only
    torch.testing.assert_close(above / total, torch.tensor([0.0, 1.0], dtype=torch.float64))
    above, total = aliased_energy(low + high, (4, 4))  # equal amplitudes: half of the energy
    assert float(above / total) == pytest.approx(0.5, abs=1e-12)


def test_high_frequency_share_closed_forms():
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    bank = torch.stack([torch.ones(4, 4), (-1.0) ** (i + j), torch.cos(np.pi * 0.5 * j), torch.zeros(4, 4)])
    share = high_frequency_share(bank.unsqueeze(1), size=4)
    # DC, the corner frequency (radius sqrt(2) x Nyquist), exactly half Nyquist (not above), no energy
    torch.testing.assert_close(share, torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))


def _hand_net(stride: int) -> ConvNet:
    torch.manual_seed(0)
    net = ConvNet(NetSpec(widths=(4, 6), kernels=(5,), strides=(stride,)), 3, 2).eval()
    with torch.no_grad():
        net.features[0].weight[1] = 0  # weak (and dead), though its constant output (the bias) is positive
        net.features[0].bias[1] = 0.5
        net.features[0].bias[2] = -1e4  # never above 0: dead
    return net


def test_dead_filters_and_aliasing_against_a_direct_computation():
    x = torch.randn(5, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    diag = diagnose(_hand_net(2), x, batch_size=2)
    first, second = diag.layers
    assert (first.layer, first.kernel, first.stride, second.layer) == ("features.0", (5, 5), (2, 2), "features.3")
    assert first.weak == [1] and first.never_active == [2] and first.dead == [1, 2]
    assert second.never_active is not None and second.aliased_share is None
    w = _hand_net(2).features[0].weight.detach().double().numpy()
    xs = np.pad(x.double().numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    for n in (0, 3):  # an independent dense correlation and FFT in numpy
        dense = np.zeros((5, 24, 24))
        for dy in range(5):
            for dx in range(5):
                dense += np.einsum("bchw,c->bhw", xs[:, :, dy:dy + 24, dx:dx + 24], w[n, :, dy, dx])
        power = np.abs(np.fft.fft2(dense - dense.mean(axis=(1, 2), keepdims=True))) ** 2
        f = np.abs(np.fft.fftfreq(24))
        mask = (f[:, None] > 0.25) | (f[None, :] > 0.25)
        assert float(first.aliased_share[n]) == pytest.approx((power * mask).sum() / power.sum(), rel=1e-6)
    assert diagnose(_hand_net(1), x).layers[0].aliased_share.abs().max() == 0  # stride 1 aliases nothing
    weights_only = diagnose(_hand_net(2))
    assert weights_only.layers[0].never_active is None and weights_only.images == 0
    assert "no images" in weights_only.layers[0].notes[0]


def test_what_cannot_be_measured_is_said():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    d = diagnose(wrap(net, 16, (0.0,) * 3, (1.0,) * 3), torch.randn(2, 3, 16, 16)).layers[0]
    assert d.never_active is None and "ReLU" in d.notes[0] and d.aliased_share is not None

    class Scaled(nn.Module):  # the first convolution reads 2 x the input
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(2 * x))

    d = diagnose(wrap(Scaled().eval(), 16, (0.0,) * 3, (1.0,) * 3), torch.randn(2, 3, 16, 16)).layers[0]
    assert d.aliased_share is None and any("does not read" in n for n in d.notes)


@pytest.mark.slow
def test_stride_4_first_layer_aliases_more_than_stride_2(one_thread, tmp_path, capsys):
    """The paper's AlexNet -> ZFNet change on a small data set: the 8 sample photos as 24 crops each at 48 px."""
    data = get_dataset("samples:24", 48)
    runs = {name: train(data, spec=spec, epochs=3, batch_size=16, seed=0, checkpoint_epochs=[3],
                        out=tmp_path / name.replace(" ", ""))
            for name, spec in (("stride 4", NetSpec.alexnet(widths=(16, 32))), ("stride 2",
                                                                              NetSpec.zf(widths=(16, 32))))}
    test = data.images[runs["stride 4"].test_indices]
    assert np.array_equal(runs["stride 2"].test_indices, runs["stride 4"].test_indices)  # one split for both
    rows = {r["model"]: r for r in compare_rows({n: diagnose(r.model, test) for n, r in runs.items()})
            if r["layer"] == "features.0"}
    s4, s2 = rows["stride 4"], rows["stride 2"]
    assert (s4["kernel"], s4["stride"], s2["kernel"], s2["stride"]) == ([11, 11], [4, 4], [7, 7], [2, 2])
    assert s4["aliased"] + s4["dead"] > s2["aliased"] + s2["dead"]
    assert s4["aliased_share"] > s2["aliased_share"]
    lines, header = table_lines(list(rows.values()))
    assert header[-1] == "aliased filters" and lines[0][-1] == str(s4["aliased"])
    # the same comparison through the command line, on the checkpoints
    out = tmp_path / "diag"
    code = main(["filters", str(tmp_path / "stride4" / "epoch_003.pt"), "--compare",
                 str(tmp_path / "stride2" / "epoch_003.pt"), "--images", "samples", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "aliased filters" in text and "11x11/4" in text and "7x7/2" in text
    doc = json.loads((out / "diagnosis.json").read_text())
    assert [r["stride"] for r in doc["rows"] if r["layer"] == "features.0"] == [[4, 4], [2, 2]]
    assert (out / "diagnosis.png").stat().st_size > 0 and ALIASED == 0.1


def test_cli_diagnose_on_two_tiny_checkpoints(tmp_path, capsys, one_thread):
    from cnnscope.zf.train import save_checkpoint

    paths = []
    for stride in (4, 2):
        torch.manual_seed(stride)
        net = ConvNet(NetSpec(widths=(4, 4), kernels=(5,), strides=(stride,)), 3, 2).eval()
        paths.append(save_checkpoint(wrap(net, 32, (0.5,) * 3, (0.25,) * 3, labels=["a", "b"], name=f"s{stride}"),
                                     tmp_path / f"s{stride}.pt", 1, []))
    code = main(["filters", str(paths[0]), "--diagnose", "--compare", str(paths[1]), "--images", "sample:chelsea",
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads((tmp_path / "out" / "diagnosis.json").read_text())
    assert [r["model"] for r in doc["rows"]] == [str(paths[0])] * 2 + [str(paths[1])] * 2
    assert doc["images"] == ["sample:chelsea"] and "5x5/4" in out and "5x5/2" in out
    assert main(["filters", str(paths[0]), "--compare", str(paths[0]), "--out", str(tmp_path / "o2")]) == 1
    assert "repeats a model" in capsys.readouterr().err
