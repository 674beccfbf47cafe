"""Progress bars go to stderr only on a terminal: commands run in a pipe (click's CliRunner) print none, and the
same command with bars switched on does print them (so the check can fail)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

import cnnscope.cli.atlas as cli_atlas
import cnnscope.cli.dataset as cli_dataset
import cnnscope.cli.evaluate as cli_evaluate
import cnnscope.cli.featurevis as cli_featurevis
import cnnscope.cli.stimuli as cli_stimuli
from cnnscope.cli import cli
from tests.dataset.helpers import RandomImages, tiny

pytestmark = pytest.mark.filterwarnings("ignore::cnnscope.AssumptionWarning")
#: what any tqdm bar writes: carriage returns, a percentage bar or a rate
BAR_MARKS = ("\r", "%|", "it/s", "s/it", "probe/s", "batch/s")


def _has_bar(text: str) -> bool:
    return any(mark in text for mark in BAR_MARKS)


@pytest.fixture()
def model(monkeypatch):
    m = tiny()
    for module in (cli_atlas, cli_dataset, cli_evaluate, cli_featurevis, cli_stimuli):
        monkeypatch.setattr(module, "open_model", lambda name, weights, device: m)
    return m


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(RandomImages(3).images):
        Image.fromarray(img).save(folder / f"p{i}.png")
    (folder / "zz_broken.png").write_bytes(b"garbage")
    return folder


def _commands(out, photos) -> dict[str, list[str]]:
    return {
        "examples": ["examples", "tiny", "act2", "--images", str(photos), "-k", "2", "--channels", "0,1",
                     "--out", str(out / "ex")],
        "evaluate": ["evaluate", "tiny", str(photos), "--methods", "gradcam,random", "--metrics", "deletion,road",
                     "--step", "100", "--road-percentages", "50", "--out", str(out / "ev")],
        "atlas build": ["atlas", "build", "tiny", "--layers", "act2", "--channels", "0-1", "--kinds",
                        "examples,histogram", "--images", str(photos), "--out", str(out / "atlas")],
        "tuning": ["tuning", "tiny", "act2", "--channels", "0,1", "--images", str(photos), "--examples", "0",
                   "--joint-step", "0", "--step", "45", "--levels", "4,8", "--size", "20", "--out", str(out / "tu")],
        "render": ["render", "tiny", "act2", "--channels", "0-2", "--steps", "3", "--size", "20", "--recipe", "plain",
                   "--out", str(out / "fv")],
    }


@pytest.mark.parametrize("command", ["examples", "evaluate", "atlas build", "tuning", "render"])
def test_no_bars_in_a_pipe(command, model, photos, tmp_path):
    result = CliRunner().invoke(cli, _commands(tmp_path, photos)[command])
    assert result.exit_code == 0, (result.output, result.exception)
    assert not _has_bar(result.stderr), result.stderr
    assert not _has_bar(result.stdout)
    if command in ("examples", "evaluate", "atlas build"):  # unreadable files: one line each on stderr
        assert f"skipped {photos / 'zz_broken.png'}: " in result.stderr


def test_bars_appear_when_switched_on(model, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_dataset, "show_progress", lambda: True)
    result = CliRunner().invoke(cli, _commands(tmp_path, photos)["examples"])
    assert result.exit_code == 0, (result.output, result.exception)
    for desc in ("receptive fields", "statistics", "contact sheets"):
        assert desc in result.stderr
    assert _has_bar(result.stderr) and "/2 " in result.stderr  # the contact sheets' bar has its total
    result = CliRunner().invoke(cli, ["--quiet"] + _commands(tmp_path, photos)["render"] + ["--progress"])
    assert result.exit_code == 0 and "render" in result.stderr and "contact sheet" in result.stderr
