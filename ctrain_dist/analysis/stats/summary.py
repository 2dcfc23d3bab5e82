"""Point estimates with their small-sample intervals, per group and metric."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from ctrain_dist.analysis.stats.intervals import LOCATIONS
from ctrain_dist.analysis.stats.outcomes import measured, worst_scores
from ctrain_dist.store.schema import ALGORITHM, CONFIG_LABEL

DEFAULT_BY: tuple[str, ...] = (ALGORITHM, CONFIG_LABEL)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "n",
    "diverged",
    "mean",
    "ci_low",
    "ci_high",
    "std",
    "median",
    "median_ci_low",
    "median_ci_high",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
)


def describe(values: np.ndarray) -> dict[str, float]:
    """n, std and every location of ``LOCATIONS`` with its interval, of one set of runs.

    ``values`` may hold ±inf (diverged seeds, see ``outcomes``); NaN entries are dropped.
    """
    values = values[~np.isnan(values)]
    finite = values[np.isfinite(values)]
    row: dict[str, float] = {
        "n": values.size,
        "diverged": int(values.size - finite.size),
        "std": float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan"),
    }
    for name, (estimate, interval) in LOCATIONS.items():
        low, high = interval(values)
        point = float(estimate(values)) if values.size else float("nan")
        prefix = "" if name == "mean" else f"{name}_"
        row.update({name: point, f"{prefix}ci_low": low, f"{prefix}ci_high": high})
    return row


def summarise(
    trials: pd.DataFrame,
    metrics: list[str],
    by: Sequence[str] = DEFAULT_BY,
    higher_is_better: Collection[str] = (),
) -> pd.DataFrame:
    """Mean, median and IQM with their intervals (``intervals.LOCATIONS``) and std, per group.

    Errored rows are left out; a diverged row counts as the worst run (``outcomes``), so its
    group's mean is infinite and its median and IQM move up by a rank. ``std`` is over the
    finite values (ddof=1).

    Returns:
        One row per group × metric: ``*by, metric`` then ``SUMMARY_COLUMNS``.
    """
    rows = []
    for key, group in measured(trials).groupby(list(by), sort=True):
        labels = dict(zip(by, key, strict=True))
        for metric in metrics:
            values = worst_scores(group, metric, higher_is_better)
            rows.append({**labels, "metric": metric, **describe(values)})
    return pd.DataFrame(rows, columns=[*by, "metric", *SUMMARY_COLUMNS])
