"""Calibration by simulation: the report's intervals cover and its exact tests hold their size.

Fixed seeds, a few seconds each. Each rate is judged against three Monte Carlo standard errors
of its own estimate, and a control shows the check can fail (the percentile bootstrap the
report used before undercovers at 5 seeds).
"""

from __future__ import annotations

import numpy as np
import pytest

from ctrain_dist.analysis.stats import (
    bootstrap_ci,
    iqm,
    mann_whitney_u,
    median_interval,
    t_interval,
    trimmed_mean_interval,
    wilcoxon_signed_rank,
)

REPETITIONS = 4000
ALPHA = 0.05
NOISES = {
    "normal": (lambda rng, shape: rng.normal(0.4, 0.02, shape), 0.4),
    "gamma": (lambda rng, shape: rng.gamma(4.0, 0.01, shape), None),
}


def slack(rate: float, repetitions: int = REPETITIONS) -> float:
    return 3 * np.sqrt(rate * (1 - rate) / repetitions)


def true_location(name: str, statistic) -> float:
    """The population ``statistic`` of a noise: exact for the normal, else from 2M draws."""
    draw, centre = NOISES[name]
    if centre is not None:
        return centre
    return float(statistic(draw(np.random.default_rng(99), 2_000_000)))


def coverage(interval, statistic, noise: str, n: int, repetitions: int = REPETITIONS) -> float:
    draw, _ = NOISES[noise]
    samples = draw(np.random.default_rng(n), (repetitions, n))
    truth = true_location(noise, statistic)
    bounds = np.array([interval(sample) for sample in samples])
    return float(np.mean((bounds[:, 0] <= truth) & (truth <= bounds[:, 1])))


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("n", [5, 10])
def test_the_reports_default_interval_of_the_mean_covers_at_least_93_percent(noise, n) -> None:
    assert coverage(t_interval, np.mean, noise, n) >= 0.93


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize(
    ("interval", "statistic"),
    [(median_interval, np.median), (trimmed_mean_interval, iqm)],
    ids=["median", "iqm"],
)
def test_the_robust_intervals_cover_at_least_93_percent(interval, statistic, n) -> None:
    assert coverage(interval, statistic, "gamma", n) >= 0.93


def test_the_percentile_bootstrap_undercovers_at_five_seeds() -> None:
    """Control: the coverage check can fail; this is the interval the report no longer uses."""

    def percentile(sample: np.ndarray) -> tuple[float, float]:
        return bootstrap_ci(sample, resamples=1000)

    assert coverage(percentile, np.mean, "normal", 5, repetitions=1000) < 0.9


def null_rejections(test, a: np.ndarray, b: np.ndarray) -> float:
    """Share of repetitions whose uncorrected two-sided p is below α."""
    return float(np.mean(test(a, b)[1] < ALPHA))


@pytest.mark.parametrize("n", [5, 10])
def test_mann_whitney_u_holds_its_size_on_continuous_scores(n) -> None:
    rng = np.random.default_rng(10 + n)
    a, b = rng.normal(0, 1, (2, REPETITIONS, n))
    size = null_rejections(mann_whitney_u, a, b)
    assert 0 < size <= ALPHA + slack(ALPHA)


def test_mann_whitney_u_holds_its_size_with_ties_and_diverged_seeds() -> None:
    """Scores on a coarse grid, and a fifth of the seeds diverged (+inf, tied worst)."""
    rng = np.random.default_rng(20)
    repetitions = 2000
    a, b = np.round(rng.normal(0, 1, (2, repetitions, 5)))
    a[rng.random(a.shape) < 0.2] = np.inf
    b[rng.random(b.shape) < 0.2] = np.inf
    size = null_rejections(mann_whitney_u, a, b)
    assert 0 < size <= ALPHA + slack(ALPHA, repetitions)


def test_wilcoxon_signed_rank_holds_its_size_on_paired_seeds_with_ties() -> None:
    rng = np.random.default_rng(30)
    seed_luck = rng.normal(0, 1, (REPETITIONS, 10))
    a = np.round(seed_luck + rng.normal(0, 0.5, seed_luck.shape), 1)
    b = np.round(seed_luck + rng.normal(0, 0.5, seed_luck.shape), 1)
    size = null_rejections(wilcoxon_signed_rank, a, b)
    assert 0 < size <= ALPHA + slack(ALPHA)
