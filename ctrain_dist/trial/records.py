"""The rows a trial produces for the store: identity, configuration, provenance, final metrics.

The column contract (one ``trials`` row per attempt, one ``evals`` row per evaluation point
and split) is the store's schema (``store/schema.py``), whose names every row here takes;
this module only assembles rows, so the loop, the runner and the sweep's driver all write
identical shapes.
"""

from __future__ import annotations

import functools
import json
import platform
import socket
import subprocess
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.constraints import CONSTRAINTS
from ctrain_dist.data.config import CustomDataSpec
from ctrain_dist.data.factories import dataset_factory
from ctrain_dist.plugins import describe, resolve
from ctrain_dist.spec import TrialSpec
from ctrain_dist.store.schema import (
    ALGORITHM,
    ATTEMPT_ID,
    CONFIG_JSON,
    CONFIG_LABEL,
    CONSTRAINED,
    CTRAIN_VERSION,
    DEVICE,
    ENDED_AT,
    EPOCH,
    ERROR,
    ESTIMATES,
    GIT_COMMIT,
    HOST,
    PACKED_WITH,
    PLUGINS,
    PYTHON_VERSION,
    SAMPLES,
    SEED,
    SPLIT,
    STARTED_AT,
    STATUS,
    STATUS_ERROR,
    STEP,
    SWEEP_ID,
    TIME_S,
    TRIAL_ID,
    VERSIONED_PACKAGES,
    WALL_TIME_S,
    empty_group_column,
    final_column,
    hyperparameter_column,
    version_column,
)

IDENTITY_COLUMNS: tuple[str, ...] = (SWEEP_ID, TRIAL_ID, ATTEMPT_ID, ALGORITHM, CONFIG_LABEL, SEED)
"""The columns every row of both tables starts with (:func:`identity`)."""
PROGRESS_AXES: tuple[str, ...] = (STEP, SAMPLES, EPOCH, TIME_S)
"""The four axes every evaluation row carries (time: training only, evaluation excluded), so
analysis can plot a curve against any of them."""

ERROR_TEXT_CHARS = 4000
"""How much of a traceback an ``error`` row keeps: its tail, where the cause is."""


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
        GIT_COMMIT: _git_commit(),
        HOST: socket.gethostname(),
        PYTHON_VERSION: platform.python_version(),
        **{version_column(name): _package_version(name) for name in VERSIONED_PACKAGES},
        CTRAIN_VERSION: metadata.version("ctrain-dist"),
    }


def identity(trial: TrialSpec, attempt_id: str) -> dict[str, Any]:
    """The columns that tie a row to its sweep, trial, attempt and configuration."""
    values = (
        trial.sweep_id,
        trial.trial_id,
        attempt_id,
        trial.algorithm,
        trial.config_label,
        trial.seed,
    )
    return dict(zip(IDENTITY_COLUMNS, values, strict=True))


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
        CONSTRAINED: ALGORITHMS[trial.algorithm].constrained,
        STATUS: status,
        ERROR: error,
        CONFIG_JSON: json.dumps(trial.model_dump(mode="json"), sort_keys=True),
        **{hyperparameter_column(k): v for k, v in sorted(trial.hyperparameters.items())},
        STARTED_AT: started_at,
        ENDED_AT: ended_at,
        WALL_TIME_S: (ended_at - started_at).total_seconds(),
        DEVICE: device,
        PACKED_WITH: json.dumps(packed_with) if packed_with else None,
        PLUGINS: plugins_used(trial),
        **provenance(),
    }
    row.update(extra or {})
    return row


def plugins_used(trial: TrialSpec) -> str | None:
    """The ``plugins`` column: each piece of user code the trial runs, by the spec field that
    names it (``plugins.describe``); None when it runs built-ins only."""
    used: dict[str, dict[str, Any]] = {}
    if trial.model.factory is not None:
        used["model.factory"] = describe(resolve(trial.model.factory), trial.model.options)
    if isinstance(trial.data, CustomDataSpec):
        factory = dataset_factory(trial.data.factory)
        used["data.factory"] = describe(factory, trial.data.options)
    for index, constraint in enumerate(trial.constraints):
        if constraint.kind not in CONSTRAINTS.builtins:
            cls = CONSTRAINTS[constraint.kind]
            used[f"constraints.{index}.kind"] = describe(cls, constraint.options)
    if trial.algorithm not in ALGORITHMS.builtins:
        used["algorithm"] = describe(ALGORITHMS[trial.algorithm], trial.hyperparameters)
    return json.dumps(used, sort_keys=True) if used else None


def error_row(trial: TrialSpec, error: BaseException | str) -> dict[str, Any]:
    """The ``trials`` row of an attempt that raised (written by whoever caught it), under an
    attempt id of its own: each failed attempt is a row, so retries stay visible."""
    text = error if isinstance(error, str) else "".join(traceback.format_exception(error))
    return trial_row(trial, uuid.uuid4().hex, STATUS_ERROR, error=text[-ERROR_TEXT_CHARS:])


def estimate_columns(estimates: int, empty: Sequence[int]) -> dict[str, int]:
    """``estimates`` and ``empty_group_estimates_<i>`` of one seed (counts on the host)."""
    return {ESTIMATES: estimates, **{empty_group_column(i): int(n) for i, n in enumerate(empty)}}


def final_columns(last_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An attempt's last evaluation (one row per split) as ``final_<split>_<metric>`` columns:
    every value of the rows but their identity, split and progress axes."""
    kept = {*IDENTITY_COLUMNS, SPLIT, *PROGRESS_AXES}
    return {
        final_column(row[SPLIT], key): value
        for row in last_rows
        for key, value in row.items()
        if key not in kept
    }
