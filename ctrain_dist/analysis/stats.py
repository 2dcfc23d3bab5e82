"""Statistics across seeds: pure functions, no I/O, no plotting (after rliable).

Shape conventions, the same in every function:

* An *array of scores* is 1-D, shape ``(num_runs,)``: one value per seed of one configuration.
  The test functions (``welch_t``, ``mann_whitney_u``) and the corrections (``holm``,
  ``benjamini_hochberg``) also take stacks, shape ``(..., num_runs)`` and ``(..., m)``, and
  work along the last axis, so simulations can run thousands of repetitions at once.
* A *trials frame* is tidy, one row per trial (a seed of a configuration), with the grouping
  columns (``algorithm``, ``config_label``) and metric columns such as
  ``final_test_objective`` — the frame ``Store.trials()`` returns. Column names come from
  ``ctrain_dist.store.schema`` (``final_column(TEST, OBJECTIVE)``), never spelled here.
* An *evals frame* is tidy, one row per evaluation point of one trial attempt and split, with
  ``attempt_id``, the x axes (``step``, ``time_s``, ...) and metric columns — ``Store.evals()``.
* Results are tidy frames: one row per group (× metric), the grouping columns first.

Missing values (NaN) are measurements that do not exist, e.g. metrics of an errored trial;
they are dropped per metric, so each result row reports the ``n`` it rests on. Every result is
deterministic: resampling takes an explicit seed.

Direction: unless a function takes ``higher_is_better``, lower is better (objectives,
violations, fairness gaps are all losses).

Protocol (DESIGN.md, statistics): select each algorithm's configuration on validation
(``select_configurations``), then compare on test across seeds (``summarise``, ``feasibility``,
``pairwise_tests``). Selecting on test would make the comparison optimistically biased.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from ctrain_dist.store.schema import (
    ALGORITHM,
    ATTEMPT_ID,
    CONFIG_LABEL,
    MAX_VIOLATION,
    OBJECTIVE,
    STATUS,
    STATUS_ERROR,
    STEP,
    TEST,
    VAL,
    final_column,
)

DEFAULT_BY: tuple[str, ...] = (ALGORITHM, CONFIG_LABEL)
SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
POWER = 0.8
RESAMPLES = 10_000
UNMEASURED_STATUS = STATUS_ERROR

# --------------------------------------------------------------------------------------------
# Aggregates and bootstrap confidence intervals


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of runs (``trim_mean`` at 25%).

    Why (Agarwal et al. 2021, rliable): nearly as statistically efficient as the mean with few
    runs, yet one diverged seed cannot move it the way it moves the mean.
    """
    return sps.trim_mean(values, 0.25, axis=axis)


AGGREGATES: dict[str, Callable[..., np.ndarray]] = {
    "mean": np.mean,
    "median": np.median,
    "iqm": iqm,
}
"""The point estimates ``summarise`` reports, each with its bootstrap CI."""


