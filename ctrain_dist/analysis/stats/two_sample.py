"""Two-sample tests of a difference between two algorithms, valid at a few seeds.

Each test works along the last axis of stacks (shape ``(..., num_runs)``), so simulations can
run thousands of repetitions at once, and returns ``(statistic, two-sided p)``; NaN where the
test is undefined (too few runs, nothing varies), which a report shows as "not tested".

* ``welch_t`` (unpaired) and ``paired_t`` (same seeds on both sides): parametric, exact under
  normal noise, the only ones whose p can be small at 5 seeds. Undefined on an infinite value
  (a diverged seed): the rank tests handle those.
* ``mann_whitney_u`` (unpaired): exact null distribution without ties, else an exact
  permutation distribution (all arrangements, or ``PERMUTATIONS`` random ones beyond that),
  never the normal approximation, which is anti-conservative with ties at small n.
* ``wilcoxon_signed_rank`` (paired): the exact sign-flip distribution of the signed-rank sum,
  zeros kept in the ranking (Pratt), enumerated up to ``EXACT_FLIPS_MAX_N`` pairs.
* ``feasibility_test``: Barnard's exact unconditional test of two rates (more powerful than
  Fisher's at small n, and exact).

An exact test has a smallest p it can reach with these runs (``minimum_p``): at 5 paired
seeds the signed-rank test cannot go below 1/16, so no Wilcoxon difference is significant at
α = 0.05. The report says so instead of reading "not significant" as "no difference".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import combinations, product

import numpy as np
from scipy import stats as sps

PERMUTATIONS = 9_999
EXACT_FLIPS_MAX_N = 14
"""Pairs up to which the signed-rank test enumerates all 2^n sign patterns."""

Result = tuple[np.ndarray | float, np.ndarray | float]


def _as_result(value: np.ndarray) -> np.ndarray | float:
    return float(value) if np.ndim(value) == 0 else value


def _undefined(shape: tuple[int, ...]) -> Result:
    return _as_result(np.full(shape, np.nan)), _as_result(np.full(shape, np.nan))


def _masked(statistic: np.ndarray, p: np.ndarray, undefined: np.ndarray) -> Result:
    return (
        _as_result(np.where(undefined, np.nan, statistic)),
        _as_result(np.where(undefined, np.nan, p)),
    )


def _quiet(test: Callable[[], object]) -> object:
    """Run a scipy test whose degenerate rows (masked by the caller) would warn."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return test()


def welch_t(a: np.ndarray, b: np.ndarray) -> Result:
    """Welch's t statistic and two-sided p-value of mean(a) − mean(b), along the last axis.

    NaN when a side has fewer than two values, neither side varies or a value is infinite.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    if a.shape[-1] < 2 or b.shape[-1] < 2:
        return _undefined(shape)
    result = _quiet(lambda: sps.ttest_ind(a, b, axis=-1, equal_var=False))
    constant = (np.ptp(a, axis=-1) == 0) & (np.ptp(b, axis=-1) == 0)
    infinite = ~np.isfinite(a).all(axis=-1) | ~np.isfinite(b).all(axis=-1)
    return _masked(result.statistic, result.pvalue, constant | infinite)


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a − b`` seed by seed; two equal infinities (both seeds diverged) are a tie, 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(a) & (a == b), 0.0, a - b)


def paired_t(a: np.ndarray, b: np.ndarray) -> Result:
    """Paired t statistic and two-sided p of the mean seed-by-seed difference ``a − b``.

    ``a[..., i]`` and ``b[..., i]`` share seed i (same initialisation and data order), so the
    seed's own luck cancels in the difference. NaN below two pairs, for constant differences
    or an infinite one.
    """
    d = paired_differences(a, b)
    if d.shape[-1] < 2:
        return _undefined(d.shape[:-1])
    result = _quiet(lambda: sps.ttest_1samp(d, 0.0, axis=-1))
    undefined = (np.ptp(d, axis=-1) == 0) | ~np.isfinite(d).all(axis=-1)
    return _masked(result.statistic, result.pvalue, undefined)


def _has_ties(values: np.ndarray) -> bool:
    ordered = np.sort(values, axis=-1)
    return bool(np.any(ordered[..., 1:] == ordered[..., :-1]))


def mann_whitney_u(a: np.ndarray, b: np.ndarray, seed: int = 0) -> Result:
    """Mann–Whitney U of ``a`` (pairs with a > b, ties half) and its exact two-sided p.

    Without ties scipy's exact null distribution of U; with ties (a diverged seed on each side
    is one) the permutation distribution of U over every arrangement of the pooled runs, or
    ``PERMUTATIONS`` random ones (seeded) when there are more. NaN when a side is empty or
    every value on both sides is equal.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    if a.shape[-1] == 0 or b.shape[-1] == 0:
        return _undefined(shape)
    a, b = np.broadcast_to(a, (*shape, a.shape[-1])), np.broadcast_to(b, (*shape, b.shape[-1]))
    pooled = np.concatenate([a, b], axis=-1)
    constant = np.ptp(pooled, axis=-1) == 0
    if min(a.shape[-1], b.shape[-1]) < 2:  # scipy's permutation test refuses a side of one run
        return _masked(_u_statistic(a, b), _every_split_p(a, b), constant)
    method = (
        sps.PermutationMethod(n_resamples=PERMUTATIONS, rng=seed) if _has_ties(pooled) else "exact"
    )
    result = _quiet(lambda: sps.mannwhitneyu(a, b, alternative="two-sided", axis=-1, method=method))
    return _masked(result.statistic, np.minimum(result.pvalue, 1.0), constant)


