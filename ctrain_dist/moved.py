"""Module paths of ctrain-dist 0.1 that 0.2 moved, refused with a message instead of a traceback.

Why: SLURM (submitit) and Ray pickle callables by module path. A job queued under 0.1 and
started after an upgrade unpickles ``ctrain_dist.slurm.ArrayTrials``, say, and would die with
``No module named 'ctrain_dist.slurm'`` deep in submitit. Importing ``ctrain_dist`` installs
:class:`MovedModuleFinder`, so such a job fails at once with one line that says what happened
and what to do; the store is untouched, so resubmitting with ``--resume`` loses nothing and
runs no finished trial again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED: dict[str, str] = {
    "ctrain_dist.confirm": "ctrain_dist.analysis.confirm",
    "ctrain_dist.data_cli": "ctrain_dist.cli.data",
    "ctrain_dist.distributed": "ctrain_dist.trial.distributed",
    "ctrain_dist.local": "ctrain_dist.launch.local",
    "ctrain_dist.metrics": "ctrain_dist.trial.metrics",
    "ctrain_dist.model": "ctrain_dist.trial.model",
    "ctrain_dist.node_processes": "ctrain_dist.launch.slurm.node_processes",
    "ctrain_dist.packed": "ctrain_dist.trial.packed",
    "ctrain_dist.records": "ctrain_dist.trial.records",
    "ctrain_dist.report": "ctrain_dist.analysis.report",
    "ctrain_dist.slurm": "ctrain_dist.launch.slurm",
    "ctrain_dist.slurm_profile": "ctrain_dist.launch.slurm.profile",
    "ctrain_dist.stats": "ctrain_dist.analysis.stats",
    "ctrain_dist.status": "ctrain_dist.cli.status",
    "ctrain_dist.store_cli": "ctrain_dist.cli.store",
    "ctrain_dist.store_sink": "ctrain_dist.store.sink",
    "ctrain_dist.sweep": "ctrain_dist.launch.ray_sweep",
    "ctrain_dist.trainer": "ctrain_dist.trial.loop",
}
"""0.1 module → where its job went in 0.2. (``ctrain_dist.cli`` kept its path, now a package
whose ``main`` is the command; no job pickles it.)"""


class ModuleMovedError(ImportError):
    """A module path of an older ctrain-dist: a job queued before an upgrade."""


def moved_message(name: str) -> str:
    """One line: what moved, why the job fails, and how to continue without losing results."""
    return (
        f"{name} is a module path of ctrain-dist 0.1, moved to {MOVED[name]} in 0.2: this job "
        "was queued before an upgrade and cannot run under the new code; resubmit the sweep "
        "with `ctrain sweep SPEC --cluster PROFILE --resume` (finished trials in the store are "
        "kept and not run again)"
    )


class MovedModuleFinder(MetaPathFinder):
    """Refuses an import of a moved module path with :class:`ModuleMovedError`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname in MOVED:
            raise ModuleMovedError(moved_message(fullname), name=fullname)
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once), before the real package finders."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
