"""Aggregates across tasks (rliable; Demšar 2006): one verdict from several datasets.

A *runs frame* holds one row per run (seed) of an algorithm on a task, with the columns
``task``, ``algorithm``, ``seed``, ``objective`` (test objective, +inf for a diverged run),
``violation`` (+inf when diverged) and ``feasible``. Tasks differ in scale, so scores are
normalised per task before pooling (``normalised_scores``), and every interval resamples runs
within each task (stratified bootstrap), never tasks, as rliable's ``StratifiedBootstrap``.

* ``aggregates``: mean, median and IQM across all runs of all tasks, with stratified
  bootstrap CIs — of the normalised objective, or of the feasibility indicator (its mean is the
  feasibility rate over tasks).
* ``average_probability_of_improvement``: P(a run of a beats a run of b) under the
  lexicographic order (feasible first, then objective), computed per task and averaged.
* ``task_ranks`` → ``friedman`` → ``nemenyi_critical_difference`` / ``holm_posthoc``: rank the
  algorithms within each task, test that all mean ranks are equal (Friedman, with an exact
  permutation p beside scipy's chi-square one, which is poor with few tasks), then which pairs
  differ (Nemenyi's critical difference for the diagram, or Holm-corrected z tests).
"""

from __future__ import annotations

import math
from itertools import permutations, product

import numpy as np
import pandas as pd
from scipy import stats as sps

from ctrain_dist.analysis.stats.corrections import holm
from ctrain_dist.analysis.stats.effects import improvement_shares, lexicographic_ranks
from ctrain_dist.analysis.stats.intervals import (
    CONFIDENCE,
    RESAMPLES,
    bootstrap_ci,
    iqm,
    percentile_interval,
)
from ctrain_dist.analysis.stats.power import SIGNIFICANCE
from ctrain_dist.analysis.stats.two_sample import PERMUTATIONS
from ctrain_dist.store.schema import ALGORITHM

TASK = "task"
RUN_OBJECTIVE, RUN_VIOLATION, RUN_FEASIBLE, NORMALISED = (
    "objective",
    "violation",
    "feasible",
    "normalised",
)
EXACT_FRIEDMAN_MAX = 50_000
"""Within-task rank permutations up to which the Friedman p is enumerated exactly."""
TASK_AGGREGATES: dict[str, object] = {"mean": np.mean, "median": np.median, "iqm": iqm}


def normalised_scores(runs: pd.DataFrame) -> np.ndarray:
    """Each run's objective rescaled within its task: 1 the task's best run, 0 its worst.

    ``(max − x) / (max − min)`` over the task's finite objectives; a diverged run (+inf) scores
    0, and a task whose finite runs all tie scores them 1.
    """
    scores = np.zeros(len(runs))
    for _, index in runs.groupby(TASK, sort=True).indices.items():
        x = runs[RUN_OBJECTIVE].to_numpy(dtype=float)[index]
        finite = np.isfinite(x)
        if not finite.any():
            continue
        low, high = x[finite].min(), x[finite].max()
        span = high - low
        scores[index] = np.where(finite, (high - x) / span if span > 0 else 1.0, 0.0)
    return scores


