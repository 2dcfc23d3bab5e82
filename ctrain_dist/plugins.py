"""User code by name: ``package.module:attribute`` import paths and installed entry points.

Why one module: a model factory, a constraint class and an algorithm from someone else's
package are all found the same way, and a spec refuses the same way when one is not there
(one line naming the path and the fix). It imports nothing of ours but ``errors``, so every
registry (``algorithms``, ``constraints``) may use it, like ``errors`` and ``files``.

A :class:`Registry` is the built-in table plus the entry points of its group, loaded on first
use rather than at import: a plug-in module imports ``ctrain_dist.algorithms`` (to subclass
``Algorithm``), so loading it while that package is still importing would be an import circle.
A registry also answers an import path as a key (``"mylab.constraints:RecallFloor"``), so a
spec names a user's class where it names a built-in one.

Workers find user modules as the driver does: the launchers hand the folders the driver
imported them from on as ``PYTHONPATH`` (``launch/user_code.py``: Ray's runtime environment,
the SLURM job script; ``ctrain train`` ranks inherit the driver's environment).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any, TypeVar

T = TypeVar("T")

IMPORT_PATH_FIX = (
    "write it as package.module:name with the module importable here "
    "(installed, or its folder on PYTHONPATH)"
)


class PluginError(ValueError):
    """An import path or entry point that does not give what it names (a ``ValueError``, so a
    spec validator that meets one reports it as the field's error)."""


def is_import_path(name: str) -> bool:
    """Whether ``name`` reads as ``package.module:attribute`` rather than a registry name."""
    module, sep, attribute = name.partition(":")
    return bool(sep and module and attribute)


def resolve(path: str) -> Any:
    """The object ``package.module:attribute`` names (dots after the colon walk attributes).

    Raises:
        PluginError: one line saying what failed (the module, or the attribute in it) and
            how to fix it.
    """
    if not is_import_path(path):
        raise PluginError(f"{path!r} is not an import path; {IMPORT_PATH_FIX}")
    module_name, _, attribute = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as error:  # a user module may raise anything while importing
        raise PluginError(
            f"cannot import {module_name!r} ({type(error).__name__}: {error}); {IMPORT_PATH_FIX}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise PluginError(f"module {module_name!r} has no {attribute!r}; {IMPORT_PATH_FIX}")
        found = getattr(found, part)
    return found


def source_sha256(obj: Any) -> str | None:
    """The SHA-256 of the file that defines ``obj``: the provenance of a user's code (None
    when it has no readable source file, e.g. a C extension)."""
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if path is None:
        return None
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def describe(obj: Any, options: dict[str, Any]) -> dict[str, Any]:
    """A user object's provenance: where it is defined, what it was given, its file's hash."""
    path = f"{obj.__module__}:{obj.__qualname__}"
    return {"path": path, "options": options, "sha256": source_sha256(obj)}


class Registry(Mapping[str, T]):
    """Built-ins, then the entry points of ``group``, then any import path asked for by key.

    Iteration lists built-ins and entry points (what ``ctrain algorithms`` shows); an entry
    point never replaces a built-in of the same name (a built-in name means the same thing
    on every machine). An entry point that fails to load raises :class:`PluginError` naming
    its distribution, at first use, so a broken package is seen before anything starts.
    """

    def __init__(self, builtins: Mapping[str, T], group: str) -> None:
        self.builtins = dict(builtins)
        self.group = group
        self._installed: dict[str, T] | None = None
        self._paths: dict[str, T] = {}

    def _entries(self) -> dict[str, T]:
        if self._installed is None:
            installed: dict[str, T] = {}
            for point in metadata.entry_points(group=self.group):
                if point.name in self.builtins:
                    continue
                try:
                    installed[point.name] = point.load()
                except Exception as error:  # an installed package may raise anything
                    where = point.dist.name if point.dist else point.value
                    raise PluginError(
                        f"entry point {point.name!r} of {where} ({self.group}) does not load: "
                        f"{type(error).__name__}: {error}"
                    ) from None
            self._installed = installed
        return self._installed

    def __getitem__(self, name: str) -> T:
        if name in self.builtins:
            return self.builtins[name]
        entries = self._entries()
        if name in entries:
            return entries[name]
        if not is_import_path(name):
            raise KeyError(name)
        if name not in self._paths:
            self._paths[name] = resolve(name)
        return self._paths[name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter({**self.builtins, **self._entries()})

    def __len__(self) -> int:
        return len({**self.builtins, **self._entries()})
