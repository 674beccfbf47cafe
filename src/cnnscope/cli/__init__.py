"""The ``cnnscope`` command line: a thin layer over the API.

Every module in this package registers its commands on :data:`cli` (and demo sections with
``demo_section``) when imported; they are all imported here, so adding a command is adding a file.
"""

import importlib
import pkgutil

from .app import cli, main

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name != "app":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["cli", "main"]
