"""Interval estimates: small-sample intervals of a location, binomial and bootstrap intervals.

Why these and not the percentile bootstrap over seeds: with 5 seeds the percentile bootstrap's
"95%" interval of a mean covers about 83% (90% at 10 seeds; ``tests/test_stats_coverage.py``
measures it), because resampling 5 values cannot show the tails of their distribution. The
report's defaults are intervals whose coverage holds at that n:

* mean: Student's t interval (exact under normal noise; ≥ 93% measured at n = 5 and 10 on
  skewed noise too);
* median: the distribution-free order-statistic interval (coverage ≥ nominal for any
  continuous distribution whenever n allows it; at n ≤ 5 the widest one, [min, max], which
  covers 1 − 2^(1−n): 93.75% at n = 5);
* IQM: the Tukey–McLaughlin (Yuen) trimmed-mean t interval on the winsorised deviation.

The percentile (stratified) bootstrap stays where the run-level statistic has no closed form
and many runs are pooled: aggregates across tasks (rliable) and the probability of improvement.

Every interval accepts the worst-substituted scores of ``outcomes.worst_scores``: an infinite
value (a diverged seed) inside the estimate's support makes the estimate and its interval
infinite, which the report shows as "worst".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95
RESAMPLES = 10_000
TRIM = 0.25
"""Share cut from each end for the interquartile mean."""

INTERVAL_METHODS: dict[str, str] = {
    "mean": "Student t interval",
    "median": "distribution-free order-statistic interval",
    "iqm": "Tukey–McLaughlin (Yuen) trimmed-mean t interval",
}
"""The method behind each location's interval, as the report names it."""

NAN_PAIR = (float("nan"), float("nan"))