def _resample_indices(
    size: int, strata: np.ndarray | None, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap index matrix, shape ``(resamples, size)``, resampled within each stratum."""
    if strata is None:
        return rng.integers(0, size, (resamples, size))
    columns = []
    for level in pd.unique(strata):
        members = np.flatnonzero(strata == level)
        columns.append(members[rng.integers(0, members.size, (resamples, members.size))])
    return np.concatenate(columns, axis=1)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray] = np.mean,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile (stratified) bootstrap confidence interval of ``statistic`` over runs.

    Stratified as in rliable's ``StratifiedBootstrap``: runs are resampled with replacement
    within each stratum (task), each stratum keeping its number of runs, so an interval over
    several tasks reflects the run-to-run noise and never a reshuffled mix of tasks.

    Args:
        values: scores, shape ``(num_runs,)``, all finite.
        statistic: a reduction accepting ``axis=`` (``np.mean``, ``np.median``, ``iqm``); it is
            applied to all resamples at once, shape ``(resamples, num_runs)``, for speed.
        confidence: coverage of the two-sided interval.
        resamples: number of bootstrap resamples.
        seed: seed of the resampling generator, so reports are reproducible.
        strata: one label per run (e.g. the task); None resamples all runs together.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for no values, the value twice for one.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (num_runs,), got {values.shape}")
    if strata is not None and len(strata) != values.size:
        raise ValueError("strata must hold one label per run")
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = _resample_indices(
        values.size, None if strata is None else np.asarray(strata), resamples, rng
    )
    estimates = statistic(values[index], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)


def _describe(values: np.ndarray, strata: np.ndarray | None) -> dict[str, float]:
    """n, std and every aggregate with its CI; one index draw shared by the aggregates."""
    row: dict[str, float] = {
        "n": values.size,
        "std": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
    }
    for name, statistic in AGGREGATES.items():
        low, high = bootstrap_ci(values, statistic, strata=strata)
        estimate = float(statistic(values, axis=0)) if values.size else float("nan")
        prefix = "" if name == "mean" else f"{name}_"
        row.update({name: estimate, f"{prefix}ci_low": low, f"{prefix}ci_high": high})
    return row


SUMMARY_COLUMNS: tuple[str, ...] = (
    "n",
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


def summarise(
    trials: pd.DataFrame,
    metrics: list[str],
    by: Sequence[str] = DEFAULT_BY,
    strata: str | None = None,
) -> pd.DataFrame:
    """Mean, median and IQM with 95% (stratified) bootstrap CIs, and std (ddof=1), per group.

    Args:
        trials: a trials frame.
        metrics: metric columns to describe.
        by: grouping columns (one row per group × metric).
        strata: a column naming each run's task (e.g. ``sweep_id`` when sweeps on different
            data are pooled): the bootstrap then resamples within tasks. None: one task.

    Returns:
        One row per group × metric: ``*by, metric`` then ``SUMMARY_COLUMNS``.
    """
    rows = []
    for key, group in trials.groupby(list(by), sort=True):
        for metric in metrics:
            kept = group[group[metric].notna()]
            labels = kept[strata].to_numpy() if strata else None
            values = kept[metric].to_numpy(dtype=float)
            rows.append(
                {**dict(zip(by, key, strict=True)), "metric": metric, **_describe(values, labels)}
            )
    return pd.DataFrame(rows, columns=[*by, "metric", *SUMMARY_COLUMNS])


def _scores(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Non-missing values of one column as a float array of shape ``(num_runs,)``."""
    return frame[column].dropna().to_numpy(dtype=float)


# --------------------------------------------------------------------------------------------
# Feasibility and model selection