def aggregates(runs: pd.DataFrame, score: str, seed: int = 0) -> pd.DataFrame:
    """Per algorithm: mean, median and IQM of ``score`` over all runs of all tasks, with
    stratified (within-task) percentile bootstrap 95% CIs.

    Returns:
        One row per algorithm: ``algorithm, tasks, runs`` then each aggregate with
        ``<name>_low`` and ``<name>_high``.
    """
    rows = []
    for algorithm, group in runs.groupby(ALGORITHM, sort=True):
        values = group[score].to_numpy(dtype=float)
        strata = group[TASK].to_numpy()
        row: dict[str, object] = {
            ALGORITHM: algorithm,
            "tasks": group[TASK].nunique(),
            "runs": len(group),
        }
        for name, statistic in TASK_AGGREGATES.items():
            low, high = bootstrap_ci(values, statistic, strata=strata, seed=seed)
            row.update({name: float(statistic(values)), f"{name}_low": low, f"{name}_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def _task_ranks_of_runs(task_runs: pd.DataFrame) -> np.ndarray:
    return lexicographic_ranks(
        task_runs[RUN_FEASIBLE].to_numpy(dtype=bool),
        task_runs[RUN_OBJECTIVE].to_numpy(dtype=float),
        task_runs[RUN_VIOLATION].to_numpy(dtype=float),
    )


def average_probability_of_improvement(
    runs: pd.DataFrame,
    a: str,
    b: str,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """P(a run of ``a`` beats a run of ``b``), lexicographic, per task, averaged over tasks.

    The CI resamples each side's runs within each task (stratified bootstrap). Tasks where
    either algorithm has no run are left out.

    Returns:
        ``(estimate, low, high, tasks)``.
    """
    rng = np.random.default_rng(seed)
    estimates, resampled = [], []
    for _, task_runs in runs.groupby(TASK, sort=True):
        ranks = _task_ranks_of_runs(task_runs)
        algorithm = task_runs[ALGORITHM].to_numpy()
        ra, rb = ranks[algorithm == a], ranks[algorithm == b]
        if ra.size == 0 or rb.size == 0:
            continue
        estimates.append(improvement_shares(ra, rb, higher_is_better=False))
        draws_a = ra[rng.integers(0, ra.size, (resamples, ra.size))]
        draws_b = rb[rng.integers(0, rb.size, (resamples, rb.size))]
        resampled.append(improvement_shares(draws_a, draws_b, higher_is_better=False))
    if not estimates:
        return float("nan"), float("nan"), float("nan"), 0
    low, high = percentile_interval(np.mean(resampled, axis=0), confidence)
    return float(np.mean(estimates)), low, high, len(estimates)


def task_ranks(runs: pd.DataFrame) -> pd.DataFrame:
    """Rank of each algorithm within each task (1 best, ties averaged), lexicographically.

    An algorithm's key on a task: its feasibility rate (higher first), then the median test
    objective of its feasible runs (lower first; none feasible: last). Only algorithms run on
    every task are ranked (the Friedman test needs complete blocks).

    Returns:
        Tasks × algorithms, the ranks.
    """
    complete = runs.groupby(ALGORITHM)[TASK].nunique() == runs[TASK].nunique()
    kept = runs[runs[ALGORITHM].isin(complete[complete].index)]
    table = {}
    for task, task_runs in kept.groupby(TASK, sort=True):
        by_algorithm = task_runs.groupby(ALGORITHM, sort=True)
        rate = by_algorithm[RUN_FEASIBLE].mean()
        feasible_objective = task_runs[task_runs[RUN_FEASIBLE].astype(bool)]
        median = feasible_objective.groupby(ALGORITHM)[RUN_OBJECTIVE].median()
        median = median.reindex(rate.index).fillna(np.inf)
        keys = np.stack([-rate.to_numpy(), sps.rankdata(median.to_numpy())], axis=1)
        _, order = np.unique(keys, axis=0, return_inverse=True)
        table[task] = pd.Series(sps.rankdata(order.reshape(-1)), index=rate.index)
    return pd.DataFrame(table).T.sort_index(axis=1)


def _rank_sum_spread(ranks: np.ndarray) -> np.ndarray:
    """Σ_j S_j², S_j the rank sum of algorithm j; any stack of rank matrices (..., N, k)."""
    return np.sum(np.sum(ranks, axis=-2) ** 2, axis=-1)


def friedman(ranks: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Friedman's test that every algorithm has the same mean rank across tasks.

    ``statistic`` and ``p_chi2`` are scipy's ``friedmanchisquare`` (chi-square approximation,
    tie-corrected); ``p_exact`` permutes the ranks within each task — every permutation when
    there are at most ``EXACT_FRIEDMAN_MAX`` (the first task held fixed, by symmetry), else
    ``PERMUTATIONS`` random ones — and counts how often the rank sums spread as much as
    observed. With few tasks the chi-square p is unreliable; the report uses ``p_exact``.

    Returns:
        ``statistic, p_chi2, p_exact, tasks, algorithms``; NaN below 3 algorithms or 2 tasks.
    """
    matrix = ranks.to_numpy(dtype=float)
    n_tasks, k = matrix.shape if matrix.ndim == 2 else (0, 0)
    undefined = {"statistic": np.nan, "p_chi2": np.nan, "p_exact": np.nan}
    if k < 3 or n_tasks < 2:
        return {**undefined, "tasks": n_tasks, "algorithms": k}
    result = sps.friedmanchisquare(*matrix.T)
    observed = _rank_sum_spread(matrix)
    if math.factorial(k) ** (n_tasks - 1) <= EXACT_FRIEDMAN_MAX:
        orders = list(permutations(range(k)))
        stack = np.array(
            [
                [matrix[0], *(matrix[t + 1][list(order)] for t, order in enumerate(combo))]
                for combo in product(orders, repeat=n_tasks - 1)
            ]
        )
        extra = 0
    else:
        rng = np.random.default_rng(seed)
        stack = rng.permuted(np.broadcast_to(matrix, (PERMUTATIONS, n_tasks, k)), axis=-1)
        extra = 1
    spread = _rank_sum_spread(stack)
    exceed = np.sum(spread >= observed - 1e-9 * abs(observed))
    return {
        "statistic": float(result.statistic),
        "p_chi2": float(result.pvalue),
        "p_exact": float((exceed + extra) / (spread.size + extra)),
        "tasks": n_tasks,
        "algorithms": k,
    }


def _rank_standard_error(k: int, n_tasks: int) -> float:
    return math.sqrt(k * (k + 1) / (6 * n_tasks))


def nemenyi_critical_difference(k: int, n_tasks: int, alpha: float = SIGNIFICANCE) -> float:
    """Nemenyi's critical difference of mean ranks (Demšar 2006, eq. 5).

    ``CD = q_α √(k(k+1) / 6N)``, ``q_α`` the studentised range quantile over √2 (Demšar's
    table: 2.569 for k = 4 at α = 0.05). Two algorithms whose mean ranks differ by more than
    CD differ significantly, all pairs' family-wise error held at α.
    """
    q = sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * _rank_standard_error(k, n_tasks))


def holm_posthoc(ranks: pd.DataFrame) -> pd.DataFrame:
    """Every pair's z test of equal mean ranks, Holm-corrected (Demšar 2006, section 3.2.2).

    ``z = (R_a − R_b) / √(k(k+1) / 6N)``, two-sided normal p.

    Returns:
        One row per pair: ``a, b, rank_a, rank_b, z, p, p_holm``.
    """
    n_tasks, k = ranks.shape
    mean = ranks.mean(axis=0)
    names = list(ranks.columns)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            z = (mean[a] - mean[b]) / _rank_standard_error(k, n_tasks)
            rows.append((a, b, mean[a], mean[b], z, 2 * sps.norm.sf(abs(z))))
    result = pd.DataFrame(rows, columns=["a", "b", "rank_a", "rank_b", "z", "p"])
    result["p_holm"] = holm(result["p"].to_numpy()) if len(result) else []
    return result


def cliques(mean_ranks: pd.Series, critical_difference: float) -> list[list[str]]:
    """Maximal runs of algorithms (by mean rank) whose ranks span less than the CD.

    The bars of a critical-difference diagram: algorithms joined by one are not
    significantly different. Runs contained in a longer one are left out; single algorithms
    too.
    """
    ordered = mean_ranks.sort_values()
    names, values = list(ordered.index), ordered.to_numpy()
    spans = []
    for start in range(len(names)):
        end = start
        while end + 1 < len(names) and values[end + 1] - values[start] < critical_difference:
            end += 1
        if end > start and not any(s <= start and end <= e for s, e in spans):
            spans.append((start, end))
    return [names[s : e + 1] for s, e in spans]
