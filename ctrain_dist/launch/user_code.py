"""Where a sweep's user code lives, so the processes that run its trials can import it too.

Why: a spec names user code by import path (``model.factory``, ``data.factory``, a
constraint ``kind``, an algorithm ``name``), which the driver imports through its own
``sys.path``. Ray workers and SLURM jobs are other processes: they inherit ``PYTHONPATH``
only if it was exported, and a relative entry (``PYTHONPATH=.``) means another folder in a
process started elsewhere. So the launchers hand on one absolute ``PYTHONPATH``: the folder
each user module was imported from, then the driver's own entries made absolute. The Ray
sweep gives it to Ray's runtime environment (``env_vars``, every worker of the job), SLURM
jobs export it in their script. Installed packages (entry points) need nothing: they are in
the environment's ``site-packages``.
"""

from __future__ import annotations

import importlib
import os
import site
import sysconfig
from pathlib import Path

from ctrain_dist.plugins import is_import_path
from ctrain_dist.spec import SweepSpec


def user_import_paths(spec: SweepSpec) -> list[str]:
    """The spec's ``package.module:name`` paths: model and data factories, constraints,
    algorithms (names of built-ins and entry points are not import paths)."""
    named = [
        spec.model.factory,
        getattr(spec.data, "factory", None),
        *(constraint.kind for constraint in spec.constraints),
        *(algorithm.name for algorithm in spec.algorithms),
    ]
    return [name for name in named if name is not None and is_import_path(name)]


def import_root(path: str) -> Path | None:
    """The folder that must be on ``sys.path`` for ``path``'s module to import (None: a
    module without a file, or one inside the environment's own ``site-packages``)."""
    module_name = path.partition(":")[0]
    module = importlib.import_module(module_name)
    source = getattr(module, "__file__", None)
    if source is None:
        return None
    root = Path(source).resolve().parent
    if Path(source).name == "__init__.py":
        root = root.parent
    for _ in module_name.split(".")[1:]:
        root = root.parent
    installed = {
        Path(p).resolve() for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"])
    }
    return None if root in installed else root


def user_python_path(spec: SweepSpec) -> str:
    """The ``PYTHONPATH`` a trial's process needs for ``spec`` (empty: nothing to add)."""
    roots = [import_root(path) for path in user_import_paths(spec)]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    folders = [str(root) for root in roots if root is not None]
    folders += [str(Path(p).resolve()) for p in inherited]
    return os.pathsep.join(dict.fromkeys(folders))
