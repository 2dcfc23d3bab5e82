"""ctrain-dist: compare stochastic constrained-training algorithms at cluster scale.

The data flow, one folder per stage (``docs/design.md``)::

    spec → launch (here, Ray Tune, SLURM) → trial → store (Parquet) → analysis (stats, report)

What a user scripts against is here, loaded on first use so that ``import ctrain_dist`` (and the
store, report and status commands) never pays for torch or Ray::

    import ctrain_dist as ct
    spec = ct.load_spec("sweeps/quickstart.yaml", ["seeds=[0, 1]"])
    ct.run_sweep(spec, Path("runs/quick"))
    trials = ct.open_store("runs/quick").trials()
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import Any

from ctrain_dist import moved

__version__ = version("ctrain-dist")

PUBLIC: dict[str, tuple[str, str]] = {
    "SpecError": ("ctrain_dist.errors", "SpecError"),
    "load_spec": ("ctrain_dist.spec", "load_spec"),
    "parse_spec": ("ctrain_dist.spec", "parse_spec"),
    "SweepSpec": ("ctrain_dist.spec", "SweepSpec"),
    "TrialSpec": ("ctrain_dist.spec", "TrialSpec"),
    "ALGORITHMS": ("ctrain_dist.algorithms", "ALGORITHMS"),
    "Algorithm": ("ctrain_dist.algorithms", "Algorithm"),
    "CONSTRAINTS": ("ctrain_dist.constraints", "CONSTRAINTS"),
    "Constraint": ("ctrain_dist.constraints", "Constraint"),
    "run_sweep": ("ctrain_dist.launch.ray_sweep", "run_sweep"),
    "train_locally": ("ctrain_dist.launch.local", "train_locally"),
    "open_store": ("ctrain_dist.store", "open"),
    "Store": ("ctrain_dist.store", "Store"),
    "write_report": ("ctrain_dist.analysis.report", "write_report"),
}
"""Public name → (module, attribute): the whole surface, in one table."""

__all__ = ["__version__", *PUBLIC]

moved.install()


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'ctrain_dist' has no attribute {name!r}")
    module, attribute = PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
