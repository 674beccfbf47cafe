"""Exceptions a person can act on (docs/ARCHITECTURE.md, rule 7).

Every error raised on purpose by cnnscope derives from :class:`CnnscopeError`; the CLI prints its message on
one line and exits non-zero.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnscopeError(Exception):
    """Base class of every error cnnscope raises on purpose."""


class ModelError(CnnscopeError, KeyError):
    """Unknown model name, unreadable checkpoint or weights that do not fit the architecture."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LayerError(CnnscopeError, KeyError):
    """Unknown layer name, or a layer that cannot be used the way it was asked for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ImageError(CnnscopeError, ValueError):
    """An image that cannot be read or has the wrong shape; the message names the file and the reason."""


class MethodError(CnnscopeError, KeyError):
    """Unknown method, recipe or objective name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (prefix and substring hits first)."""
    cands = list(candidates)
    hits = [c for c in cands if c.startswith(name) or (len(name) >= 3 and name in c)]
    fuzzy = difflib.get_close_matches(name, cands, n=n, cutoff=0.5)
    out: list[str] = []
    for c in hits[:n] + fuzzy:
        if c not in out:
            out.append(c)
    return out[:n]


def unknown(kind: str, name: str, candidates: Iterable[str]) -> str:
    """Format "unknown <kind> 'name'; did you mean: a, b?" with close matches when there are any."""
    cands = list(candidates)
    matches = close_matches(name, cands)
    msg = f"unknown {kind} {name!r}"
    if matches:
        return msg + "; did you mean: " + ", ".join(matches) + "?"
    if len(cands) <= 12:
        return msg + "; choose one of: " + ", ".join(cands)
    return msg + f" ({len(cands)} available)"