def wilson_interval(count: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``count / n``.

    Why Wilson: with tens of seeds and shares near 0 or 1 the normal (Wald) interval collapses
    to a point or leaves [0, 1]; Wilson's stays inside and keeps its coverage.
    """
    if n == 0:
        return float("nan"), float("nan")
    z = sps.norm.ppf(0.5 + confidence / 2.0)
    share = count / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def feasibility(
    trials: pd.DataFrame,
    violation_col: str = final_column(TEST, MAX_VIOLATION),
    by: Sequence[str] = DEFAULT_BY,
) -> pd.DataFrame:
    """Share of seeds whose violation is ≤ 0 (constraints met), with a Wilson 95% interval.

    Errored trials (``status == "error"``, when the column exists) are left out: an error is a
    failure of the infrastructure and carries no measurement. Every other trial counts, and a
    missing or NaN violation (e.g. a diverged run) counts as infeasible, so an algorithm that
    diverges is not flattered by losing its bad seeds.

    Returns:
        One row per group: ``*by, n, count, share, ci_low, ci_high``.
    """
    measured = trials
    if STATUS in trials.columns:
        measured = trials[trials[STATUS] != UNMEASURED_STATUS]
    rows = []
    for key, group in measured.groupby(list(by), sort=True):
        n, count = len(group), int((group[violation_col] <= 0).sum())
        low, high = wilson_interval(count, n)
        labels = dict(zip(by, key, strict=True))
        rows.append(
            {**labels, "n": n, "count": count, "share": count / n, "ci_low": low, "ci_high": high}
        )
    return pd.DataFrame(rows, columns=[*by, "n", "count", "share", "ci_low", "ci_high"])


def select_configurations(
    trials: pd.DataFrame,
    objective_col: str = final_column(VAL, OBJECTIVE),
    violation_col: str = final_column(VAL, MAX_VIOLATION),
) -> pd.DataFrame:
    """Trials of each algorithm's selected configuration, chosen on validation only.

    Per algorithm, among configurations whose median validation violation is ≤ 0, the one with
    the lowest median validation objective; if none is feasible, the one with the least median
    violation. Medians, because a single diverged seed must not decide the choice. Ties go to
    the first ``config_label`` in sort order, so the choice is deterministic.

    Returns:
        The rows of ``trials`` that belong to the selected configurations.
    """
    medians = (
        trials.groupby([ALGORITHM, CONFIG_LABEL], sort=True)[[objective_col, violation_col]]
        .median()
        .reset_index()
    )
    chosen = [
        _best_configuration(configs, objective_col, violation_col)
        for _, configs in medians.groupby(ALGORITHM, sort=True)
    ]
    keys = pd.MultiIndex.from_frame(trials[[ALGORITHM, CONFIG_LABEL]])
    return trials[keys.isin(chosen)]


def _best_configuration(
    configs: pd.DataFrame, objective_col: str, violation_col: str
) -> tuple[str, str]:
    """(algorithm, config_label) of the best row of one algorithm's median table."""
    feasible = configs[configs[violation_col] <= 0]
    if feasible[objective_col].notna().any():
        best = feasible.loc[feasible[objective_col].idxmin()]
    elif configs[violation_col].notna().any():
        best = configs.loc[configs[violation_col].idxmin()]
    else:
        best = configs.iloc[0]
    return best[ALGORITHM], best[CONFIG_LABEL]


# --------------------------------------------------------------------------------------------
# Multiple-testing corrections


def _sorted_family(pvalues: Sequence[float] | np.ndarray) -> tuple[np.ndarray, ...]:
    """p-values sorted ascending along the last axis (NaN last), the order, and m per family."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, axis=-1, kind="stable")
    return np.take_along_axis(p, order, axis=-1), order, np.sum(~np.isnan(p), axis=-1)


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    result = np.empty_like(values)
    np.put_along_axis(result, order, values, axis=-1)
    return result


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    With the m tested p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``. NaN marks a hypothesis that was not tested: it
    stays NaN and does not count in m. Holm controls the family-wise error rate under any
    dependence between tests, which many comparisons sharing one algorithm have. A stack,
    shape ``(..., m)``, is corrected family by family along the last axis.
    """
    ordered, order, m = _sorted_family(pvalues)
    rank = np.arange(ordered.shape[-1])
    scaled = (np.expand_dims(m, -1) - rank) * ordered
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled, axis=-1))
    return _unsort(adjusted, order)


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (step-up, monotone, capped at 1).

    With the m tested p-values sorted ascending, ``p_(i)`` becomes
    ``min_{j >= i} min(1, m p_(j) / j)``. Controls the false discovery rate (the expected share
    of false claims among the claimed differences) for independent or positively dependent
    tests; less strict than Holm, so it finds more when many differences are real. NaN and
    stacks as in ``holm``.
    """
    ordered, order, m = _sorted_family(pvalues)
    rank = np.arange(1, ordered.shape[-1] + 1)
    scaled = np.where(np.isnan(ordered), np.inf, np.expand_dims(m, -1) * ordered / rank)
    stepped = np.flip(np.minimum.accumulate(np.flip(scaled, -1), axis=-1), -1)
    adjusted = np.where(np.isnan(ordered), np.nan, np.minimum(1.0, stepped))
    return _unsort(adjusted, order)


CORRECTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "holm": holm,
    "bh": benjamini_hochberg,
}


# --------------------------------------------------------------------------------------------
# Two-sample tests and effect sizes


def _as_result(value: np.ndarray) -> np.ndarray | float:
    return float(value) if np.ndim(value) == 0 else value


def welch_t(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Welch's t statistic and two-sided p-value of mean(a) − mean(b), along the last axis.

    NaN for both when a side has fewer than two values or neither side varies: the test is
    undefined there, and such a comparison should read "not tested", not crash a report.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[-1] < 2 or b.shape[-1] < 2:
        shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        return _as_result(np.full(shape, np.nan)), _as_result(np.full(shape, np.nan))
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant samples, masked below
        result = sps.ttest_ind(a, b, axis=-1, equal_var=False)
    constant = (np.ptp(a, axis=-1) == 0) & (np.ptp(b, axis=-1) == 0)
    t = np.where(constant, np.nan, result.statistic)
    p = np.where(constant, np.nan, result.pvalue)
    return _as_result(t), _as_result(p)


def mann_whitney_u(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Mann–Whitney U of ``a`` (pairs with a > b, ties half) and its two-sided p-value.

    scipy's ``method="auto"``: exact for small samples without ties, else the normal
    approximation with tie and continuity corrections. NaN when a side is empty or every value
    on both sides is equal (no ordering to test).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    if a.shape[-1] == 0 or b.shape[-1] == 0:
        return _as_result(np.full(shape, np.nan)), _as_result(np.full(shape, np.nan))
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sps.mannwhitneyu(a, b, alternative="two-sided", axis=-1)
    constant = (np.ptp(a, axis=-1) == 0) & (np.ptp(b, axis=-1) == 0) & (a[..., 0] == b[..., 0])
    u = np.where(constant, np.nan, result.statistic)
    p = np.where(constant, np.nan, result.pvalue)
    return _as_result(u), _as_result(p)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d: (mean(a) − mean(b)) / pooled standard deviation (ddof=1 per side).

    NaN when there are fewer than three runs in all or the pooled deviation is 0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    dof = a.size + b.size - 2
    if a.size == 0 or b.size == 0 or dof < 1:
        return float("nan")
    squares = np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2)
    pooled = math.sqrt(squares / dof)
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's delta, P(a > b) − P(a < b) over all pairs of runs, in [−1, 1].

    A rank effect size, robust to outliers and free of any distributional assumption; it is the
    Mann–Whitney U rescaled, ``2 U / (n_a n_b) − 1``. NaN when a side is empty.
    """
    a, b = np.asarray(a, dtype=float), np.sort(np.asarray(b, dtype=float))
    if a.size == 0 or b.size == 0:
        return float("nan")
    greater = np.searchsorted(b, a, side="left").sum()
    less = (b.size - np.searchsorted(b, a, side="right")).sum()
    return float((greater - less) / (a.size * b.size))


