"""The small-CNN tutorial's commands (Zeiler & Fergus' tutorial workflow): ``boundary``."""

from __future__ import annotations

import click

from ..errors import CnnscopeError
from ..outputs import run_output
from .app import batch_size_option, open_model, show_progress
from .zf import IMAGES, model_command, numbers, out_option, read_images, save


@model_command("boundary", IMAGES)
@click.option("--resolution", type=click.IntRange(2), default=41, show_default=True, help="Points per axis.")
@click.option("--span", default=None, help="LO,HI of both coordinates (default -0.5,1.5 or -1,1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the random directions.")
@batch_size_option
@out_option("zf-boundary")
def boundary_cmd(model: str, images: tuple[str, ...], weights: str | None, device: str, resolution: int,
                 span: str | None, seed: int, batch_size: int | None, out: str) -> None:
    """Predicted class over the plane through three IMAGES (or one image and two random directions)."""
    from ..plot.zf import boundary_figure
    from ..zf.boundary import decision_plane

    lohi = numbers(span)
    if lohi is not None and len(lohi) != 2:
        raise CnnscopeError(f"--span is LO,HI, got {span!r}")
    with run_output(out, "boundary") as folder:
        m = open_model(model, weights, device)
        p = decision_plane(m, read_images(images), resolution=resolution, span=tuple(lohi) if lohi else None,
                           seed=seed, batch_size=batch_size, progress=show_progress())
        folder.write_json("boundary.json", p.to_dict())
        save(boundary_figure(p), folder.path("boundary.png"))
    click.echo(f"{len(p.labels)} classes on the plane: " + ", ".join(list(p.labels.values())[:8]))
