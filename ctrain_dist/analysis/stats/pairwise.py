"""Pairwise verdicts between algorithms: one family of hypotheses per question, no duplicates.

The question a constrained comparison asks is lexicographic: *does one algorithm meet the
constraints more often, and if not, does it reach a lower objective when it meets them?* So
each pair (a, b) carries exactly two hypotheses, and the family is those two per pair,
Holm-corrected together (``verdicts``):

1. equal feasibility rates: Barnard's exact test, the difference with Newcombe's interval;
2. equal mean test objective among feasible seeds: the paired t test when both sides' feasible
   seeds are the same seeds (the pairing holds: same seed, same initialisation and data
   order), else Welch's; the exact rank test beside it (Wilcoxon signed-rank or
   Mann–Whitney) as a distribution-free check, not a second hypothesis.

The verdict reads feasibility first: a significant rate difference decides; otherwise a
significant objective difference does; otherwise none. Every other metric is compared
descriptively (``descriptive_differences``: raw p-values, no family, no claim).

Which pairs: every pair, or each algorithm against a baseline (``pairs_to_compare``), the
smaller family when one reference algorithm is the question.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from ctrain_dist.analysis.stats.corrections import holm
from ctrain_dist.analysis.stats.effects import (
    cliffs_delta,
    lexicographic_ranks,
    probability_of_improvement,
)
from ctrain_dist.analysis.stats.intervals import newcombe_interval, t_interval, welch_interval
from ctrain_dist.analysis.stats.outcomes import (
    DEFAULT_TOLERANCE,
    feasible,
    measured,
    worst_scores,
)
from ctrain_dist.analysis.stats.power import SIGNIFICANCE, family_alpha, seeds_needed_from_pilot
from ctrain_dist.analysis.stats.two_sample import (
    feasibility_test,
    mann_whitney_u,
    minimum_feasibility_p,
    minimum_p,
    paired_differences,
    paired_t,
    welch_t,
    wilcoxon_signed_rank,
)
from ctrain_dist.store.schema import (
    ALGORITHM,
    MAX_VIOLATION,
    OBJECTIVE,
    SEED,
    TEST,
    final_column,
)

PAIRED, UNPAIRED = "paired", "unpaired"
TESTS: dict[str, tuple] = {
    PAIRED: (paired_t, wilcoxon_signed_rank, "paired t", "Wilcoxon signed-rank (exact)"),
    UNPAIRED: (welch_t, mann_whitney_u, "Welch t", "Mann–Whitney U (exact/permutation)"),
}
"""Per pairing: (primary test, rank check, their names as the report prints them)."""


def pairs_to_compare(algorithms: Sequence[str], baseline: str | None = None) -> list[tuple]:
    """Every pair in sorted order, or ``(x, baseline)`` for each other algorithm.

    Raises:
        KeyError: for a baseline that is not among ``algorithms``.
    """
    names = sorted(algorithms)
    if baseline is None:
        return list(combinations(names, 2))
    if baseline not in names:
        raise KeyError(baseline)
    return [(name, baseline) for name in names if name != baseline]


def aligned(
    rows_a: pd.DataFrame, values_a: np.ndarray, rows_b: pd.DataFrame, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """The two sides' values and whether they pair: paired (sorted by seed) when both sides
    hold the same, distinct seeds (at least two), else unpaired as given."""
    seeds_a, seeds_b = rows_a[SEED].to_numpy(), rows_b[SEED].to_numpy()
    same = (
        seeds_a.size >= 2
        and np.unique(seeds_a).size == seeds_a.size
        and set(seeds_a) == set(seeds_b)
        and seeds_a.size == seeds_b.size
    )
    if not same:
        return values_a, values_b, UNPAIRED
    return values_a[np.argsort(seeds_a)], values_b[np.argsort(seeds_b)], PAIRED


def _difference_interval(a: np.ndarray, b: np.ndarray, pairing: str) -> tuple[float, float]:
    return t_interval(paired_differences(a, b)) if pairing == PAIRED else welch_interval(a, b)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _side(
    rows: pd.DataFrame, objective_col: str, violation_col: str, tolerance: float
) -> dict[str, object]:
    met = feasible(rows, violation_col, tolerance)
    return {
        "rows": rows,
        "met": met,
        "objective": worst_scores(rows, objective_col),
        "violation": worst_scores(rows, violation_col),
    }


def _pair_row(a: str, b: str, sa: dict, sb: dict, alpha: float, seed: int) -> dict:
    """Every number of one pair's verdict except the corrected p-values."""
    n_a, n_b, met_a, met_b = len(sa["rows"]), len(sb["rows"]), sa["met"], sb["met"]
    count_a, count_b = int(met_a.sum()), int(met_b.sum())
    rate_low, rate_high = newcombe_interval(count_a, n_a, count_b, n_b)
    xa, xb, pairing = aligned(
        sa["rows"][met_a], sa["objective"][met_a], sb["rows"][met_b], sb["objective"][met_b]
    )
    primary, rank, _, _ = TESTS[pairing]
    diff_low, diff_high = _difference_interval(xa, xb, pairing)
    ranks = lexicographic_ranks(
        np.concatenate([met_a, met_b]),
        np.concatenate([sa["objective"], sb["objective"]]),
        np.concatenate([sa["violation"], sb["violation"]]),
    )
    poi, poi_low, poi_high = probability_of_improvement(ranks[:n_a], ranks[n_a:], seed=seed)
    return {
        "a": a,
        "b": b,
        "n_a": n_a,
        "n_b": n_b,
        "feasible_a": count_a,
        "feasible_b": count_b,
        "rate_diff": count_a / n_a - count_b / n_b if n_a and n_b else float("nan"),
        "rate_diff_low": rate_low,
        "rate_diff_high": rate_high,
        "rate_p": feasibility_test(count_a, n_a, count_b, n_b),
        "rate_min_p": minimum_feasibility_p(n_a, n_b) if n_a and n_b else float("nan"),
        "pairing": pairing,
        "objective_n_a": xa.size,
        "objective_n_b": xb.size,
        "mean_a": _mean(xa),
        "mean_b": _mean(xb),
        "mean_diff": _mean(xa) - _mean(xb),
        "diff_low": diff_low,
        "diff_high": diff_high,
        "objective_p": primary(xa, xb)[1],
        "rank_p": rank(xa, xb, seed=seed)[1] if xa.size and xb.size else float("nan"),
        "rank_min_p": minimum_p(rank, xa, xb) if xa.size and xb.size else float("nan"),
        "cliffs_delta": cliffs_delta(xa, xb),
        "poi": poi,
        "poi_low": poi_low,
        "poi_high": poi_high,
        "seeds_needed": seeds_needed_from_pilot(xa, xb, alpha, paired=pairing == PAIRED),
    }


