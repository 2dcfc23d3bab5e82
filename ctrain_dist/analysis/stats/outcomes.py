"""What a trial's outcome means for every statistic: measured, diverged (worst), errored.

Three kinds of rows reach the analysis, and each statistic must treat them alike:

* ``finished``: the budget was spent; its metrics are measurements.
* ``diverged``: the loss became non-finite. Whatever metric values the row carries (a NaN
  model predicts one class, so its accuracy, DP gap and max violation can look *good*), the
  seed is **infeasible and the worst run on every metric**: ``worst_scores`` replaces each of
  its values by +inf for a loss and −inf for a gain, so ranks, medians, IQMs, profiles and
  selection all place it last, and a mean that includes it is infinite rather than flattered.
* ``error``: the infrastructure failed; the row carries no measurement of the algorithm and
  is left out of every statistic (``measured``), but counted (``outcome_counts``), so a table
  always shows how many seeds it rests on and how many diverged or errored.

Feasibility: a measured seed is feasible when it did not diverge and its max violation is at
most the tolerance (``analysis.feasibility_tolerance`` in the spec, default 0).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from ctrain_dist.store.schema import (
    SEED,
    STATUS,
    STATUS_DIVERGED,
    STATUS_ERROR,
)

DEFAULT_TOLERANCE = 0.0
OUTCOME_COLUMNS: tuple[str, ...] = ("n", "diverged", "errored")


def measured(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows that measure the algorithm: every status but ``error``."""
    if STATUS not in trials.columns:
        return trials
    return trials[trials[STATUS] != STATUS_ERROR]


def diverged(trials: pd.DataFrame) -> np.ndarray:
    """Whether each row diverged, as a boolean array aligned with ``trials``."""
    if STATUS not in trials.columns:
        return np.zeros(len(trials), dtype=bool)
    return (trials[STATUS] == STATUS_DIVERGED).to_numpy()


def worst_scores(
    trials: pd.DataFrame, metric: str, higher_is_better: Collection[str] = ()
) -> np.ndarray:
    """``metric`` of each row with a diverged row's value replaced by the worst possible.

    +inf for a loss, −inf when ``metric`` is in ``higher_is_better``. Other missing values
    stay NaN (a metric that does not exist for that row, e.g. AUC of a one-class split).
    """
    values = trials[metric].to_numpy(dtype=float).copy()
    values[diverged(trials)] = -np.inf if metric in higher_is_better else np.inf
    return values


def feasible(
    trials: pd.DataFrame, violation_col: str, tolerance: float = DEFAULT_TOLERANCE
) -> np.ndarray:
    """Whether each row is feasible: not diverged, violation ≤ ``tolerance`` (NaN: no)."""
    violation = worst_scores(trials, violation_col)
    with np.errstate(invalid="ignore"):
        return violation <= tolerance


def outcome_counts(trials: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group: ``n`` measured seeds (finished + diverged), ``diverged`` and ``errored``."""
    status = trials[STATUS] if STATUS in trials.columns else pd.Series("", index=trials.index)
    flags = pd.DataFrame(
        {
            **{column: trials[column] for column in by},
            "n": status != STATUS_ERROR,
            "diverged": status == STATUS_DIVERGED,
            "errored": status == STATUS_ERROR,
        }
    )
    return flags.groupby(list(by), sort=True)[list(OUTCOME_COLUMNS)].sum().reset_index()


def seed_set(trials: pd.DataFrame) -> frozenset:
    """The seeds the rows hold (the pairing key: seed s means the same init and data order)."""
    return frozenset(trials[SEED]) if SEED in trials.columns else frozenset()
