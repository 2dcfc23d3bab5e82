"""The rows a trial produces for the store: identity, configuration, provenance.

The column contract (one ``trials`` row per attempt, one ``evals`` row per evaluation point
and split) is documented in ``store.py``; this module only assembles rows, so the trainer,
the sweep driver and ``ctrain train`` all write identical shapes.
"""

from __future__ import annotations

import functools
import json
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.spec import TrialSpec


def utc_now() -> datetime:
    return datetime.now(UTC)


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def _git_commit() -> str:
    """The commit of the checkout the package runs from, or "unknown" outside a checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


@functools.cache
def provenance() -> dict[str, str]:
    """Where and with what a row was produced (computed once per process)."""
    return {
        "git_commit": _git_commit(),
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "torch_version": _package_version("torch"),
        "ray_version": _package_version("ray"),
        "pyarrow_version": _package_version("pyarrow"),
        "pandas_version": _package_version("pandas"),
        "numpy_version": _package_version("numpy"),
        "ctrain_version": metadata.version("ctrain-dist"),
    }


def identity(trial: TrialSpec, attempt_id: str) -> dict[str, Any]:
    """The columns that tie a row to its sweep, trial, attempt and configuration."""
    return {
        "sweep_id": trial.sweep_id,
        "trial_id": trial.trial_id,
        "attempt_id": attempt_id,
        "algorithm": trial.algorithm,
        "config_label": trial.config_label,
        "seed": trial.seed,
    }


def trial_row(
    trial: TrialSpec,
    attempt_id: str,
    status: str,
    *,
    error: str | None = None,
    started_at: datetime | None = None,
    device: str = "",
    packed_with: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``trials`` row: identity, full config as JSON and flattened ``hp_*``, provenance.

    ``packed_with``: the trial ids of the pack this seed trained in (``packed.py``), itself
    included; null for a seed that trained alone. The only column that tells the two apart.
    """
    ended_at = utc_now()
    started_at = started_at or ended_at
    row = {
        **identity(trial, attempt_id),
        "constrained": ALGORITHMS[trial.algorithm].constrained,
        "status": status,
        "error": error,
        "config_json": json.dumps(trial.model_dump(mode="json"), sort_keys=True),
        **{f"hp_{k}": v for k, v in sorted(trial.hyperparameters.items())},
        "started_at": started_at,
        "ended_at": ended_at,
        "wall_time_s": (ended_at - started_at).total_seconds(),
        "device": device,
        "packed_with": json.dumps(packed_with) if packed_with else None,
        **provenance(),
    }
    row.update(extra or {})
    return row
