"""The tuning stage's numbers: tuning curves, configuration values, sensitivity, and the stage
set beside its confirmation; every number from ``stats``, laid out by ``tuning_sections``.

A sweep is a *tuning stage* when some algorithm tried more than one configuration: then how
good each algorithm gets for its tuning budget (the tuning curve) is itself a result, and the
selected configuration's validation score is optimistic (it won on those seeds). Its
``<name>-confirm`` sweep is the *confirmation stage*: the selected configurations on fresh
seeds. The two are shown apart, never pooled (``analysis.study``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ctrain_dist.analysis import stats
from ctrain_dist.analysis.stats.intervals import wilson_interval
from ctrain_dist.analysis.stats.outcomes import measured
from ctrain_dist.analysis.stats.tuning_curves import (
    VAL_MAX_VIOLATION,
    VAL_OBJECTIVE,
    configuration_values,
    configurations_per_algorithm,
)
from ctrain_dist.store.schema import ALGORITHM, CONFIG_LABEL, SEED, STATUS, STATUS_STOPPED

STAGE_COLUMNS: tuple[str, ...] = (
    ALGORITHM,
    CONFIG_LABEL,
    "tuning_n",
    "tuning_objective",
    "tuning_violation",
    "confirmation_label",
    "confirmation_n",
    "confirmation_mean",
    "confirmation_low",
    "confirmation_high",
    "confirmation_feasible",
    "confirmation_feasible_low",
    "confirmation_feasible_high",
)


@dataclass(frozen=True)
class Tuning:
    """A tuning stage's frames.

    Attributes:
        curves: ``stats.tuning_curves`` on validation (one row per algorithm × n).
        values: ``configuration_values``: each configuration's median validation objective
            and violation over its seeds, and whether it is feasible.
        sensitivity: ``stats.sensitivity``: those values against each tuned hyperparameter.
        algorithms: per algorithm, configurations tried (N), seeds per configuration, feasible
            configurations (K) with the Wilson 95% interval of K/N, configurations a scheduler
            stopped early (no final value: they count as infeasible, having lost to one kept),
            the selected configuration and its validation values.
        tolerance: the feasibility tolerance everything above is computed under.
    """

    curves: pd.DataFrame
    values: pd.DataFrame
    sensitivity: pd.DataFrame
    algorithms: pd.DataFrame
    tolerance: float


def is_tuning_stage(trials: pd.DataFrame) -> bool:
    """Whether some algorithm of the sweep tried more than one configuration."""
    return bool(len(trials)) and bool((configurations_per_algorithm(trials) > 1).any())


def build_tuning(trials: pd.DataFrame, selected: pd.DataFrame, tolerance: float) -> Tuning | None:
    """The tuning stage of a sweep's trials, or None when no algorithm tried two
    configurations or the trials carry no validation metrics."""
    if not is_tuning_stage(trials) or not {VAL_OBJECTIVE, VAL_MAX_VIOLATION} <= set(trials):
        return None
    values = configuration_values(trials, tolerance=tolerance)
    return Tuning(
        curves=stats.tuning_curves(trials, tolerance=tolerance),
        values=values,
        sensitivity=stats.sensitivity(trials, tolerance=tolerance),
        algorithms=_per_algorithm(trials, selected, values),
        tolerance=tolerance,
    )


def _per_algorithm(
    trials: pd.DataFrame, selected: pd.DataFrame, values: pd.DataFrame
) -> pd.DataFrame:
    """N, seeds per configuration, K/N with its Wilson interval, the selection and its values."""
    seeds = measured(trials).groupby([ALGORITHM, CONFIG_LABEL])[SEED].nunique()
    stopped = trials[trials[STATUS] == STATUS_STOPPED].groupby(ALGORITHM)[CONFIG_LABEL].nunique()
    chosen = selected.groupby(ALGORITHM)[CONFIG_LABEL].first()
    rows = []
    for algorithm, configs in values.groupby(ALGORITHM, sort=True):
        total, feasible = len(configs), int(configs["feasible"].sum())
        low, high = wilson_interval(feasible, total)
        pick = configs.set_index(CONFIG_LABEL).loc[chosen[algorithm]]
        rows.append(
            {
                ALGORITHM: algorithm,
                "configurations": total,
                "seeds_min": int(seeds[algorithm].min()),
                "seeds_max": int(seeds[algorithm].max()),
                "feasible": feasible,
                "stopped": int(stopped.get(algorithm, 0)),
                "feasible_low": low,
                "feasible_high": high,
                "selected": chosen[algorithm],
                "selected_seeds": int(seeds[(algorithm, chosen[algorithm])]),
                "selected_objective": float(pick[VAL_OBJECTIVE]),
                "selected_violation": float(pick[VAL_MAX_VIOLATION]),
                "selected_feasible": bool(pick["feasible"]),
            }
        )
    return pd.DataFrame(rows)


def stage_comparison(
    tuning: Tuning, confirmation_selected: pd.DataFrame, tolerance: float
) -> pd.DataFrame:
    """The selected configuration's validation score in each stage, per algorithm.

    Tuning stage: the median over its tuning seeds (what won the selection, optimistic).
    Confirmation stage: the mean over the fresh seeds with its 95% Student t interval, and the
    share of fresh seeds feasible on validation with its Wilson 95% interval. The gap between
    the two is the selection's optimism (the winner's curse). ``confirmation_label`` is the
    configuration the confirmation ran: another one than the tuning stage's selection when
    the two were selected under different tolerances (``--feasibility-tolerance`` against
    the spec's ``analysis.feasibility_tolerance``).

    Returns:
        One row per algorithm in both stages: ``STAGE_COLUMNS``.
    """
    by = (ALGORITHM,)
    summary = stats.summarise(confirmation_selected, [VAL_OBJECTIVE], by=by).set_index(ALGORITHM)
    feasible = stats.feasibility(
        confirmation_selected, violation_col=VAL_MAX_VIOLATION, by=by, tolerance=tolerance
    ).set_index(ALGORITHM)
    confirmed = confirmation_selected.groupby(ALGORITHM)[CONFIG_LABEL].first()
    rows = [
        (
            r[ALGORITHM],
            r["selected"],
            r["selected_seeds"],
            r["selected_objective"],
            r["selected_violation"],
            confirmed[r[ALGORITHM]],
            int(feasible.loc[r[ALGORITHM], "n"]),
            *summary.loc[r[ALGORITHM], ["mean", "ci_low", "ci_high"]],
            int(feasible.loc[r[ALGORITHM], "count"]),
            *feasible.loc[r[ALGORITHM], ["ci_low", "ci_high"]],
        )
        for _, r in tuning.algorithms.iterrows()
        if r[ALGORITHM] in summary.index and r[ALGORITHM] in feasible.index
    ]
    return pd.DataFrame(rows, columns=list(STAGE_COLUMNS))
