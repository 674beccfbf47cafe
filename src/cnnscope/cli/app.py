"""The ``cnnscope`` command group, shared options and the one-line error handling (docs/ARCHITECTURE.md, rule 7)."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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

    MODEL is a name from `cnnscope models` (default embedded model: efficientnet_lite0; presets inceptionv1,
    alexnet, vgg16, vgg19, resnet50 load their pretrained weights) or a model file (a `cnnscope train`
    checkpoint, TorchScript, or a pickled model with --trust-pickle). IMAGE is a file path or sample:NAME for a
    photo shipped with scikit-image (sample:chelsea, sample:coffee, ...). --debug (anywhere) shows tracebacks.
    """


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """Keep an option that :func:`open_model` reads (``expose_value=False``: commands need no new parameters)."""
    ctx.meta[f"cnnscope.{param.name}"] = value
    return value


def model_options(f):
    """``--weights``, ``--device``, ``--num-classes`` and ``--trust-pickle`` for commands that load a model.

    The last two are read by :func:`open_model` from the click context, so a command's signature only has
    ``weights`` and ``device``.
    """
    f = click.option("--trust-pickle", is_flag=True, expose_value=False, callback=_remember,
                     help="Read weights/model files that hold pickled Python objects (torch.save(model)); "
                          "unpickling can run code: only for files you trust.")(f)
    f = click.option("--num-classes", type=click.IntRange(min=1), default=None, expose_value=False,
                     callback=_remember,
                     help="Output classes of a torchvision/timm architecture (default: read off --weights).")(f)
    f = click.option("--device", default="auto", show_default=True,
                     help="cpu, cuda, cuda:N or mps ('auto' = cuda when available).")(f)
    f = click.option("--weights", default=None, metavar="FILE|NAME",
                     help="A state_dict/checkpoint file, or weights by name from the library's cache: DEFAULT, "
                          "IMAGENET1K_V1, ... (torchvision), DEFAULT or a tag (timm). torchvision/timm "
                          "architectures are random without it; presets use DEFAULT.")(f)
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


def resolve_device(device: str):
    """``--device`` as a ``torch.device``, checked before anything is loaded (one-line error for a bad spelling or a
    missing GPU)."""
    from ..models.devices import resolve_device as resolve

    return resolve(device)


def open_model(name: str, weights: str | None, device: str):
    """Load a model for a command (a registry name, a model file, or a ``cnnscope train`` checkpoint: all through
    :func:`~cnnscope.models.load_model`) and say on stderr, one ``note:`` line each, what the user should know:
    random weights, what was read or assumed.

    ``--num-classes`` and ``--trust-pickle`` (see :func:`model_options`) come from the click context. The model is
    remembered there, so :func:`read_image_arg` reads large pictures straight at the size this model needs.
    """
    from ..models import load_model
    from ..models.loaded import _WARNED

    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    dev = resolve_device(device)
    m = load_model(name, weights=weights, device=dev, num_classes=meta.get("cnnscope.num_classes"),
                   trust_pickle=bool(meta.get("cnnscope.trust_pickle")))
    if not m.pretrained:
        click.echo(f"note: {m.name} has {m.weights_note}", err=True)
    for note in m.notes:
        click.echo(f"note: {note}", err=True)
    if m.assumed and m.module not in _WARNED:
        _WARNED.add(m.module)
        click.echo(f"note: {m.assumed}", err=True)
    meta["cnnscope.model"] = m
    return m


def read_image_arg(arg: str):
    """A CLI image argument: a path or ``sample:NAME``; returns ``(display_name, uint8 array)``.

    After :func:`open_model`, a picture larger than the model needs is reduced while it is read (in ``uint8``, by
    whole factors that keep it well above the model's input size: see :meth:`LoadedModel.fit_image`), so a huge
    photo is decoded once and never held at full size as an array.
    """
    from ..images import load_image, sample_images

    if arg.startswith(SAMPLE_PREFIX):
        name = arg[len(SAMPLE_PREFIX):]
        return name, sample_images([name])[name]
    ctx = click.get_current_context(silent=True)
    model = ctx.meta.get("cnnscope.model") if ctx is not None else None
    if model is None:
        return Path(arg).name, load_image(arg)
    return Path(arg).name, load_image(arg, at_least=model.fit_needs())


def print_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> None:
    """Print an aligned plain-text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            click.echo("  ".join("-" * w for w in widths))


def write_json(path: Path, data: object) -> Path:
    """``data`` as indented JSON in ``path``, written atomically (:func:`cnnscope.outputs.write_text`)."""
    from ..outputs import write_text

    return write_text(path, json.dumps(data, indent=2, default=str))


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, each Python warning is printed on stderr as one line ``warning: MESSAGE`` (no file, no
    line of code: the CLI's contract is one line per message)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' API
        text = " ".join(str(message).split())
        click.echo(f"warning: {text}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _debug_first(args: list[str]) -> list[str]:
    """``--debug`` is accepted anywhere before ``--`` (``cnnscope predict --debug ...``): it moves to the front."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug"] + [a for i, a in enumerate(args) if i >= end or a != "--debug"]


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: errors become one line on stderr and a non-zero exit (traceback with --debug)."""
    args = _debug_first(list(sys.argv[1:] if argv is None else argv))
    debug = bool(args) and args[0] == "--debug"
    try:
        with one_line_warnings():
            rv = cli.main(args=args, prog_name="cnnscope", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as exc:  # one line too: what is wrong, and where the help is
        where = exc.ctx.command_path if exc.ctx is not None else "cnnscope"
        click.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
        return exc.exit_code
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
