"""Power: how many seeds a difference needs, at the corrected α of the family it is tested in.

A comparison tested in a family of m hypotheses with Holm's correction must reach at least
α/m at Holm's first step; planning at the uncorrected α promises power the corrected test
does not have (25 seeds at α = 0.05 become 44 at 0.05/12 for the same effect). Callers pass
the corrected α (``family_alpha``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from ctrain_dist.analysis.stats.two_sample import paired_differences

SIGNIFICANCE = 0.05
POWER = 0.8
MAX_SEEDS = 100_000
"""Beyond this many seeds per algorithm a difference is reported as out of reach (inf)."""


def family_alpha(alpha: float, family_size: int) -> float:
    """The per-test level Holm's first step needs in a family of ``family_size`` (α/m)."""
    return alpha / max(1, family_size)


def _t_power(dof: float, noncentrality: float, alpha: float) -> float:
    critical = sps.t.ppf(1 - alpha / 2, dof)
    return float(
        sps.nct.sf(critical, dof, noncentrality) + sps.nct.cdf(-critical, dof, noncentrality)
    )


def welch_power(
    n: int, effect: float, std_a: float, std_b: float | None = None, alpha: float = SIGNIFICANCE
) -> float:
    """Power of the two-sided Welch test with ``n`` seeds per algorithm.

    Closed form: under a true mean difference ``effect`` the statistic follows a noncentral t
    with noncentrality ``effect / sqrt((σ_a² + σ_b²) / n)`` and the Welch–Satterthwaite degrees
    of freedom ``(n − 1)(σ_a² + σ_b²)² / (σ_a⁴ + σ_b⁴)``; power is the mass beyond ``±t_crit``.
    With equal deviations this is exactly the pooled two-sample t power (what
    ``statsmodels.stats.power.TTestIndPower`` computes); with one deviation 0 the degrees of
    freedom are n − 1, the one-sample case.
    """
    std_b = std_a if std_b is None else std_b
    va, vb = std_a**2, std_b**2
    dof = (n - 1) * (va + vb) ** 2 / (va**2 + vb**2)
    return _t_power(dof, effect / math.sqrt((va + vb) / n), alpha)


def paired_power(n: int, effect: float, std_diff: float, alpha: float = SIGNIFICANCE) -> float:
    """Power of the two-sided paired t test with ``n`` pairs (noncentral t, n − 1 dof)."""
    return _t_power(n - 1, effect / (std_diff / math.sqrt(n)), alpha)


def _smallest_n(powered: Callable[[int], float], start: int, power: float) -> float:
    """The smallest n ≥ 2 with ``powered(n) ≥ power`` (power grows with n), searched by
    doubling from ``start`` and then bisection; inf beyond ``MAX_SEEDS``."""
    high = max(2, start)
    if high > MAX_SEEDS:
        return math.inf
    while powered(high) < power:
        if high > MAX_SEEDS:
            return math.inf
        high *= 2
    low = 1  # powered(1) is never evaluated: n ≥ 2
    while high - low > 1:
        middle = (low + high) // 2
        if middle >= 2 and powered(middle) >= power:
            high = middle
        else:
            low = middle
    return high


def _check(effect: float, deviations: tuple[float, ...]) -> None:
    if not math.isfinite(effect) or effect == 0:
        raise ValueError(f"effect must be finite and non-zero, got {effect}")
    if not all(math.isfinite(s) and s >= 0 for s in deviations) or not any(deviations):
        raise ValueError(f"deviations must be finite, not negative, not all 0: {deviations}")


def seeds_needed(
    effect: float,
    std_a: float,
    std_b: float | None = None,
    alpha: float = SIGNIFICANCE,
    power: float = POWER,
) -> float:
    """Seeds per algorithm for Welch's test to detect a mean difference ``effect``.

    Starts from the normal-approximation closed form
    ``n₀ = ⌈(z_{1−α/2} + z_{power})² (σ_a² + σ_b²) / effect²⌉`` and moves to the smallest
    ``n ≥ 2`` whose exact power (``welch_power``) reaches ``power`` (inf beyond
    ``MAX_SEEDS``). One deviation may be 0 (an algorithm that lands on the same value every
    seed).

    Raises:
        ValueError: for a zero or non-finite effect, or deviations that are negative, not
            finite, or both 0.
    """
    std_b = std_a if std_b is None else std_b
    _check(effect, (std_a, std_b))
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    start = math.ceil(z**2 * (std_a**2 + std_b**2) / effect**2)
    return _smallest_n(lambda n: welch_power(n, effect, std_a, std_b, alpha), start, power)


def paired_seeds_needed(
    effect: float, std_diff: float, alpha: float = SIGNIFICANCE, power: float = POWER
) -> float:
    """Shared seeds for the paired t test to detect a mean difference ``effect``."""
    _check(effect, (std_diff,))
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    start = math.ceil(z**2 * std_diff**2 / effect**2)
    return _smallest_n(lambda n: paired_power(n, effect, std_diff, alpha), start, power)


def seeds_needed_from_pilot(
    a: np.ndarray,
    b: np.ndarray,
    alpha: float = SIGNIFICANCE,
    power: float = POWER,
    paired: bool = False,
) -> float:
    """Seeds per algorithm to detect the pilot's observed mean difference at ``alpha``.

    Paired (``a[i]``, ``b[i]`` share seed i): from the deviation of the differences; else
    from the two deviations (ddof=1). Pass the corrected α (``family_alpha``).

    Returns:
        Seeds per algorithm, or NaN when the pilot cannot say (fewer than two runs a side, an
        infinite value, no variance at all, or no difference to detect).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2 or not np.isfinite([*a, *b]).all():
        return float("nan")
    effect = float(a.mean() - b.mean())
    try:
        if paired:
            return paired_seeds_needed(
                effect, float(paired_differences(a, b).std(ddof=1)), alpha, power
            )
        return seeds_needed(effect, float(a.std(ddof=1)), float(b.std(ddof=1)), alpha, power)
    except ValueError:
        return float("nan")
