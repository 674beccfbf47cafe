"""The ``cnnscope`` command group, shared options and the one-line error handling (docs/ARCHITECTURE.md, rule 7)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from ..errors import CnnscopeError

SAMPLE_PREFIX = "sample:"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (they are shown only on a terminal anyway).")
@click.version_option(package_name="cnnscope")
def cli(debug: bool, quiet: bool) -> None:
    """cnnscope: see what a convolutional network sees and learns.

    MODEL is a name from `cnnscope models` (default embedded model: efficientnet_lite0). IMAGE is a file
    path or sample:NAME for a photo shipped with scikit-image (sample:chelsea, sample:coffee, ...).
    """


def model_options(f):
    """``--weights`` and ``--device`` for commands that load a model."""
    f = click.option("--device", default="auto", show_default=True,
                     help="cpu, cuda, cuda:1, ... ('auto' = cuda when available).")(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Local state_dict/checkpoint file (torchvision/timm models are random without it).")(f)
    return f


class PositionType(click.ParamType):
    """``--position``: ``max``, ``center``, ``ROW,COL`` or ``all`` (the whole channel), as in docs/CONVENTIONS.md."""

    name = "position"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if value is None or isinstance(value, tuple):
            return value
        text = str(value).strip().lower()
        if text in ("max", "center"):
            return text
        if text in ("all", "none", "channel"):
            return None
        try:
            row, col = (int(v) for v in text.split(","))
        except ValueError:
            self.fail(f"{value!r} is not max, center, all or ROW,COL", param, ctx)
        if row < 0 or col < 0:
            self.fail(f"{value!r}: row and column are non-negative", param, ctx)
        return row, col


POSITION = PositionType()


def show_progress() -> bool:
    """Whether a command shows progress bars: on a terminal (stderr), unless ``cnnscope --quiet``."""
    ctx = click.get_current_context(silent=True)
    quiet = bool(ctx is not None and ctx.find_root().params.get("quiet"))
    return not quiet and sys.stderr.isatty()


def batch_size_option(f):
    """``--batch-size``: images per forward pass (default: chosen by device)."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=None,
                        help="Images per forward pass (default: chosen by device).")(f)


def channels_option(f, default: str | None = None, help: str = "Channels: all, 0-31 or 0,4,8-11."):
    """``--channels``: a channel selection (parsed later with ``cnnscope.parse_channels``)."""
    return click.option("--channels", default=default, show_default=default is not None, help=help)(f)


def pre_activation_option(f):
    """``--pre-activation``: read an activation module's input (pre-ReLU values) instead of its output."""
    return click.option("--pre-activation", is_flag=True,
                        help="Read the input of the activation module (pre-activation values).")(f)


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def open_model(name: str, weights: str | None, device: str):
    """Load a model for a command and warn on stderr when its weights are random."""
    from ..models import load_model

    m = load_model(name, weights=weights, device=resolve_device(device))
    if not m.pretrained:
        click.echo(f"note: {m.name} has {m.weights_note}", err=True)
    return m


def read_image_arg(arg: str):
    """A CLI image argument: a path or ``sample:NAME``; returns ``(display_name, uint8 array)``."""
    from ..images import load_image, sample_images

    if arg.startswith(SAMPLE_PREFIX):
        name = arg[len(SAMPLE_PREFIX):]
        return name, sample_images([name])[name]
    return Path(arg).name, load_image(arg)


def print_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> None:
    """Print an aligned plain-text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            click.echo("  ".join("-" * w for w in widths))


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: errors become one line on stderr and a non-zero exit (traceback with --debug)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="cnnscope", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except CnnscopeError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract is one line, not a traceback
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        return 1
