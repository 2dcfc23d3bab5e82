"""Tuning curves: how good an algorithm gets for a tuning budget of n configurations.

Dodge et al. 2019 ("Show Your Work") report the *expected validation performance* of the best
of n configurations drawn from the N an experimenter tried: with the N values as an empirical
distribution, the best of n draws with replacement has the closed-form distribution
P(best ≤ v_(j)) = 1 − (1 − j/N)^n (values sorted best first), so its mean and variance are
exact sums over the sorted values — no resampling.

A constrained comparison adds one rule: a configuration that is infeasible on validation loses
to any feasible one, whatever its objective. So the N configurations are ranked feasible first
(by objective), infeasible after, and the best of n draws is feasible unless all n draws are
infeasible, which happens with probability (1 − K/N)^n for K feasible of N. The curve reported
is therefore two numbers per n:

* ``p_any_feasible`` = 1 − (1 − K/N)^n, the chance that n configurations include a feasible one;
* ``expected_best`` (and ``std``), the expected best validation objective *given* that the n
  draws include a feasible configuration. For an algorithm with no feasible configuration it
  is NaN at every n: no budget buys a feasible model from what was tried.

A configuration's value is the one selection judges it by (``selection.configuration_medians``):
the median over its seeds of the validation objective and of the validation max violation,
a diverged seed counting as +inf; it is feasible when that median violation is within the
tolerance. The median, not the mean, so that the curve at n = N is exactly the value of the
configuration ``select_configurations`` picks (with two seeds the two are the same).

The estimator assumes the N configurations are draws from one distribution over the search
space: true for random search; for a grid or an adaptive searcher (TPE) the curve describes
what was tried rather than what a fresh search would find.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ctrain_dist.analysis.stats.outcomes import DEFAULT_TOLERANCE
from ctrain_dist.analysis.stats.selection import configuration_medians
from ctrain_dist.store.schema import (
    ALGORITHM,
    CONFIG_LABEL,
    MAX_VIOLATION,
    OBJECTIVE,
    VAL,
    final_column,
    hyperparameter_column,
)

VAL_OBJECTIVE = final_column(VAL, OBJECTIVE)
VAL_MAX_VIOLATION = final_column(VAL, MAX_VIOLATION)
HYPERPARAMETER_PREFIX = hyperparameter_column("")
CURVE_COLUMNS: tuple[str, ...] = (
    "n",
    "configurations",
    "feasible_configurations",
    "feasible_share",
    "p_any_feasible",
    "expected_best",
    "std",
    "band_low",
    "band_high",
)


def best_of_n_distribution(
    objective: np.ndarray, is_feasible: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """The distribution of the best of ``n`` draws with replacement, feasible first.

    Args:
        objective: shape ``(N,)``, one value per configuration (lower is better).
        is_feasible: shape ``(N,)``, whether each configuration is feasible.
        n: draws, ≥ 1.

    Returns:
        ``(values, probabilities, p_none_feasible)``: the feasible objectives sorted best
        first, the probability that each position is the best of the n draws, and the
        probability that no draw is feasible. The probabilities and ``p_none_feasible`` sum to 1.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    objective = np.asarray(objective, dtype=float)
    is_feasible = np.asarray(is_feasible, dtype=bool)
    total = objective.size
    values = np.sort(objective[is_feasible])
    # Position j (0-based) or anything ranked after it: N − j of the N configurations.
    at_or_after = (total - np.arange(values.size + 1)) / total
    survival = at_or_after**n
    return values, survival[:-1] - survival[1:], float(survival[-1])


def expected_best(
    objective: np.ndarray, is_feasible: np.ndarray, n: int
) -> tuple[float, float, float]:
    """Mean and standard deviation of the best feasible objective of ``n`` draws, given one
    is feasible, and the probability that one is; NaN mean and std when none can be."""
    values, probabilities, none = best_of_n_distribution(objective, is_feasible, n)
    p_any = 1.0 - none
    if values.size == 0 or not np.all(np.isfinite(values)):
        return np.nan, np.nan, p_any
    conditional = probabilities / p_any
    mean = float(conditional @ values)
    variance = float(conditional @ (values - mean) ** 2)
    return mean, float(np.sqrt(max(variance, 0.0))), p_any