def probability_of_improvement(
    a: np.ndarray,
    b: np.ndarray,
    higher_is_better: bool = False,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """P(a run of ``a`` beats a run of ``b``) + ½ P(tie), with a percentile bootstrap CI.

    rliable's probability of improvement (Agarwal et al. 2021): 0.5 means neither is better;
    it says how often, not by how much. The CI resamples the runs of each side independently.

    Returns:
        ``(estimate, low, high)``; NaNs when a side is empty.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan"), float("nan")
    sign = 1.0 if higher_is_better else -1.0
    estimate = (1.0 + sign * cliffs_delta(a, b)) / 2.0
    rng = np.random.default_rng(seed)
    resampled_a = a[rng.integers(0, a.size, (resamples, a.size))]
    resampled_b = b[rng.integers(0, b.size, (resamples, b.size))]
    ranks = sps.rankdata(np.concatenate([resampled_a, resampled_b], axis=1), axis=1)
    u = ranks[:, : a.size].sum(axis=1) - a.size * (a.size + 1) / 2
    above = u / (a.size * b.size)
    estimates = above if higher_is_better else 1.0 - above
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(estimate), float(low), float(high)


# --------------------------------------------------------------------------------------------
# Power: how many seeds an effect needs


def welch_power(
    n: int, effect: float, std_a: float, std_b: float | None = None, alpha: float = SIGNIFICANCE
) -> float:
    """Power of the two-sided Welch test with ``n`` seeds per algorithm.

    Closed form: under a true mean difference ``effect`` the statistic follows a noncentral t
    with noncentrality ``effect / sqrt((σ_a² + σ_b²) / n)`` and the Welch–Satterthwaite degrees
    of freedom ``(n − 1)(σ_a² + σ_b²)² / (σ_a⁴ + σ_b⁴)``; power is the mass beyond ``±t_crit``.
    With equal deviations this is exactly the pooled two-sample t power (what
    ``statsmodels.stats.power.TTestIndPower`` computes).
    """
    std_b = std_a if std_b is None else std_b
    va, vb = std_a**2, std_b**2
    dof = (n - 1) * (va + vb) ** 2 / (va**2 + vb**2)
    noncentrality = effect / math.sqrt((va + vb) / n)
    critical = sps.t.ppf(1 - alpha / 2, dof)
    return float(
        sps.nct.sf(critical, dof, noncentrality) + sps.nct.cdf(-critical, dof, noncentrality)
    )


def seeds_needed(
    effect: float,
    std_a: float,
    std_b: float | None = None,
    alpha: float = SIGNIFICANCE,
    power: float = POWER,
) -> int:
    """Seeds per algorithm for Welch's test to detect a mean difference ``effect``.

    Starts from the normal-approximation closed form
    ``n₀ = ⌈(z_{1−α/2} + z_{power})² (σ_a² + σ_b²) / effect²⌉`` and moves to the smallest
    ``n ≥ 2`` whose exact power (``welch_power``, noncentral t) reaches ``power``; the normal
    form is a few seeds short for small n because it ignores the t's heavier tails.

    Raises:
        ValueError: for a zero or non-finite effect, or deviations that are not positive.
    """
    std_b = std_a if std_b is None else std_b
    if not math.isfinite(effect) or effect == 0:
        raise ValueError(f"effect must be finite and non-zero, got {effect}")
    if not (std_a > 0 and std_b > 0 and math.isfinite(std_a) and math.isfinite(std_b)):
        raise ValueError(f"standard deviations must be positive, got {std_a}, {std_b}")
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(2, math.ceil(z**2 * (std_a**2 + std_b**2) / effect**2))
    while welch_power(n, effect, std_a, std_b, alpha) < power:
        n += 1
    while n > 2 and welch_power(n - 1, effect, std_a, std_b, alpha) >= power:
        n -= 1
    return n


def seeds_needed_from_pilot(
    a: np.ndarray,
    b: np.ndarray,
    effect: float | None = None,
    alpha: float = SIGNIFICANCE,
    power: float = POWER,
) -> float:
    """``seeds_needed`` with the deviations (ddof=1) of a pilot study's runs.

    Args:
        a, b: the pilot's scores of the two algorithms.
        effect: the difference to detect; default the pilot's observed mean difference.

    Returns:
        Seeds per algorithm, or NaN when the pilot cannot say (fewer than two runs a side, no
        variance, or no difference to detect).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    effect = float(a.mean() - b.mean()) if effect is None else effect
    try:
        return seeds_needed(effect, float(a.std(ddof=1)), float(b.std(ddof=1)), alpha, power)
    except ValueError:
        return float("nan")


# --------------------------------------------------------------------------------------------
# Pairwise comparison of algorithms


PAIRWISE_COLUMNS: tuple[str, ...] = (
    "metric",
    "a",
    "b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "mean_diff",
    "welch_t",
    "welch_p",
    "mwu_u",
    "mwu_p",
    "cohens_d",
    "cliffs_delta",
    "poi",
    "poi_low",
    "poi_high",
    "seeds_needed",
)


def pairwise_tests(
    trials: pd.DataFrame,
    metrics: list[str],
    by: str = ALGORITHM,
    higher_is_better: Collection[str] = (),
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Every pair of groups on every metric: tests, corrected p-values and effect sizes.

    Pool the seeds of each group (pass ``select_configurations``' output, so each algorithm is
    one configuration). The family of each correction is every row of the result (all pairs ×
    metrics): call it on fewer metrics or groups for a smaller family.

    Args:
        trials: a trials frame.
        metrics: metric columns to compare.
        by: the column whose values are compared pairwise, in sorted order (a < b).
        higher_is_better: metrics where a larger value is the better one (accuracy, AUC); the
            direction only matters for the probability of improvement.
        pairs: the (a, b) pairs to compare, each in the order given; default every pair.

    Returns:
        One row per metric × pair: ``PAIRWISE_COLUMNS`` (``mean_diff`` = mean_a − mean_b,
        ``poi`` = P(a better than b), ``seeds_needed`` per group for 80% Welch power at the
        observed difference), then ``welch_p_holm, welch_p_bh, mwu_p_holm, mwu_p_bh`` and
        ``significant`` (Holm-corrected Welch p < 0.05; False where untested).
    """
    groups = {key: frame for key, frame in trials.groupby(by, sort=True)}
    pairs = list(combinations(groups, 2)) if pairs is None else list(pairs)
    rows = []
    for metric in metrics:
        for a, b in pairs:
            xa, xb = _scores(groups[a], metric), _scores(groups[b], metric)
            t, p_t = welch_t(xa, xb)
            u, p_u = mann_whitney_u(xa, xb)
            poi, low, high = probability_of_improvement(xa, xb, metric in higher_is_better)
            mean_a = float(xa.mean()) if xa.size else float("nan")
            mean_b = float(xb.mean()) if xb.size else float("nan")
            rows.append(
                dict(
                    zip(
                        PAIRWISE_COLUMNS,
                        (
                            metric,
                            a,
                            b,
                            xa.size,
                            xb.size,
                            mean_a,
                            mean_b,
                            mean_a - mean_b,
                            t,
                            p_t,
                            u,
                            p_u,
                            cohens_d(xa, xb),
                            cliffs_delta(xa, xb),
                            poi,
                            low,
                            high,
                            seeds_needed_from_pilot(xa, xb),
                        ),
                        strict=True,
                    )
                )
            )
    result = pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
    for test in ("welch", "mwu"):
        for name, correct in CORRECTIONS.items():
            result[f"{test}_p_{name}"] = correct(result[f"{test}_p"].to_numpy(dtype=float))
    result["significant"] = result["welch_p_holm"] < SIGNIFICANCE
    return result


# --------------------------------------------------------------------------------------------
# Profiles and fronts


def performance_profile(
    trials: pd.DataFrame,
    metric: str,
    by: str = ALGORITHM,
    taus: np.ndarray | None = None,
    higher_is_better: bool = False,
    points: int = 101,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Share of runs at least as good as each threshold τ, per group (rliable's profile).

    The whole distribution of run scores, not one summary: one curve lying above another at
    every τ means stochastic dominance. For a loss a run counts at τ when its score ≤ τ (for
    ``max_violation`` at τ = 0 that is the feasibility rate); for ``higher_is_better`` when
    its score > τ, as in rliable. The band is the Wilson interval of each share (runs are
    independent draws, so each share is a binomial proportion).

    Args:
        taus: thresholds; default ``points`` values spanning every group's runs.

    Returns:
        One row per group × τ: ``by, metric, tau, n, share, ci_low, ci_high``.
    """
    pooled = _scores(trials, metric)
    if taus is None:
        taus = np.linspace(pooled.min(), pooled.max(), points) if pooled.size else np.array([])
    rows = []
    for key, group in trials.groupby(by, sort=True):
        values = np.sort(_scores(group, metric))
        if higher_is_better:
            counts = values.size - np.searchsorted(values, taus, side="right")
        else:
            counts = np.searchsorted(values, taus, side="right")
        for tau, count in zip(taus, counts, strict=True):
            low, high = wilson_interval(int(count), values.size, confidence)
            share = count / values.size if values.size else float("nan")
            rows.append((key, metric, float(tau), values.size, share, low, high))
    return pd.DataFrame(rows, columns=[by, "metric", "tau", "n", "share", "ci_low", "ci_high"])


def pareto_front(frame: pd.DataFrame, x: str, y: str, by: str | None = None) -> pd.Series:
    """Whether each row is on the Pareto front of (x, y), both minimised, within its group.

    A row is on the front when no other row is at least as good on both and strictly better on
    one. Rows with a missing x or y are never on it. Equal points are all on it.

    Returns:
        A boolean Series aligned with ``frame``.
    """
    on_front = pd.Series(False, index=frame.index)
    parts = frame.groupby(by, sort=False) if by else [(None, frame)]
    for _, part in parts:
        finite = part[np.isfinite(part[x].astype(float)) & np.isfinite(part[y].astype(float))]
        ordered = finite.sort_values([x, y], kind="stable")
        xs, ys = ordered[x].to_numpy(dtype=float), ordered[y].to_numpy(dtype=float)
        # Sorted by (x, y), a row is dominated exactly when some earlier row other than its
        # own duplicates has y ≤ its y; duplicates are adjacent, so compare with the minimum y
        # before the start of its run of equal points.
        starts = np.concatenate([[True], (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])])
        run_start = np.maximum.accumulate(np.where(starts, np.arange(xs.size), 0))
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(ys)])[run_start]
        keep = ys < best_before
        on_front[ordered.index[keep]] = True
    return on_front


