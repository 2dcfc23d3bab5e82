"""Effect sizes: how large a difference is, apart from whether it is significant."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from ctrain_dist.analysis.stats.intervals import CONFIDENCE, RESAMPLES, percentile_interval


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d: (mean(a) − mean(b)) / pooled standard deviation (ddof=1 per side).

    NaN when there are fewer than three runs in all, the pooled deviation is 0 or a value is
    infinite (a diverged seed has no finite distance to the others).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    dof = a.size + b.size - 2
    if a.size == 0 or b.size == 0 or dof < 1 or not np.isfinite([*a, *b]).all():
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


def improvement_shares(a: np.ndarray, b: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """P(a run of ``a`` beats a run of ``b``) + ½ P(tie), for stacks of runs (last axis)."""
    ranks = sps.rankdata(np.concatenate([a, b], axis=-1), axis=-1)
    n_a, n_b = a.shape[-1], b.shape[-1]
    above = (ranks[..., :n_a].sum(axis=-1) - n_a * (n_a + 1) / 2) / (n_a * n_b)
    return above if higher_is_better else 1.0 - above


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
    estimate = float(improvement_shares(a, b, higher_is_better))
    rng = np.random.default_rng(seed)
    resampled_a = a[rng.integers(0, a.size, (resamples, a.size))]
    resampled_b = b[rng.integers(0, b.size, (resamples, b.size))]
    low, high = percentile_interval(
        improvement_shares(resampled_a, resampled_b, higher_is_better), confidence
    )
    return estimate, low, high


def lexicographic_ranks(
    feasible: np.ndarray, objective: np.ndarray, violation: np.ndarray
) -> np.ndarray:
    """One rank per run under the lexicographic order (lower is better).

    Feasible runs first, ordered by objective; then infeasible runs, ordered by violation (a
    diverged run, violation +inf, last). Equal keys share a rank, so ties count half in a
    probability of improvement over these ranks.
    """
    feasible = np.asarray(feasible, dtype=bool)
    secondary = np.where(feasible, objective, violation)
    secondary = np.where(np.isnan(secondary), np.inf, secondary)
    keys = np.stack([~feasible, sps.rankdata(secondary)], axis=1)
    _, ranks = np.unique(keys, axis=0, return_inverse=True)
    return ranks.reshape(-1).astype(float)
