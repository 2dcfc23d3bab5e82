"""Whole distributions of run scores: performance profiles and Pareto fronts (rliable)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from ctrain_dist.analysis.stats.intervals import CONFIDENCE, wilson_interval
from ctrain_dist.analysis.stats.outcomes import measured, worst_scores
from ctrain_dist.store.schema import ALGORITHM


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
    its score > τ, as in rliable. A diverged seed is the worst run (``outcomes``) and never
    counts; errored seeds are left out. The band is the Wilson interval of each share (runs are
    independent draws, so each share is a binomial proportion).

    Args:
        taus: thresholds; default ``points`` values spanning every group's runs.

    Returns:
        One row per group × τ: ``by, metric, tau, n, share, ci_low, ci_high``.
    """
    rows_measured = measured(trials)
    gains: Collection[str] = (metric,) if higher_is_better else ()
    pooled = worst_scores(rows_measured, metric, gains)
    pooled = pooled[np.isfinite(pooled)]
    if taus is None:
        taus = np.linspace(pooled.min(), pooled.max(), points) if pooled.size else np.array([])
    rows = []
    for key, group in rows_measured.groupby(by, sort=True):
        values = worst_scores(group, metric, gains)
        values = np.sort(values[~np.isnan(values)])
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
