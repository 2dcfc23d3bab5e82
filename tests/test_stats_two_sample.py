"""Specification of the exact tests, small-sample intervals, power and the verdict family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.stats import mstats
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.proportion import confint_proportions_2indep

from ctrain_dist.analysis.stats import (
    feasibility,
    feasibility_test,
    mann_whitney_u,
    median_interval,
    median_interval_coverage,
    minimum_feasibility_p,
    minimum_p,
    newcombe_interval,
    paired_seeds_needed,
    paired_t,
    pairs_to_compare,
    seeds_needed,
    seeds_needed_from_pilot,
    select_configurations,
    summarise,
    t_interval,
    trimmed_mean_interval,
    verdicts,
    welch_t,
    wilcoxon_signed_rank,
)
from ctrain_dist.store.schema import MAX_VIOLATION, OBJECTIVE, TEST, VAL, final_column

RNG = np.random.default_rng(0)
A5, B5 = RNG.normal(0, 1, 5), RNG.normal(0, 1, 5)
OBJ, VIO = final_column(TEST, OBJECTIVE), final_column(TEST, MAX_VIOLATION)


def test_wilcoxon_signed_rank_is_scipys_exact_test_without_ties() -> None:
    expected = sps.wilcoxon(A5, B5, method="exact")
    assert wilcoxon_signed_rank(A5, B5)[1] == pytest.approx(expected.pvalue)


def test_wilcoxon_signed_rank_with_ties_and_zeros_is_scipys_permutation_test() -> None:
    d = np.array([1.0, 1.0, -2.0, 0.0, 3.0, 1.0, 2.0])
    method = sps.PermutationMethod(n_resamples=10**6)
    expected = sps.wilcoxon(d, zero_method="pratt", method=method)
    assert wilcoxon_signed_rank(d, np.zeros(d.size))[1] == pytest.approx(expected.pvalue)


def test_wilcoxon_signed_rank_counts_two_diverged_seeds_as_a_tie() -> None:
    a = np.array([np.inf, 1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.array([np.inf, 0.0, 1.0, 2.0, 3.0, 4.0])
    same_but_no_inf = wilcoxon_signed_rank(np.array([0.0, *a[1:]]), np.array([0.0, *b[1:]]))
    assert wilcoxon_signed_rank(a, b) == pytest.approx(same_but_no_inf)


def test_mann_whitney_u_is_scipys_exact_test_without_ties() -> None:
    expected = sps.mannwhitneyu(A5, B5, method="exact")
    assert mann_whitney_u(A5, B5) == pytest.approx((expected.statistic, expected.pvalue))


def test_mann_whitney_u_ranks_a_diverged_seed_last() -> None:
    finite = mann_whitney_u(np.array([5.0, 6, 7, 8, 9]), np.arange(5.0))
    diverged = mann_whitney_u(np.array([5.0, 6, 7, 8, np.inf]), np.arange(5.0))
    assert diverged == pytest.approx(finite)


def test_paired_t_is_scipys_ttest_rel() -> None:
    expected = sps.ttest_rel(A5, B5)
    assert paired_t(A5, B5) == pytest.approx((expected.statistic, expected.pvalue))


def test_t_tests_are_undefined_on_a_diverged_seed() -> None:
    assert np.isnan(welch_t(np.array([1.0, np.inf, 2.0]), B5)[1])
    assert np.isnan(paired_t(np.array([1.0, np.inf, 2.0]), np.ones(3))[1])


def test_the_smallest_attainable_p_of_the_exact_tests_at_five_seeds() -> None:
    assert minimum_p(wilcoxon_signed_rank, A5, B5) == pytest.approx(2 / 2**5)
    assert minimum_p(mann_whitney_u, A5, B5) == pytest.approx(2 / 252)
    assert minimum_p(welch_t, A5, B5) == 0.0


def test_feasibility_test_is_scipys_barnard_and_its_floor_is_the_extreme_table() -> None:
    table = [[4, 1], [1, 4]]
    assert feasibility_test(4, 5, 1, 5) == pytest.approx(sps.barnard_exact(table).pvalue)
    assert minimum_feasibility_p(5, 5) == pytest.approx(feasibility_test(5, 5, 0, 5))
    assert minimum_feasibility_p(5, 5) < feasibility_test(4, 5, 0, 5)


@pytest.mark.parametrize(("ca", "na", "cb", "nb"), [(5, 5, 2, 5), (0, 5, 0, 5), (7, 10, 3, 12)])
def test_newcombe_interval_matches_statsmodels(ca, na, cb, nb) -> None:
    expected = confint_proportions_2indep(ca, na, cb, nb, method="newcomb")
    assert newcombe_interval(ca, na, cb, nb) == pytest.approx(expected)


def test_t_interval_matches_scipy() -> None:
    expected = sps.t.interval(0.95, 4, loc=A5.mean(), scale=sps.sem(A5))
    assert t_interval(A5) == pytest.approx(expected)


@pytest.mark.parametrize("n", [5, 8, 10])
def test_trimmed_mean_interval_matches_scipy_mstats(n) -> None:
    x = RNG.normal(0, 1, n)
    expected = mstats.trimmed_mean_ci(x, limits=(0.25, 0.25))
    assert trimmed_mean_interval(x) == pytest.approx(tuple(expected))


def test_trimmed_mean_interval_winsorises_a_diverged_seed_away() -> None:
    low, high = trimmed_mean_interval(np.array([1.0, 2.0, 3.0, 4.0, np.inf]))
    assert np.isfinite([low, high]).all() and low < 3.0 < high


def test_median_interval_uses_order_statistics_with_binomial_coverage() -> None:
    assert median_interval(np.arange(10.0)) == (1.0, 8.0)
    assert median_interval(np.arange(5.0)) == (0.0, 4.0)
    assert median_interval_coverage(5) == pytest.approx(1 - 2 / 32)
    assert median_interval_coverage(10) == pytest.approx(1 - 2 * 11 / 1024)


def test_seeds_needed_grows_with_the_correction_of_the_family() -> None:
    assert seeds_needed(0.81, 1.0) == 25
    assert seeds_needed(0.81, 1.0, alpha=0.05 / 12) == 44


def test_seeds_needed_at_the_corrected_alpha_matches_statsmodels() -> None:
    expected = TTestIndPower().solve_power(effect_size=0.81, alpha=0.05 / 12, power=0.8)
    assert seeds_needed(0.81, 1.0, alpha=0.05 / 12) == int(np.ceil(expected))


def test_seeds_needed_with_one_constant_side_is_the_one_sample_case() -> None:
    expected = TTestPower().solve_power(effect_size=1.2, alpha=0.05, power=0.8)
    assert seeds_needed(1.2, 1.0, 0.0) == int(np.ceil(expected))
    assert seeds_needed_from_pilot(np.array([0.0, 1.0, 2.0]), np.full(3, 3.0)) >= 2


def test_paired_seeds_needed_matches_statsmodels() -> None:
    expected = TTestPower().solve_power(effect_size=0.5, alpha=0.01, power=0.8)
    assert paired_seeds_needed(0.5, 1.0, alpha=0.01) == int(np.ceil(expected))


def test_pairs_are_every_pair_or_each_against_the_baseline() -> None:
    assert pairs_to_compare(["c", "a", "b"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs_to_compare(["c", "a", "sgd"], baseline="sgd") == [("a", "sgd"), ("c", "sgd")]
    with pytest.raises(KeyError):
        pairs_to_compare(["a", "b"], baseline="sgd")


def seeds_frame(sides: dict[str, tuple[list[float], list[float], list[str]]]) -> pd.DataFrame:
    """One row per seed: objective, violation and status per algorithm (seeds 0..n−1)."""
    rows = []
    for algorithm, (objective, violation, status) in sides.items():
        for seed, (o, v, s) in enumerate(zip(objective, violation, status, strict=True)):
            rows.append(
                {
                    "algorithm": algorithm,
                    "config_label": algorithm,
                    "seed": seed,
                    "status": s,
                    OBJ: o,
                    VIO: v,
                }
            )
    return pd.DataFrame(rows)


FINISHED = ["finished"] * 8


def test_the_verdict_reads_feasibility_first() -> None:
    trials = seeds_frame(
        {
            "alm": ([0.5] * 8, [0.0] * 8, FINISHED),
            "sgd": ([0.3] * 8, [0.1] * 8, FINISHED),
        }
    )
    row = verdicts(trials, [("alm", "sgd")]).iloc[0]
    assert (row["winner"], row["basis"]) == ("alm", "feasibility rate")
    assert row["family"] == 2 and row["rate_p_holm"] < 0.05


def test_the_verdict_then_reads_the_objective_of_feasible_seeds_paired() -> None:
    luck = np.linspace(0, 0.1, 8)
    trials = seeds_frame(
        {
            "alm": (list(0.4 + luck), [0.0] * 8, FINISHED),
            "pbm": (list(0.45 + luck + 0.001 * np.arange(8) % 3), [0.0] * 8, FINISHED),
        }
    )
    row = verdicts(trials, [("alm", "pbm")]).iloc[0]
    assert row["pairing"] == "paired"
    assert (row["winner"], row["basis"]) == ("alm", "objective among feasible seeds")


def test_the_objective_is_unpaired_when_the_feasible_seeds_differ() -> None:
    trials = seeds_frame(
        {
            "alm": ([0.4, 0.41, 0.42, 0.43], [0.0, 0.0, 0.0, 0.1], ["finished"] * 4),
            "pbm": ([0.5, 0.51, 0.52, 0.53], [0.0] * 4, ["finished"] * 4),
        }
    )
    assert verdicts(trials, [("alm", "pbm")]).iloc[0]["pairing"] == "unpaired"


def test_a_diverged_seed_is_infeasible_and_worst_whatever_its_row_says() -> None:
    majority_model = {"objective": np.nan, "violation": 0.0}
    trials = seeds_frame(
        {
            "alm": (
                [0.4, 0.41, majority_model["objective"]],
                [0.0, 0.0, majority_model["violation"]],
                ["finished", "finished", "diverged"],
            )
        }
    )
    assert feasibility(trials).iloc[0][["n", "diverged", "count"]].tolist() == [3, 1, 2]
    row = summarise(trials, [OBJ, VIO]).set_index("metric").loc[VIO]
    assert np.isinf(row["mean"]) and row["median"] == 0.0 and row["diverged"] == 1


def test_selection_never_prefers_a_configuration_that_diverges_on_most_seeds() -> None:
    val_obj, val_vio = final_column(VAL, OBJECTIVE), final_column(VAL, MAX_VIOLATION)
    rows = [
        {
            "algorithm": "alm",
            "config_label": label,
            "seed": s,
            "status": st,
            val_obj: np.nan if st == "diverged" else o,  # as a diverged run writes it
            val_vio: v,
        }
        for label, statuses, o, v in (
            ("unstable", ["diverged"] * 3 + ["finished"] * 2, 0.2, 0.0),
            ("stable", ["finished"] * 5, 0.4, 0.0),
        )
        for s, st in enumerate(statuses)
    ]
    selected = select_configurations(pd.DataFrame(rows))
    assert set(selected["config_label"]) == {"stable"}
