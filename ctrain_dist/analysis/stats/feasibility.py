"""Feasibility rates per algorithm: the share of seeds meeting the constraints on test."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ctrain_dist.analysis.stats.intervals import wilson_interval
from ctrain_dist.analysis.stats.outcomes import (
    DEFAULT_TOLERANCE,
    OUTCOME_COLUMNS,
    feasible,
    measured,
    outcome_counts,
)
from ctrain_dist.analysis.stats.summary import DEFAULT_BY
from ctrain_dist.store.schema import MAX_VIOLATION, TEST, final_column

FEASIBILITY_COLUMNS: tuple[str, ...] = (*OUTCOME_COLUMNS, "count", "share", "ci_low", "ci_high")


def feasibility(
    trials: pd.DataFrame,
    violation_col: str = final_column(TEST, MAX_VIOLATION),
    by: Sequence[str] = DEFAULT_BY,
    tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """Share of seeds whose violation is ≤ ``tolerance``, with a Wilson 95% interval.

    Errored trials are left out of ``n`` (counted in ``errored``): an error is a failure of
    the infrastructure and carries no measurement. A diverged seed counts as infeasible
    whatever its row says (a NaN model predicting one class has no violation), and so does a
    missing violation, so an algorithm is never flattered by losing its bad seeds.

    Returns:
        One row per group: ``*by, n, diverged, errored, count, share, ci_low, ci_high``.
    """
    counts = outcome_counts(trials, by).set_index(list(by))
    rows = measured(trials)
    met = rows.assign(_met=feasible(rows, violation_col, tolerance)).groupby(list(by))["_met"]
    table = counts.assign(count=met.sum()).fillna({"count": 0}).astype({"count": int})
    table["share"] = table["count"] / table["n"].where(table["n"] > 0)
    intervals = [wilson_interval(c, n) for c, n in zip(table["count"], table["n"], strict=True)]
    table["ci_low"] = [low for low, _ in intervals]
    table["ci_high"] = [high for _, high in intervals]
    return table.reset_index()[[*by, *FEASIBILITY_COLUMNS]]
