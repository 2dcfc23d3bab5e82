"""Model selection on validation: one configuration per algorithm, before any test claim.

Protocol: select each algorithm's configuration on validation (``select_configurations``),
then compare on test across seeds. Selecting on test would make the comparison optimistically
biased; re-running the selection on fresh seeds (``analysis.confirm``) removes the remaining
winner's-curse bias.
"""

from __future__ import annotations

import pandas as pd

from ctrain_dist.analysis.stats.outcomes import DEFAULT_TOLERANCE, measured, worst_scores
from ctrain_dist.store.schema import (
    ALGORITHM,
    CONFIG_LABEL,
    MAX_VIOLATION,
    OBJECTIVE,
    VAL,
    final_column,
)


def select_configurations(
    trials: pd.DataFrame,
    objective_col: str = final_column(VAL, OBJECTIVE),
    violation_col: str = final_column(VAL, MAX_VIOLATION),
    tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """Trials of each algorithm's selected configuration, chosen on validation only.

    Per algorithm, among configurations whose median validation violation is ≤ ``tolerance``,
    the one with the lowest median validation objective; if none is feasible, the one with the
    least median violation. A diverged seed counts as the worst value on both (``outcomes``),
    whatever its row says, so a configuration whose seeds diverge half the time has an infinite
    median and is never chosen over a stable one; errored seeds are left out. Medians, because
    a single unlucky seed must not decide the choice. Ties go to the first ``config_label`` in
    sort order, so the choice is deterministic.

    Returns:
        The rows of ``trials`` (errored ones included) that belong to the selected
        configurations.
    """
    medians = configuration_medians(trials, objective_col, violation_col)
    chosen = [
        _best_configuration(configs, objective_col, violation_col, tolerance)
        for _, configs in medians.groupby(ALGORITHM, sort=True)
    ]
    keys = pd.MultiIndex.from_frame(trials[[ALGORITHM, CONFIG_LABEL]])
    return trials[keys.isin(chosen)]


def configuration_medians(
    trials: pd.DataFrame, objective_col: str, violation_col: str
) -> pd.DataFrame:
    """Per (algorithm, configuration): the median over its measured seeds of each column.

    The one value a configuration is judged by, here and in ``tuning_curves``: a diverged
    seed counts as +inf on both columns, errored seeds are left out.

    Returns:
        One row per configuration: ``algorithm, config_label, objective_col, violation_col``.
    """
    rows = measured(trials)
    scores = pd.DataFrame(
        {
            ALGORITHM: rows[ALGORITHM],
            CONFIG_LABEL: rows[CONFIG_LABEL],
            objective_col: worst_scores(rows, objective_col),
            violation_col: worst_scores(rows, violation_col),
        }
    )
    return scores.groupby([ALGORITHM, CONFIG_LABEL], sort=True).median().reset_index()


def _best_configuration(
    configs: pd.DataFrame, objective_col: str, violation_col: str, tolerance: float
) -> tuple[str, str]:
    """(algorithm, config_label) of the best row of one algorithm's median table."""
    feasible = configs[configs[violation_col] <= tolerance]
    if feasible[objective_col].notna().any():
        best = feasible.loc[feasible[objective_col].idxmin()]
    elif configs[violation_col].notna().any():
        best = configs.loc[configs[violation_col].idxmin()]
    else:
        best = configs.iloc[0]
    return best[ALGORITHM], best[CONFIG_LABEL]
