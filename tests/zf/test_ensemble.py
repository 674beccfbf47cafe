"""Ensembles: the probabilities are the mean of the members' softmax, accuracies equal a hand count, and the
commands (`predict --ensemble`, `accuracy`) print them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnscope.cli import main
from cnnscope.errors import ModelError
from cnnscope.models import wrap
from cnnscope.zf.architecture import ConvNet, NetSpec
from cnnscope.zf.ensemble import ensemble_accuracy, ensemble_probabilities, member_probabilities
from cnnscope.zf.train import ImageDataset, save_checkpoint


class ColourVote(nn.Module):
    """Logits ``scale * (mean red, mean green, mean blue) + bias`` of a model-space image (a closed form)."""

    def __init__(self, scale: float, bias: tuple[float, float, float]) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("bias", torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(dim=(2, 3)) + self.bias


def _members():
    labels = ["red", "green", "blue"]
    return [wrap(ColourVote(s, b), 8, (0.0,) * 3, (1.0,) * 3, labels=labels, name=f"vote{k}")
            for k, (s, b) in enumerate(((4.0, (0.0, 0.0, 0.0)), (1.0, (0.0, 0.6, 0.0)), (10.0, (0.0, 0.0, 2.0))))]


def _pictures() -> tuple[np.ndarray, np.ndarray]:
    """Six flat pictures with known colour means, and their true classes."""
    colours = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [120, 100, 10], [60, 60, 90], [90, 60, 60]])
    return np.broadcast_to(colours[:, None, None, :], (6, 8, 8, 3)).astype(np.uint8).copy(), np.array(
        [0, 1, 2, 0, 2, 0])


def test_ensemble_probabilities_are_the_mean_of_the_softmax():
    members = _members()
    imgs, _ = _pictures()
    means = torch.as_tensor(imgs[:, 0, 0, :] / 255.0, dtype=torch.float64)
    by_hand = torch.stack([(m.module.scale * means + m.module.bias.double()).softmax(1) for m in members])
    torch.testing.assert_close(member_probabilities(members, imgs), by_hand, atol=1e-6, rtol=0)
    torch.testing.assert_close(ensemble_probabilities(members, imgs), by_hand.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(ensemble_probabilities(members, imgs, batch_size=4).sum(1),
                               torch.ones(6, dtype=torch.float64))


def test_accuracies_equal_a_hand_count():
    members = _members()
    imgs, labels = _pictures()
    means = imgs[:, 0, 0, :] / 255.0
    probs = []
    for m in members:
        logits = m.module.scale * means + m.module.bias.numpy()
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs.append(e / e.sum(1, keepdims=True))
    member_acc = [float(np.mean(p.argmax(1) == labels)) for p in probs]
    ens_acc = float(np.mean(np.mean(probs, axis=0).argmax(1) == labels))
    # the data set lists its classes in another order: matched by name
    ds = ImageDataset(imgs, np.array([{0: 2, 1: 0, 2: 1}[v] for v in labels]), ["green", "blue", "red"], 3, "flat")
    result = ensemble_accuracy(members, ds)
    assert result.member_accuracy == pytest.approx(member_acc, abs=1e-12)
    assert result.ensemble == pytest.approx(ens_acc, abs=1e-12) and result.images == 6
    assert len(set(member_acc)) > 1  # the members differ, so the test tells them apart
    rows, header = result.table()
    assert rows[-1][0] == "ensemble of 3" and header == ("model", "accuracy", "error")


def test_members_must_agree_on_classes():
    a, b, _ = _members()
    b.labels = ["r", "g", "b"]
    with pytest.raises(ModelError, match="different class labels"):
        ensemble_probabilities([a, b], np.zeros((8, 8, 3), np.uint8))
    two = wrap(nn.Sequential(nn.Flatten(), nn.LazyLinear(2)), 8, (0.0,) * 3, (1.0,) * 3, name="two")
    with pytest.raises(ModelError, match="different class counts"):
        ensemble_probabilities([a.module and wrap(a.module, 8, (0.0,) * 3, (1.0,) * 3, name="nolabels"), two],
                               np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ModelError, match="not classes of"):
        ensemble_accuracy([a], ImageDataset(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ["cat", "dog"], 3,
                                            "x"))
    with pytest.raises(ModelError, match="at least one"):
        ensemble_probabilities([], np.zeros((8, 8, 3), np.uint8))


def test_predict_ensemble_and_accuracy_commands(tmp_path, capsys):
    paths, nets = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = ConvNet(NetSpec(widths=(4,)), 3, 3).eval()
        m = wrap(net, 16, (0.5,) * 3, (0.25,) * 3, labels=["red", "green", "blue"], name=f"n{seed}")
        paths.append(save_checkpoint(m, tmp_path / f"n{seed}.pt", 1, []))
        nets.append(m)
    code = main(["predict", str(paths[0]), "sample:coffee", "--ensemble", str(paths[1]), "--json", "-k", "3"])
    out, _ = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    from cnnscope.images import sample_images

    want = ensemble_probabilities(nets, sample_images(["coffee"])["coffee"])[0]
    top = doc["results"][0]["top"]
    assert [t["index"] for t in top] == want.argsort(descending=True).tolist()
    assert np.allclose([t["probability"] for t in top], want.sort(descending=True).values.numpy(), atol=1e-6)
    assert len(doc["ensemble"]) == 2
    from cnnscope.images import save_image

    imgs, labels = _pictures()
    for k, name in enumerate(["red", "green", "blue"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == k):
            save_image(imgs[i], tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "green" / "broken.png").write_bytes(b"not a picture")
    code = main(["accuracy", str(paths[0]), str(paths[1]), str(tmp_path / "data"), "--json", "--batch-size", "4"])
    out, err = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    # the streamed class folders give the numbers of the same pictures held in memory (folder classes sorted)
    in_memory = ImageDataset(imgs, np.array([{0: 2, 1: 1, 2: 0}[v] for v in labels]), ["blue", "green", "red"], 3,
                             "flat")
    ref = ensemble_accuracy(nets, in_memory)
    assert [d["accuracy"] for d in doc["members"]] == pytest.approx(ref.member_accuracy, abs=1e-12)
    assert doc["ensemble"] == pytest.approx(ref.ensemble, abs=1e-12) and doc["images"] == 6
    assert [d["model"] for d in doc["members"]] == [str(p) for p in paths]
    assert "broken.png" in err and doc["skipped"][0]["path"].endswith("broken.png")
    assert main(["accuracy", "digits"]) == 1


def test_labelled_and_unlabelled_members_are_refused():
    """Found in review: targets were mapped with the first member's labels only, so the result depended on order."""
    import pytest as _pytest

    from cnnscope.errors import ModelError
    from cnnscope.models import wrap
    from cnnscope.zf.ensemble import ensemble_probabilities
    from tests.models import InplaceReLUNet

    a = wrap(InplaceReLUNet(num_classes=2), input_size=16)
    b = wrap(InplaceReLUNet(num_classes=2, seed=1), input_size=16, labels=["b", "a"])
    img = np.zeros((16, 16, 3), np.uint8)
    for members in ([a, b], [b, a]):
        with _pytest.raises(ModelError, match="cannot be aligned by class"):
            ensemble_probabilities(members, img)
