"""The layers of a command that was given none: the model's preset study layers (``LoadedModel.study_layers``)."""

from __future__ import annotations

import click

from ..errors import CnnscopeError


def layers_or_study(m, given: list[str], how: str) -> list[str]:
    """``given`` when it names layers, else ``m.study_layers`` (said in one ``note:`` line on stderr).

    Args:
        m: the opened ``LoadedModel``.
        given: the layers the user named (empty: none).
        how: how the user names layers in this command (``"--layers"``, ``"LAYER"``), for the error.

    Raises:
        CnnscopeError: no layer given and the model has no study layers (one line saying what to give).
    """
    if given:
        return list(given)
    if not m.study_layers:
        raise CnnscopeError(f"give {how}; this model has no preset study layers")
    click.echo(f"note: layers: {m.name}'s study layers ({', '.join(m.study_layers)})", err=True)
    return list(m.study_layers)
