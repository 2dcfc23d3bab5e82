"""Where ``data.factory`` names are looked up: installed entry points, then import paths.

Its own module so that the spec's data model (``config.py``) can refuse a factory that is not
there without importing the loader that calls it (``custom.py``, which imports ``config``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ctrain_dist.plugins import PluginError, Registry

DATASET_FACTORIES: Registry[Callable[..., Any]] = Registry({}, "ctrain_dist.datasets")
"""No built-ins: the ``ctrain_dist.datasets`` entry points, and any import path."""


def dataset_factory(name: str) -> Callable[..., Any]:
    """The factory ``name`` means: an entry point's, or a ``package.module:function``.

    Raises:
        ValueError: (``plugins.PluginError`` among them) saying why it is not there.
    """
    try:
        factory = DATASET_FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(DATASET_FACTORIES)) or "none installed"
        raise PluginError(
            f"unknown dataset factory {name!r}; give package.module:function or an installed "
            f"ctrain_dist.datasets entry point (known: {known})"
        ) from None
    if not callable(factory):
        raise PluginError(f"{name} is not callable; name a function returning the data")
    return factory
