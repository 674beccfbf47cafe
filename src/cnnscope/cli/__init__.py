"""The ``cnnscope`` command line: a thin layer over the API. Each area registers its commands here."""

from . import core, demo  # noqa: F401  (registers commands)
from .app import cli, main

__all__ = ["cli", "main"]