def tuning_curve(objective: np.ndarray, is_feasible: np.ndarray) -> pd.DataFrame:
    """The curve of one algorithm for n = 1..N (see the module docstring).

    The band is the mean ± one standard deviation of the best of n, clipped to the range of
    the feasible values (the best of n never leaves it).

    Returns:
        One row per n: ``CURVE_COLUMNS``.
    """
    objective = np.asarray(objective, dtype=float)
    is_feasible = np.asarray(is_feasible, dtype=bool)
    total, feasible_count = objective.size, int(is_feasible.sum())
    rows = []
    for n in range(1, total + 1):
        mean, std, p_any = expected_best(objective, is_feasible, n)
        low, high = mean - std, mean + std
        if feasible_count and np.isfinite(mean):
            bounds = objective[is_feasible]
            low, high = max(low, bounds.min()), min(high, bounds.max())
        rows.append((n, total, feasible_count, feasible_count / total, p_any, mean, std, low, high))
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def configuration_values(
    trials: pd.DataFrame,
    objective_col: str = VAL_OBJECTIVE,
    violation_col: str = VAL_MAX_VIOLATION,
    tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """Per configuration: its value (median over seeds) and whether it is feasible.

    A configuration is feasible when its median violation is ≤ ``tolerance``; a missing or
    infinite median objective (every seed errored, or half of them diverged) is infeasible.

    Returns:
        One row per configuration: ``algorithm, config_label, objective_col, violation_col,
        feasible``.
    """
    medians = configuration_medians(trials, objective_col, violation_col)
    with np.errstate(invalid="ignore"):
        feasible = (medians[violation_col] <= tolerance) & np.isfinite(medians[objective_col])
    return medians.assign(feasible=feasible.to_numpy(dtype=bool))


def tuning_curves(
    trials: pd.DataFrame,
    objective_col: str = VAL_OBJECTIVE,
    violation_col: str = VAL_MAX_VIOLATION,
    tolerance: float = DEFAULT_TOLERANCE,
    by: Sequence[str] = (ALGORITHM,),
) -> pd.DataFrame:
    """Tuning curves of every algorithm of a tuning sweep, from its trials frame.

    Returns:
        One row per algorithm × n: ``*by, CURVE_COLUMNS``.
    """
    values = configuration_values(trials, objective_col, violation_col, tolerance)
    pieces = [
        tuning_curve(group[objective_col], group["feasible"]).assign(
            **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        )
        for key, group in values.groupby(list(by), sort=True)
    ]
    columns = [*by, *CURVE_COLUMNS]
    if not pieces:
        return pd.DataFrame(columns=columns)
    return pd.concat(pieces, ignore_index=True)[columns]


def configurations_per_algorithm(trials: pd.DataFrame) -> pd.Series:
    """How many configurations each algorithm tried (the N of its curve)."""
    return trials.groupby(ALGORITHM, sort=True)[CONFIG_LABEL].nunique()


def sensitivity(
    trials: pd.DataFrame,
    objective_col: str = VAL_OBJECTIVE,
    violation_col: str = VAL_MAX_VIOLATION,
    tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """Each configuration's value against each hyperparameter its algorithm tuned.

    A hyperparameter is tuned when the algorithm's configurations hold more than one value of
    it (a fixed one says nothing about sensitivity). Values are the configuration's median
    over seeds, as in ``configuration_values``.

    Returns:
        One row per configuration × tuned hyperparameter: ``algorithm, config_label,
        hyperparameter`` (name without the column prefix), ``value``, ``objective_col``,
        ``violation_col``, ``feasible``.
    """
    columns = [objective_col, violation_col, "feasible"]
    values = configuration_values(trials, objective_col, violation_col, tolerance)
    settings = trials.drop_duplicates([ALGORITHM, CONFIG_LABEL])
    pieces = []
    for _, configs in settings.groupby(ALGORITHM, sort=True):
        scored = configs.merge(values, on=[ALGORITHM, CONFIG_LABEL], suffixes=("_row", ""))
        for column in [c for c in configs.columns if c.startswith(HYPERPARAMETER_PREFIX)]:
            if configs[column].nunique(dropna=True) < 2:
                continue
            pieces.append(
                scored[[ALGORITHM, CONFIG_LABEL, *columns]].assign(
                    hyperparameter=column.removeprefix(HYPERPARAMETER_PREFIX),
                    value=scored[column].to_numpy(),
                )
            )
    order = [ALGORITHM, CONFIG_LABEL, "hyperparameter", "value", *columns]
    if not pieces:
        return pd.DataFrame(columns=order)
    return pd.concat(pieces, ignore_index=True)[order]
