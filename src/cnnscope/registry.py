"""``Registry``: one registry type for every extensible kind (attribution methods, objectives, atlas kinds, ...).

A registry maps names to objects (usually classes). Entries are added with the :meth:`Registry.register`
decorator in the module that defines them; the registry imports every module of its home package the first
time it is read, so adding an entry is adding one decorated class to one file, with no list to edit. A name
registered twice raises: two entries never silently replace each other.

Example:
    >>> METHODS = Registry("attribution method", package="cnnscope.attribution")
    >>> @METHODS.register("saliency")
    ... class Saliency(Method): ...
    >>> METHODS.get("saliency")
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from .errors import CnnscopeError, MethodError, unknown

T = TypeVar("T")


class RegistryError(CnnscopeError, ValueError):
    """A name registered twice, or an entry without a usable name."""


class Registry(Generic[T]):
    """Names -> entries of one kind, filled by decorators and discovered from a package.

    Args:
        kind: what an entry is, in words (``"attribution method"``); used in error messages.
        package: dotted package whose modules hold the entries; all of them are imported on first lookup.
        name_attr: class attribute that holds an entry's name when :meth:`register` is used without one.
    """

    def __init__(self, kind: str, package: str | None = None, *, name_attr: str = "name") -> None:
        self.kind = kind
        self.package = package
        self.name_attr = name_attr
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    # -- adding ------------------------------------------------------------------------------------------
    def register(self, name: str | Callable | None = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``, ``@REG.register()`` or ``@REG.register`` (name from the class).

        Raises:
            RegistryError: the name is taken, or the entry has no name.
        """
        if callable(name) and not isinstance(name, str):
            return self._add(None, name)  # type: ignore[return-value]

        def deco(obj: T) -> T:
            return self._add(name, obj)

        return deco

    def _add(self, name: str | None, obj: T) -> T:
        key = name if name is not None else getattr(obj, self.name_attr, None)
        if not isinstance(key, str) or not key:
            raise RegistryError(f"a {self.kind} needs a non-empty name (set {self.name_attr!r} or pass one)")
        if key in self._entries and self._entries[key] is not obj:
            where = getattr(self._entries[key], "__module__", "?")
            raise RegistryError(f"{self.kind} {key!r} is already registered (by {where}); choose another name")
        self._entries[key] = obj
        return obj

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Entries added inside the ``with`` block are removed at its end (for tests and notebooks)."""
        self._discover()
        before = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(before)

    # -- reading -----------------------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        """The entry called ``name``.

        Raises:
            MethodError: unknown name, with close matches.
        """
        self._discover()
        if not isinstance(name, str) or name not in self._entries:
            raise MethodError(unknown(self.kind, str(name), self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names in registration order."""
        self._discover()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._discover()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
