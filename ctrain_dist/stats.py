"""Statistics across seeds: pure functions, no I/O, no plotting (after rliable).

Shape conventions, the same in every function:

* An *array of scores* is 1-D, shape ``(num_runs,)``: one value per seed of one configuration.
* A *trials frame* is tidy, one row per trial (a seed of a configuration), with the grouping
  columns (``algorithm``, ``config_label``) and metric columns such as
  ``final_test_objective`` — the frame ``Store.trials()`` returns.
* An *evals frame* is tidy, one row per evaluation point of one trial attempt and split, with
  ``attempt_id``, the x axes (``step``, ``time_s``, ...) and metric columns — ``Store.evals()``.
* Results are tidy frames: one row per group (× metric), the grouping columns first.

Missing values (NaN) are measurements that do not exist, e.g. metrics of an errored trial;
they are dropped per metric, so each result row reports the ``n`` it rests on. Every result is
deterministic: resampling takes an explicit seed.

Protocol (DESIGN.md, statistics): select each algorithm's configuration on validation
(``select_configurations``), then compare on test across seeds (``summarise``, ``feasibility``,
``compare_to_baseline``). Selecting on test would make the comparison optimistically biased.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

DEFAULT_BY: tuple[str, ...] = ("algorithm", "config_label")
SIGNIFICANCE = 0.05
UNMEASURED_STATUS = "error"


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray] = np.mean,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over seeds.

    Args:
        values: scores, shape ``(num_runs,)``, all finite.
        statistic: a reduction accepting ``axis=`` (``np.mean``, ``np.median``, ...); it is
            applied to all resamples at once, shape ``(resamples, num_runs)``, for speed.
        confidence: coverage of the two-sided interval.
        resamples: number of bootstrap resamples.
        seed: seed of the resampling generator, so reports are reproducible.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for no values, the value twice for one.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (num_runs,), got {values.shape}")
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    estimates = statistic(values[rng.integers(0, values.size, (resamples, values.size))], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)


def _describe(values: np.ndarray) -> dict[str, float]:
    low, high = bootstrap_ci(values)
    empty = values.size == 0
    return {
        "n": values.size,
        "mean": float("nan") if empty else float(np.mean(values)),
        "ci_low": low,
        "ci_high": high,
        "std": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
        "median": float("nan") if empty else float(np.median(values)),
    }


def summarise(
    trials: pd.DataFrame, metrics: list[str], by: Sequence[str] = DEFAULT_BY
) -> pd.DataFrame:
    """Mean with a 95% bootstrap CI, std (ddof=1) and median of each metric per group.

    Returns:
        One row per group × metric: ``*by, metric, n, mean, ci_low, ci_high, std, median``.
    """
    rows = [
        {**dict(zip(by, key, strict=True)), "metric": metric, **_describe(_scores(group, metric))}
        for key, group in trials.groupby(list(by), sort=True)
        for metric in metrics
    ]
    return pd.DataFrame(
        rows, columns=[*by, "metric", "n", "mean", "ci_low", "ci_high", "std", "median"]
    )


def _scores(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Non-missing values of one column as a float array of shape ``(num_runs,)``."""
    return frame[column].dropna().to_numpy(dtype=float)


def wilson_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
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
    violation_col: str = "final_test_max_violation",
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
    if "status" in trials.columns:
        measured = trials[trials["status"] != UNMEASURED_STATUS]
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
    objective_col: str = "final_val_objective",
    violation_col: str = "final_val_max_violation",
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
        trials.groupby(["algorithm", "config_label"], sort=True)[[objective_col, violation_col]]
        .median()
        .reset_index()
    )
    chosen = [
        _best_configuration(configs, objective_col, violation_col)
        for _, configs in medians.groupby("algorithm", sort=True)
    ]
    keys = pd.MultiIndex.from_frame(trials[["algorithm", "config_label"]])
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
    return best["algorithm"], best["config_label"]


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    With the m tested p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``. NaN marks a hypothesis that was not tested: it
    stays NaN and does not count in m. Holm controls the family-wise error rate under any
    dependence between tests, which many comparisons sharing one baseline have.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = (order.size - np.arange(order.size)) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def welch_t(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value of mean(a) − mean(b).

    NaN for both when a side has fewer than two values or neither side varies: the test is
    undefined there, and such a comparison should read "not tested", not crash a report.
    """
    if a.size < 2 or b.size < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return float("nan"), float("nan")
    result = sps.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def compare_to_baseline(trials: pd.DataFrame, baseline: str, metrics: list[str]) -> pd.DataFrame:
    """Welch t-test of every other algorithm against ``baseline`` per metric, Holm-corrected.

    The family for Holm is every (algorithm, metric) pair in the result. Seeds of all rows of
    an algorithm are pooled, so pass the output of ``select_configurations``.

    Returns:
        One row per algorithm × metric: ``algorithm, metric, n, n_baseline, mean_diff`` (the
        algorithm's mean minus the baseline's), ``t, p, p_holm, significant``
        (``p_holm < 0.05``; False where untested).
    """
    if baseline not in set(trials["algorithm"]):
        raise ValueError(f"baseline {baseline!r} is not among the trials' algorithms")
    reference = trials[trials["algorithm"] == baseline]
    rows = []
    for algorithm, group in trials[trials["algorithm"] != baseline].groupby("algorithm"):
        for metric in metrics:
            a, b = _scores(group, metric), _scores(reference, metric)
            t, p = welch_t(a, b)
            diff = float(np.mean(a) - np.mean(b)) if a.size and b.size else float("nan")
            rows.append(
                {
                    "algorithm": algorithm,
                    "metric": metric,
                    "n": a.size,
                    "n_baseline": b.size,
                    "mean_diff": diff,
                    "t": t,
                    "p": p,
                }
            )
    columns = ["algorithm", "metric", "n", "n_baseline", "mean_diff", "t", "p"]
    result = pd.DataFrame(rows, columns=columns)
    result["p_holm"] = holm(result["p"].to_numpy(dtype=float))
    result["significant"] = result["p_holm"] < SIGNIFICANCE
    return result


def convergence_bands(
    evals: pd.DataFrame,
    metrics: list[str],
    x: str = "step",
    by: str = "algorithm",
    curve: str = "attempt_id",
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
