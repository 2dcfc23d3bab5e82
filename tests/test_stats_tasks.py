"""Specification of the aggregates across tasks (rliable; Demšar 2006)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ctrain_dist.analysis.stats import tasks

# Demšar (2006), Table 5(a): q_0.05 of the Nemenyi test for k = 2..6 classifiers.
DEMSAR_Q_005 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850}


def runs_frame(objectives: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """Runs of each algorithm on each task; every run feasible unless its objective is inf."""
    rows = [
        {
            tasks.TASK: task,
            "algorithm": algorithm,
            "seed": seed,
            tasks.RUN_OBJECTIVE: value,
            tasks.RUN_VIOLATION: 0.0 if np.isfinite(value) else np.inf,
            tasks.RUN_FEASIBLE: bool(np.isfinite(value)),
        }
        for task, by_algorithm in objectives.items()
        for algorithm, values in by_algorithm.items()
        for seed, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


THREE_TASKS = runs_frame(
    {
        "adult-sex": {
            "alm": [0.30, 0.31, 0.32],
            "pbm": [0.33, 0.34, 0.35],
            "sgd": [0.36, 0.37, 0.4],
        },
        "adult-race": {"alm": [1.0, 1.1, 1.2], "pbm": [1.3, 1.4, 1.5], "sgd": [1.6, 1.7, np.inf]},
        "acs-ok": {"alm": [5.0, 5.5, 6.0], "pbm": [4.0, 7.0, 7.5], "sgd": [8.0, 8.5, 9.0]},
    }
)


@pytest.mark.parametrize("k", sorted(DEMSAR_Q_005))
def test_nemenyi_critical_difference_uses_demsars_q(k) -> None:
    cd = tasks.nemenyi_critical_difference(k, n_tasks=10)
    q = cd / np.sqrt(k * (k + 1) / 60)
    assert q == pytest.approx(DEMSAR_Q_005[k], abs=1e-3)


def test_normalised_scores_are_per_task_with_diverged_runs_worst() -> None:
    scores = tasks.normalised_scores(THREE_TASKS)
    by_task = THREE_TASKS.assign(score=scores).groupby(tasks.TASK)["score"]
    assert (by_task.max() == 1.0).all() and (by_task.min() == 0.0).all()
    diverged = ~np.isfinite(THREE_TASKS[tasks.RUN_OBJECTIVE])
    assert (scores[diverged] == 0.0).all()


def test_aggregates_resample_within_tasks() -> None:
    runs = THREE_TASKS.assign(score=1.0)
    runs.loc[runs[tasks.TASK] == "acs-ok", "score"] = 0.0
    row = tasks.aggregates(runs, "score").set_index("algorithm").loc["alm"]
    # every resample keeps each task's three runs, so the mean never moves
    assert row[["mean", "mean_low", "mean_high"]].tolist() == pytest.approx([2 / 3] * 3)
    assert row["tasks"] == 3 and row["runs"] == 9


def test_probability_of_improvement_is_averaged_over_tasks() -> None:
    estimate, low, high, count = tasks.average_probability_of_improvement(THREE_TASKS, "alm", "pbm")
    # alm beats every pbm run on two tasks; on acs-ok 6 of 9 pairs (5.0, 5.5, 6.0 vs 4.0, 7, 7.5)
    assert estimate == pytest.approx((1 + 1 + 6 / 9) / 3)
    assert low <= estimate <= high and count == 3


def test_task_ranks_are_lexicographic_and_friedman_matches_scipy() -> None:
    ranks = tasks.task_ranks(THREE_TASKS)
    assert ranks.loc["adult-race"].tolist() == [1.0, 2.0, 3.0]
    result = tasks.friedman(ranks)
    expected = sps.friedmanchisquare(*ranks.to_numpy().T)
    assert (result["statistic"], result["p_chi2"]) == pytest.approx(
        (expected.statistic, expected.pvalue)
    )


def test_friedman_exact_p_counts_the_within_task_permutations() -> None:
    ranks = pd.DataFrame([[1.0, 2.0, 3.0]] * 3, columns=["a", "b", "c"])
    # the observed spread is the largest: of the 6² arrangements of the other two tasks (the
    # first fixed), only the one that repeats the first task's order reaches it
    assert tasks.friedman(ranks)["p_exact"] == pytest.approx(1 / 36)


def test_friedman_is_undefined_below_three_algorithms() -> None:
    ranks = pd.DataFrame([[1.0, 2.0]] * 4, columns=["a", "b"])
    assert np.isnan(tasks.friedman(ranks)["p_exact"])


def test_holm_posthoc_tests_mean_ranks_with_demsars_standard_error() -> None:
    ranks = pd.DataFrame([[1.0, 2.0, 3.0]] * 6, columns=["a", "b", "c"])
    row = tasks.holm_posthoc(ranks).set_index(["a", "b"]).loc[("a", "c")]
    assert row["z"] == pytest.approx(-2.0 / np.sqrt(3 * 4 / 36))
    assert row["p_holm"] >= row["p"]


def test_cliques_join_algorithms_closer_than_the_critical_difference() -> None:
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 2.6, "d": 3.9})
    assert tasks.cliques(ranks, critical_difference=1.2) == [["a", "b"], ["b", "c"]]