# --------------------------------------------------------------------------------------------
# Convergence


def convergence_bands(
    evals: pd.DataFrame,
    metrics: list[str],
    x: str = STEP,
    by: str = ALGORITHM,
    curve: str = ATTEMPT_ID,
    points: int = 100,
) -> pd.DataFrame:
    """Median and interquartile band across seeds of each metric against ``x``, per group.

    Each curve (one trial attempt of an evals frame) is linearly interpolated onto a common
    grid, because seeds rarely share x values on a time axis. The grid is the union of the
    curves' x values when there are at most ``points`` of them (exact, no interpolation, on an
    aligned step axis), else ``points`` evenly spaced values. A curve contributes only inside
    its own x range — never extrapolated — so ``n`` says how many seeds a point rests on.

    Returns:
        One row per group × metric × grid point: ``by, metric, axis`` (= ``x``),
        ``x, n, median, q25, q75``.
    """
    pieces = [
        _bands(group, metric, x, curve, points).assign(**{by: key, "metric": metric, "axis": x})
        for key, group in evals.groupby(by, sort=True)
        for metric in metrics
    ]
    columns = [by, "metric", "axis", "x", "n", "median", "q25", "q75"]
    if not pieces:
        return pd.DataFrame(columns=columns)
    return pd.concat(pieces, ignore_index=True)[columns]