def _verdict(row: pd.Series, alpha: float) -> tuple[str | None, str]:
    """(winner, basis): feasibility rate first, then objective among feasible seeds."""
    if row["rate_p_holm"] < alpha:
        winner = row["a"] if row["rate_diff"] > 0 else row["b"]
        return winner, "feasibility rate"
    if row["objective_p_holm"] < alpha:
        winner = row["a"] if row["mean_diff"] < 0 else row["b"]
        return winner, "objective among feasible seeds"
    return None, "no significant difference"


def verdicts(
    trials: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    objective_col: str = final_column(TEST, OBJECTIVE),
    violation_col: str = final_column(TEST, MAX_VIOLATION),
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = SIGNIFICANCE,
    seed: int = 0,
) -> pd.DataFrame:
    """The lexicographic verdict of each pair, its two tests corrected over the family.

    Args:
        trials: a trials frame of one configuration per algorithm (``select_configurations``).
        pairs: ``(a, b)`` pairs (``pairs_to_compare``); differences read a − b.
        tolerance: a seed is feasible when its violation is ≤ this (``outcomes.feasible``).
        alpha: family-wise error rate of the verdicts.

    Returns:
        One row per pair: sizes and feasible counts, the rate difference with its Newcombe
        interval, Barnard p and its floor ``rate_min_p``; the pairing, the objective among
        feasible seeds (``objective_n_*``, means, the difference with its t interval, primary
        p, rank-check p and its floor ``rank_min_p``, Cliff's δ); P(a seed of a beats a seed
        of b) under the lexicographic order with a bootstrap CI; seeds needed for 80% power at
        the corrected α; then ``rate_p_holm``, ``objective_p_holm``, ``family`` (hypotheses),
        ``family_alpha`` (α/m), ``winner`` (None: no significant difference) and ``basis``.
    """
    rows = measured(trials)
    sides = {
        name: _side(group, objective_col, violation_col, tolerance)
        for name, group in rows.groupby(ALGORITHM, sort=True)
    }
    family = 2 * len(pairs)
    per_test = family_alpha(alpha, family)
    result = pd.DataFrame([_pair_row(a, b, sides[a], sides[b], per_test, seed) for a, b in pairs])
    if result.empty:
        return result
    corrected = holm(np.concatenate([result["rate_p"], result["objective_p"]]))
    result["rate_p_holm"] = corrected[: len(pairs)]
    result["objective_p_holm"] = corrected[len(pairs) :]
    result["family"] = family
    result["family_alpha"] = per_test
    decided = [_verdict(row, alpha) for _, row in result.iterrows()]
    result["winner"] = [winner for winner, _ in decided]
    result["basis"] = [basis for _, basis in decided]
    return result


DESCRIPTIVE_COLUMNS: tuple[str, ...] = (
    "metric",
    "a",
    "b",
    "n_a",
    "n_b",
    "pairing",
    "mean_diff",
    "diff_low",
    "diff_high",
    "p",
    "rank_p",
    "poi",
    "poi_low",
    "poi_high",
)


def descriptive_differences(
    trials: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    higher_is_better: Collection[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """Differences on secondary metrics, over all measured seeds: descriptive, no claim.

    Diverged seeds count as the worst value (``outcomes.worst_scores``), which leaves the
    t-based columns undefined for that pair and the rank-based ones (rank p, P(a better))
    meaningful. The p-values are raw, outside any family: they describe, they do not decide.
    """
    rows = measured(trials)
    groups = dict(tuple(rows.groupby(ALGORITHM, sort=True)))
    found = []
    for metric in metrics:
        higher = metric in higher_is_better
        for a, b in pairs:
            ga, gb = groups[a], groups[b]
            va = worst_scores(ga, metric, higher_is_better)
            vb = worst_scores(gb, metric, higher_is_better)
            keep_a, keep_b = ~np.isnan(va), ~np.isnan(vb)
            xa, xb, pairing = aligned(ga[keep_a], va[keep_a], gb[keep_b], vb[keep_b])
            primary, rank, _, _ = TESTS[pairing]
            low, high = _difference_interval(xa, xb, pairing)
            poi = probability_of_improvement(xa, xb, higher, seed=seed)
            undefined = not (xa.size and xb.size)
            found.append(
                (
                    metric,
                    a,
                    b,
                    xa.size,
                    xb.size,
                    pairing,
                    _mean(xa) - _mean(xb),
                    low,
                    high,
                    primary(xa, xb)[1],
                    float("nan") if undefined else rank(xa, xb, seed=seed)[1],
                    *poi,
                )
            )
    return pd.DataFrame(found, columns=list(DESCRIPTIVE_COLUMNS))
