"""The paper's design experiments as commands: ``ablate`` (Table 2), ``transfer`` (Tables 3-6) and ``accuracy``
(models and their ensemble on a labelled data set). ``filters --diagnose`` lives in :mod:`.zf_train`, ensembles
in ``predict --ensemble`` in :mod:`.core`.

Each prints its table and writes it (JSON) with a figure into ``--out`` (:func:`cnnscope.outputs.run_output`).
"""

from __future__ import annotations

import click

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import batch_size_option, cli, model_options, open_model, print_table, resolve_device, show_progress
from .zf import save
from .zf_train import architecture_options, spec_from_options

DATA_HELP = ("DATA: 'digits', a folder with one sub-folder per class, classes:FOLDER, a manifest with labels, "
             "labelled shards, hf:PATH, or samples:N (N crops of each sample photo, one class per photo).")


@cli.command("ablate", help="Architecture ablation (paper Table 2): train the base network and each --variant with "
                            "the same seed, split and epochs on DATA; print and write the train/test error table. "
                            + DATA_HELP)
@click.argument("data", default="digits")
@click.option("--variant", "variants", multiple=True, required=True,
              help="A change of the base network (repeatable): drop:convK, drop:fcK, width:convK=W, width:fcK=W, "
                   "kernel:convK=S, stride:convK=S, pool:convK=on|off; join several with + (drop:conv3+drop:fc1).")
@architecture_options
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Images per Adam step.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True)
@click.option("--size", type=click.IntRange(8), default=None, help="Image side (default 32 digits, 64 others).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="zf-ablate", show_default=True)
def ablate_cmd(data: str, variants: tuple[str, ...], epochs: int, batch_size: int, lr: float, test_fraction: float,
               size: int | None, seed: int, device: str, out: str, **arch) -> None:
    from ..plot.zf_experiments import ablation_figure
    from ..zf.ablate import ablate, variant_spec

    base = spec_from_options(arch, size)
    for v in variants:
        variant_spec(base, v)  # every spelling checked before any training
    with run_output(out, "ablate") as folder:
        def report(row) -> None:
            click.echo(f"{row.variant}: train error {row.train_error:.2%}, test error {row.test_error:.2%}")

        result = ablate(data, list(variants), base=base, epochs=epochs, batch_size=batch_size, lr=lr,
                        test_fraction=test_fraction, seed=seed, device=resolve_device(device),
                        progress=show_progress(), on_row=report)
        folder.write_json("ablation.json", result.to_dict())
        save(ablation_figure(result), folder.path("ablation.png"))
    print_table(*result.table())


@cli.command("transfer", help="Transfer (paper Tables 3-6): freeze MODEL's layers 1..k, train a new linear "
                              "classifier on layer k's output for DATA, and print the accuracy for each k. "
                              + DATA_HELP)
@click.argument("model")
@click.argument("data")
@model_options
@click.option("--layers", default=None,
              help="Layers to put the classifier on, comma-separated, input to output (default for a `cnnscope "
                   "train` checkpoint: every conv block and hidden fully connected layer; required otherwise).")
@click.option("--pool", type=click.IntRange(1), default=None,
              help="Average-pool spatial outputs to POOL x POOL (default: the net's head pool, else 1).")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True, help="Classifier epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-2, show_default=True, help="Classifier Adam learning rate.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scratch", is_flag=True,
              help="Also train MODEL's architecture from random weights on DATA (a `cnnscope train` checkpoint).")
@click.option("--out", type=click.Path(file_okay=False), default="zf-transfer", show_default=True)
def transfer_cmd(model: str, data: str, weights: str | None, device: str, layers: str | None, pool: int | None,
                 epochs: int, batch_size: int, lr: float, test_fraction: float, seed: int, scratch: bool,
                 out: str) -> None:
    from ..plot.zf_experiments import transfer_figure
    from ..zf.transfer import transfer

    with run_output(out, "transfer") as folder:
        m = open_model(model, weights, device)

        def report(row) -> None:
            click.echo(f"k={row.k} {row.layer}: test accuracy {row.test_accuracy:.2%}")

        result = transfer(m, data, layers=[v.strip() for v in layers.split(",") if v.strip()] if layers else None,
                          pool=pool, epochs=epochs, batch_size=batch_size, lr=lr, test_fraction=test_fraction,
                          seed=seed, scratch=scratch, progress=show_progress(), on_row=report)
        folder.write_json("transfer.json", result.to_dict())
        save(transfer_figure(result), folder.path("transfer.png"))
    print_table(*result.table())


@cli.command("accuracy", help="Top-1 accuracy of each MODEL on the labelled DATA (the last argument) and, with "
                              "several models, of their ensemble (mean of the softmax). Sources other than digits "
                              "and samples:N are streamed (an ImageNet validation folder works). " + DATA_HELP)
@click.argument("args", nargs=-1, required=True, metavar="MODEL... DATA")
@click.option("--device", default="auto", show_default=True)
@batch_size_option
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="DataLoader worker processes reading a streamed source.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def accuracy_cmd(args: tuple[str, ...], device: str, batch_size: int | None, workers: int, as_json: bool) -> None:
    import json

    from ..dataset.sources import skipped_lines
    from ..zf.ensemble import ensemble_accuracy

    if len(args) < 2:
        raise CnnscopeError("give one or more models and then the labelled data (cnnscope accuracy A.pt B.pt digits)")
    *names, data = args
    models = [open_model(n, None, device) for n in names]
    result = ensemble_accuracy(models, data, batch_size=batch_size, num_workers=workers, progress=show_progress())
    result.members = list(names)
    for line in skipped_lines(result.skipped):
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps({"data": data, **result.to_dict()}, indent=2))
        return
    print_table(*result.table())