def _finite_values(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (num_runs,), got {values.shape}")
    return values[~np.isnan(values)]


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of the mean: ``x̄ ± t_{n−1} s / √n``.

    NaN below two values (no deviation to estimate); the infinite mean twice when a value is
    infinite; the mean twice when the values do not vary.
    """
    x = _finite_values(values)
    if x.size < 2:
        return NAN_PAIR
    if not np.isfinite(x).all():
        mean = float(x.mean())
        return mean, mean
    half = sps.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def median_rank(n: int, confidence: float = CONFIDENCE) -> int:
    """The 1-based order statistic k of the interval ``[x_(k), x_(n−k+1)]`` of the median.

    The largest k with ``P(Binomial(n, ½) < k) ≤ (1 − confidence) / 2``, at least 1.
    """
    tail = (1 - confidence) / 2
    k = 1
    while k < n // 2 + 1 and sps.binom.cdf(k, n, 0.5) <= tail:
        k += 1
    return k


def median_interval_coverage(n: int, confidence: float = CONFIDENCE) -> float:
    """Exact coverage of ``median_interval`` for n continuous values (any distribution)."""
    if n == 0:
        return float("nan")
    return float(1 - 2 * sps.binom.cdf(median_rank(n, confidence) - 1, n, 0.5))


def median_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval of the median from two order statistics (binomial)."""
    x = np.sort(_finite_values(values))
    if x.size == 0:
        return NAN_PAIR
    k = median_rank(x.size, confidence)
    return float(x[k - 1]), float(x[x.size - k])


def trimmed_count(n: int, proportion: float = TRIM) -> int:
    """Values cut from each end, as ``scipy.stats.trim_mean`` cuts them."""
    return int(proportion * n)


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of runs (``trim_mean`` at 25%).

    Why (Agarwal et al. 2021, rliable): nearly as statistically efficient as the mean with few
    runs, yet one diverged seed cannot move it the way it moves the mean.
    """
    return sps.trim_mean(values, TRIM, axis=axis)


def trimmed_mean_interval(
    values: np.ndarray, confidence: float = CONFIDENCE, proportion: float = TRIM
) -> tuple[float, float]:
    """Tukey–McLaughlin (Yuen) interval of the trimmed mean.

    With γ = ``proportion``, g = ⌊γn⌋ values cut from each end and h = n − 2g kept:
    ``x̄_t ± t_{h−1} s_w / ((1 − 2γ) √n)``, ``s_w`` the deviation of the winsorised sample (each
    cut value replaced by the nearest kept one), as ``scipy.stats.mstats.trimmed_mean_ci``. A
    diverged seed among the cut values is winsorised away, so the interval stays finite while
    at most g seeds diverge.
    """
    x = np.sort(_finite_values(values))
    g = trimmed_count(x.size, proportion)
    kept = x[g : x.size - g]
    if kept.size < 2:
        return NAN_PAIR
    centre = float(kept.mean())
    if not np.isfinite(kept).all():
        return centre, centre
    winsorised = np.clip(x, kept[0], kept[-1])
    scale = winsorised.std(ddof=1) / ((1 - 2 * proportion) * np.sqrt(x.size))
    half = sps.t.ppf(0.5 + confidence / 2, kept.size - 1) * scale
    return centre - float(half), centre + float(half)


LOCATIONS: dict[str, tuple[Callable[..., float], Callable[..., tuple[float, float]]]] = {
    "mean": (np.mean, t_interval),
    "median": (np.median, median_interval),
    "iqm": (iqm, trimmed_mean_interval),
}
"""Each location ``summarise`` reports: (point estimate, its small-sample interval)."""


def wilson_interval(count: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``count / n``.

    Why Wilson: with tens of seeds and shares near 0 or 1 the normal (Wald) interval collapses
    to a point or leaves [0, 1]; Wilson's stays inside and keeps its coverage.
    """
    if n == 0:
        return NAN_PAIR
    z = sps.norm.ppf(0.5 + confidence / 2.0)
    share = count / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    # at 0/n and n/n the bound is exactly 0 or 1; centre ∓ half leaves rounding (5.6e-17)
    low = 0.0 if count == 0 else max(0.0, centre - half)
    high = 1.0 if count == n else min(1.0, centre + half)
    return float(low), float(high)


def newcombe_interval(
    count_a: int, n_a: int, count_b: int, n_b: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of the difference of two proportions ``p_a − p_b``.

    Newcombe (1998), method 10: from the two Wilson intervals ``[l, u]``,
    ``d − √((p_a − l_a)² + (u_b − p_b)²)`` to ``d + √((u_a − p_a)² + (p_b − l_b)²)``. It keeps
    its coverage at the small counts and the 0/n or n/n rates feasibility produces, where the
    Wald difference interval degenerates.
    """
    if n_a == 0 or n_b == 0:
        return NAN_PAIR
    p_a, p_b = count_a / n_a, count_b / n_b
    low_a, high_a = wilson_interval(count_a, n_a, confidence)
    low_b, high_b = wilson_interval(count_b, n_b, confidence)
    d = p_a - p_b
    return (
        float(d - np.hypot(p_a - low_a, high_b - p_b)),
        float(d + np.hypot(high_a - p_a, p_b - low_b)),
    )


def resample_indices(
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


def percentile_interval(
    estimates: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The central ``confidence`` range of bootstrap estimates (infinite ones included)."""
    ordered = np.sort(np.asarray(estimates, dtype=float))
    tail = (1.0 - confidence) / 2.0
    low = ordered[int(np.floor(tail * (ordered.size - 1)))]
    high = ordered[int(np.ceil((1 - tail) * (ordered.size - 1)))]
    return float(low), float(high)


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
    several tasks reflects the run-to-run noise and never a reshuffled mix of tasks. Use it
    for many pooled runs; over the seeds of one configuration it is too narrow at small n
    (see the module docstring).

    Args:
        values: scores, shape ``(num_runs,)``.
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
        return NAN_PAIR
    rng = np.random.default_rng(seed)
    index = resample_indices(
        values.size, None if strata is None else np.asarray(strata), resamples, rng
    )
    return percentile_interval(statistic(values[index], axis=1), confidence)


def welch_interval(
    a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Welch–Satterthwaite t interval of mean(a) − mean(b) (unpaired, unequal variances).

    NaN when a side has fewer than two values, neither varies or a value is infinite.
    """
    a, b = _finite_values(a), _finite_values(b)
    if a.size < 2 or b.size < 2 or not np.isfinite([*a, *b]).all():
        return NAN_PAIR
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return NAN_PAIR
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = sps.t.ppf(0.5 + confidence / 2, dof) * np.sqrt(va + vb)
    d = a.mean() - b.mean()
    return float(d - half), float(d + half)