def _u_statistic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """U of ``a``: the pairs with a > b, ties counted half (scipy's ``mannwhitneyu`` U1)."""
    greater = a[..., :, None] > b[..., None, :]
    tied = a[..., :, None] == b[..., None, :]
    return (greater + 0.5 * tied).sum(axis=(-2, -1))


def _every_split_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided permutation p of U over every split of the pooled runs into sides of the
    observed sizes; for sides so small (one run) that the splits are a handful."""
    pooled = np.concatenate([a, b], axis=-1)
    size_a, total = a.shape[-1], pooled.shape[-1]
    centre = size_a * (total - size_a) / 2
    null = np.stack(
        [
            _u_statistic(
                pooled[..., list(side)],
                pooled[..., [i for i in range(total) if i not in side]],
            )
            for side in combinations(range(total), size_a)
        ],
        axis=-1,
    )
    observed = np.abs(_u_statistic(a, b) - centre)[..., None]
    return (np.abs(null - centre) >= observed - 1e-9).mean(axis=-1)


def _signed_ranks(d: np.ndarray) -> np.ndarray:
    """Ranks of |d| (average ranks for ties, zeros ranked too: Pratt) along the last axis."""
    return sps.rankdata(np.abs(d), axis=-1)


def _sign_patterns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Sign-flip patterns (rows of 0/1: 1 keeps a difference positive) and whether all."""
    if n <= EXACT_FLIPS_MAX_N:
        return np.array(list(product((0.0, 1.0), repeat=n))), True
    return rng.integers(0, 2, (PERMUTATIONS, n)).astype(float), False


def wilcoxon_signed_rank(a: np.ndarray, b: np.ndarray, seed: int = 0) -> Result:
    """Signed-rank sum ``T+`` of the paired differences ``a − b`` and its exact two-sided p.

    Under the null each difference is as likely positive as negative, so the null
    distribution of ``T+`` is the sum of the ranks of |d| over every sign pattern; zeros
    (equal values, or both seeds diverged) keep their rank but add to neither side (Pratt).
    The p-value is ``2 min(P(T ≤ t), P(T ≥ t))``, capped at 1, as ``scipy.stats.wilcoxon``
    with a ``PermutationMethod`` computes it; beyond ``EXACT_FLIPS_MAX_N`` pairs, from
    ``PERMUTATIONS`` random patterns (seeded) with the +1 correction. NaN when every
    difference is 0 or there are no pairs.
    """
    d = paired_differences(a, b)
    if d.shape[-1] == 0:
        return _undefined(d.shape[:-1])
    ranks = np.where(d == 0, 0.0, _signed_ranks(d))
    observed = np.sum(ranks * (d > 0), axis=-1)
    patterns, exact = _sign_patterns(d.shape[-1], np.random.default_rng(seed))
    null = ranks @ patterns.T
    tolerance = 1e-12 * np.maximum(1.0, np.abs(observed))[..., None]
    extra = 0 if exact else 1
    below = (np.sum(null <= observed[..., None] + tolerance, axis=-1) + extra) / (
        null.shape[-1] + extra
    )
    above = (np.sum(null >= observed[..., None] - tolerance, axis=-1) + extra) / (
        null.shape[-1] + extra
    )
    p = np.minimum(1.0, 2 * np.minimum(below, above))
    return _masked(observed, p, np.all(d == 0, axis=-1))


def feasibility_test(count_a: int, n_a: int, count_b: int, n_b: int) -> float:
    """Barnard's exact two-sided p-value of equal feasibility rates (pooled score statistic).

    NaN when a side has no seed.
    """
    if n_a == 0 or n_b == 0:
        return float("nan")
    table = [[count_a, count_b], [n_a - count_a, n_b - count_b]]
    return float(sps.barnard_exact(table, alternative="two-sided").pvalue)


def _extreme_unpaired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pooled = np.sort(np.concatenate([a, b]))
    return pooled[: a.size], pooled[a.size :]


def _extreme_paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.abs(paired_differences(a, b)), np.zeros(a.size)


MINIMUM_P_ARRANGEMENTS: dict[Callable[..., Result], Callable[..., tuple]] = {
    mann_whitney_u: _extreme_unpaired,
    wilcoxon_signed_rank: _extreme_paired,
}
"""For each exact rank test, the arrangement of these very runs that makes its p smallest."""


def minimum_p(test: Callable[..., Result], a: np.ndarray, b: np.ndarray) -> float:
    """The smallest p ``test`` can give on runs with these values (ties and n as observed).

    0 for the t tests, whose p has no floor. NaN where the test is undefined.
    """
    arrange = MINIMUM_P_ARRANGEMENTS.get(test)
    if arrange is None:
        return 0.0
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(test(*arrange(a, b))[1])


def minimum_feasibility_p(n_a: int, n_b: int) -> float:
    """The smallest p of ``feasibility_test`` with these seed counts (n_a/n_a against 0/n_b)."""
    return feasibility_test(n_a, n_a, 0, n_b)