def _bands(group: pd.DataFrame, metric: str, x: str, curve: str, points: int) -> pd.DataFrame:
    """The band of one group and metric; see ``convergence_bands``."""
    finite = group[np.isfinite(group[x].astype(float)) & np.isfinite(group[metric].astype(float))]
    curves = [c.sort_values(x).drop_duplicates(x, keep="last") for _, c in finite.groupby(curve)]
    if not curves:
        return pd.DataFrame(columns=["x", "n", "median", "q25", "q75"])
    xs = np.unique(finite[x].to_numpy(dtype=float))
    grid = xs if xs.size <= points else np.linspace(xs[0], xs[-1], points)
    values = np.full((len(curves), grid.size), np.nan)
    for row, c in enumerate(curves):
        cx, cy = c[x].to_numpy(dtype=float), c[metric].to_numpy(dtype=float)
        inside = (grid >= cx[0]) & (grid <= cx[-1])
        values[row, inside] = np.interp(grid[inside], cx, cy)
    counts = np.sum(~np.isnan(values), axis=0)
    covered = counts > 0
    q25, median, q75 = np.nanquantile(values[:, covered], [0.25, 0.5, 0.75], axis=0)
    return pd.DataFrame(
        {"x": grid[covered], "n": counts[covered], "median": median, "q25": q25, "q75": q75}
    )
