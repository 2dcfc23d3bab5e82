"""Specification of the statistics across seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.proportion import proportion_confint

from ctrain_dist.analysis.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    cliffs_delta,
    cohens_d,
    convergence_bands,
    feasibility,
    holm,
    iqm,
    mann_whitney_u,
    pareto_front,
    performance_profile,
    probability_of_improvement,
    seeds_needed,
    seeds_needed_from_pilot,
    select_configurations,
    summarise,
    welch_power,
    welch_t,
    wilson_interval,
)


def holm_by_definition(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values straight from the definition, one hypothesis at a time.

    For hypothesis i: the largest, over hypotheses j ranked at or before i, of
    min(1, (m - rank_j) p_j) with 0-based ranks. Quadratic, obviously correct, and independent
    of the vectorised implementation (and of any library's).
    """
    m = p.size
    ranks = np.argsort(np.argsort(p, kind="stable"), kind="stable")
    return np.array(
        [
            max(min(1.0, (m - ranks[j]) * p[j]) for j in range(m) if ranks[j] <= ranks[i])
            for i in range(m)
        ]
    )


def test_holm_matches_a_hand_worked_example() -> None:
    # Sorted: 0.005, 0.01, 0.03, 0.04 scaled by 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04;
    # monotone step-down turns the last into max(0.06, 0.04) = 0.06.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_matches_the_definition_on_random_p_values() -> None:
    rng = np.random.default_rng(1)
    for size in (1, 2, 7, 30):
        p = rng.uniform(0, 0.2, size) ** 2
        np.testing.assert_allclose(holm(p), holm_by_definition(p))


def test_holm_caps_at_one_and_leaves_untested_hypotheses_out() -> None:
    adjusted = holm([0.6, np.nan, 0.01])
    np.testing.assert_allclose(adjusted, [0.6, np.nan, 0.02])
    assert holm([0.9, 0.8])[0] == 1.0


def test_bootstrap_ci_contains_the_mean() -> None:
    values = np.random.default_rng(0).normal(3.0, 1.0, 20)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high


def test_bootstrap_ci_shrinks_as_seeds_are_added() -> None:
    rng = np.random.default_rng(0)
    widths = [np.subtract(*bootstrap_ci(rng.normal(0, 1, n))[::-1]) for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_ci_is_reproducible_and_handles_tiny_samples() -> None:
    values = np.arange(10.0)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(np.array([2.0])) == (2.0, 2.0)
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_bootstrap_ci_rejects_arrays_that_are_not_one_run_per_entry() -> None:
    with pytest.raises(ValueError, match="num_runs"):
        bootstrap_ci(np.ones((3, 2)))


def trials_frame(groups: dict[tuple[str, str], dict[str, list[float]]]) -> pd.DataFrame:
    """Tidy trials: one row per seed of each (algorithm, config_label) with the given metrics."""
    rows = []
    for (algorithm, label), metrics in groups.items():
        seeds = len(next(iter(metrics.values())))
        for seed in range(seeds):
            values = {name: column[seed] for name, column in metrics.items()}
            rows.append({"algorithm": algorithm, "config_label": label, "seed": seed, **values})
    return pd.DataFrame(rows)


def test_summarise_gives_one_tidy_row_per_group_and_metric() -> None:
    trials = trials_frame(
        {
            ("alm", "alm(lr=1)"): {"obj": [1.0, 2.0, 3.0], "acc": [0.5, 0.6, np.nan]},
            ("sgd", "sgd(lr=1)"): {"obj": [4.0, 4.0, 4.0], "acc": [0.7, 0.7, 0.7]},
        }
    )
    summary = summarise(trials, ["obj", "acc"]).set_index(["algorithm", "metric"])
    assert len(summary) == 4
    assert summary.loc[("alm", "obj"), "mean"] == 2.0
    assert summary.loc[("alm", "obj"), "median"] == 2.0
    assert summary.loc[("alm", "obj"), "std"] == pytest.approx(1.0)
    assert summary.loc[("alm", "acc"), "n"] == 2
    assert summary.loc[("sgd", "obj"), ["ci_low", "ci_high"]].tolist() == [4.0, 4.0]


def test_feasibility_counts_seeds_with_no_violation() -> None:
    trials = trials_frame(
        {
            ("alm", "a"): {"final_test_max_violation": [0.0, -0.1, 0.2, 0.0]},
            ("sgd", "s"): {"final_test_max_violation": [0.3, 0.1, 0.0, 0.5]},
        }
    )
    table = feasibility(trials).set_index("algorithm")
    assert table.loc["alm", ["n", "count"]].tolist() == [4, 3]
    assert table.loc["sgd", "share"] == 0.25
    assert table.loc["alm", "ci_low"] < 0.75 < table.loc["alm", "ci_high"]


def test_feasibility_leaves_out_errors_and_counts_divergence_as_infeasible() -> None:
    trials = trials_frame({("alm", "a"): {"final_test_max_violation": [0.0, np.nan, np.nan]}})
    trials["status"] = ["finished", "diverged", "error"]
    row = feasibility(trials).iloc[0]
    assert (row["n"], row["count"]) == (2, 1)


def test_wilson_interval_matches_a_textbook_value_and_stays_inside_zero_one() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("n", [3, 5, 10, 37])
def test_wilson_interval_is_statsmodels_and_exact_at_zero_and_all(n: int) -> None:
    for count in range(n + 1):
        expected = proportion_confint(count, n, alpha=0.05, method="wilson")
        assert wilson_interval(count, n) == pytest.approx(expected, abs=1e-12)
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


def test_selection_prefers_a_feasible_configuration_to_a_better_infeasible_one() -> None:
    trials = trials_frame(
        {
            ("alm", "infeasible"): {
                "final_val_objective": [0.1, 0.1, 0.1],
                "final_val_max_violation": [0.5, 0.4, 0.6],
            },
            ("alm", "feasible-worse"): {
                "final_val_objective": [0.5, 0.6, 0.5],
                "final_val_max_violation": [0.0, 0.0, 0.1],
            },
            ("alm", "feasible-best"): {
                "final_val_objective": [0.3, 0.3, 0.3],
                "final_val_max_violation": [0.0, -0.1, 0.0],
            },
        }
    )
    selected = select_configurations(trials)
    assert set(selected["config_label"]) == {"feasible-best"}
    assert len(selected) == 3


def test_selection_falls_back_to_the_least_violation_when_nothing_is_feasible() -> None:
    trials = trials_frame(
        {
            ("sgd", "low-objective"): {
                "final_val_objective": [0.1],
                "final_val_max_violation": [0.9],
            },
            ("sgd", "least-violation"): {
                "final_val_objective": [0.8],
                "final_val_max_violation": [0.2],
            },
        }
    )
    assert set(select_configurations(trials)["config_label"]) == {"least-violation"}


def test_selection_is_per_algorithm() -> None:
    trials = trials_frame(
        {
            ("alm", "alm-a"): {"final_val_objective": [1.0], "final_val_max_violation": [0.0]},
            ("sgd", "sgd-a"): {"final_val_objective": [0.1], "final_val_max_violation": [0.0]},
        }
    )
    assert set(select_configurations(trials)["algorithm"]) == {"alm", "sgd"}


def test_convergence_bands_are_exact_on_an_aligned_step_axis() -> None:
    evals = pd.DataFrame(
        {
            "algorithm": "alm",
            "attempt_id": np.repeat(["a", "b", "c", "d"], 3),
            "step": np.tile([0, 10, 20], 4),
            "objective": [4, 2, 1, 4, 3, 2, 4, 4, 3, 4, 5, 4.0],
        }
    )
    bands = convergence_bands(evals, ["objective"])
    assert bands["x"].tolist() == [0, 10, 20]
    assert bands["median"].tolist() == [4.0, 3.5, 2.5]
    assert bands["n"].tolist() == [4, 4, 4]
    assert (bands["q25"] <= bands["median"]).all() and (bands["median"] <= bands["q75"]).all()


def test_convergence_bands_never_extrapolate_a_shorter_curve() -> None:
    evals = pd.DataFrame(
        {
            "algorithm": "alm",
            "attempt_id": ["long"] * 3 + ["short"] * 2,
            "time_s": [0.0, 1.0, 2.0, 0.0, 1.0],
            "objective": [1.0, 1.0, 1.0, 3.0, 3.0],
        }
    )
    bands = convergence_bands(evals, ["objective"], x="time_s").set_index("x")
    assert bands.loc[2.0, ["n", "median"]].tolist() == [1, 1.0]
    assert bands.loc[1.0, ["n", "median"]].tolist() == [2, 2.0]
    assert set(bands["axis"]) == {"time_s"}


def test_convergence_bands_interpolate_onto_a_grid_when_x_values_are_many() -> None:
    rng = np.random.default_rng(0)
    evals = pd.DataFrame(
        {
            "algorithm": "alm",
            "attempt_id": np.repeat(["a", "b"], 50),
            "time_s": np.concatenate([np.sort(rng.uniform(0, 1, 50)) for _ in range(2)]),
            "objective": 1.0,
        }
    )
    bands = convergence_bands(evals, ["objective"], x="time_s", points=20)
    assert len(bands) == 20
    assert (bands["median"] == 1.0).all()


# Agreement with scipy and statsmodels on fixed data ---------------------------------------------

FIXED_A = np.array([0.412, 0.398, 0.431, 0.405, 0.447, 0.389, 0.420, 0.415, 0.402, 0.437])
FIXED_B = np.array([0.441, 0.452, 0.430, 0.468, 0.447, 0.459, 0.425, 0.462, 0.455])


def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(2)
    for size in (1, 3, 10, 40):
        p = rng.uniform(0, 0.1, size)
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])


def test_benjamini_hochberg_matches_statsmodels() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 3, 10, 40):
        p = rng.uniform(0, 0.1, size)
        np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


def test_benjamini_hochberg_leaves_untested_hypotheses_out() -> None:
    adjusted = benjamini_hochberg([0.01, np.nan, 0.04])
    np.testing.assert_allclose(adjusted, [0.02, np.nan, 0.04])


def test_corrections_treat_each_row_of_a_stack_as_its_own_family() -> None:
    stack = np.random.default_rng(4).uniform(0, 0.2, (5, 6))
    for correct in (holm, benjamini_hochberg):
        np.testing.assert_allclose(correct(stack), [correct(row) for row in stack])


def test_welch_t_matches_scipy() -> None:
    expected = sps.ttest_ind(FIXED_A, FIXED_B, equal_var=False)
    assert welch_t(FIXED_A, FIXED_B) == pytest.approx((expected.statistic, expected.pvalue))


def test_welch_t_is_undefined_without_variance_or_with_one_seed() -> None:
    assert all(np.isnan(welch_t(np.ones(3), np.full(3, 2.0))))
    assert all(np.isnan(welch_t(np.ones(1), FIXED_B)))


def test_mann_whitney_u_with_a_tie_is_scipys_permutation_test() -> None:
    assert np.intersect1d(FIXED_A, FIXED_B).size == 1  # 0.447 on both sides
    method = sps.PermutationMethod(n_resamples=9_999, rng=0)
    expected = sps.mannwhitneyu(FIXED_A, FIXED_B, alternative="two-sided", method=method)
    assert mann_whitney_u(FIXED_A, FIXED_B) == pytest.approx((expected.statistic, expected.pvalue))


def test_mann_whitney_u_is_undefined_when_every_value_is_equal() -> None:
    assert all(np.isnan(mann_whitney_u(np.ones(4), np.ones(5))))


def test_cohens_d_matches_the_pooled_standard_deviation_formula() -> None:
    pooled = np.sqrt(
        ((FIXED_A.size - 1) * FIXED_A.var(ddof=1) + (FIXED_B.size - 1) * FIXED_B.var(ddof=1))
        / (FIXED_A.size + FIXED_B.size - 2)
    )
    expected = (FIXED_A.mean() - FIXED_B.mean()) / pooled
    assert cohens_d(FIXED_A, FIXED_B) == pytest.approx(expected)


def test_cliffs_delta_is_the_rescaled_mann_whitney_u_with_ties() -> None:
    a, b = np.array([1.0, 2.0, 2.0, 5.0]), np.array([2.0, 3.0, 0.0])
    brute = np.mean(np.sign(a[:, None] - b[None, :]))
    u = sps.mannwhitneyu(a, b).statistic
    assert cliffs_delta(a, b) == pytest.approx(brute)
    assert cliffs_delta(a, b) == pytest.approx(2 * u / (a.size * b.size) - 1)


def test_probability_of_improvement_is_the_normalised_u_with_a_ci_around_it() -> None:
    u = sps.mannwhitneyu(FIXED_A, FIXED_B).statistic
    estimate, low, high = probability_of_improvement(FIXED_A, FIXED_B)
    assert estimate == pytest.approx(1 - u / (FIXED_A.size * FIXED_B.size))
    assert low <= estimate <= high
    higher, _, _ = probability_of_improvement(FIXED_A, FIXED_B, higher_is_better=True)
    assert higher == pytest.approx(1 - estimate)


def test_iqm_matches_scipy_trim_mean_and_ignores_the_outer_quartiles() -> None:
    assert iqm(np.array([1.0, 2, 3, 4, 5, 6, 7, 1000])) == 4.5
    assert iqm(FIXED_A) == pytest.approx(sps.trim_mean(FIXED_A, 0.25))


def test_bootstrap_ci_agrees_with_scipy_bootstrap_within_monte_carlo_error() -> None:
    expected = sps.bootstrap(
        (FIXED_A,), np.mean, method="percentile", n_resamples=20_000, random_state=0
    ).confidence_interval
    low, high = bootstrap_ci(FIXED_A, resamples=20_000)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1.5e-3)


def test_stratified_bootstrap_keeps_each_tasks_share_of_runs() -> None:
    values = np.array([0.0] * 5 + [10.0] * 5)
    strata = np.array(["easy"] * 5 + ["hard"] * 5)
    assert bootstrap_ci(values, strata=strata) == (5.0, 5.0)
    low, high = bootstrap_ci(values)
    assert low < 5.0 < high


def test_summarise_reports_median_and_iqm_with_their_intervals() -> None:
    trials = trials_frame({("alm", "a"): {"obj": [1.0, 2.0, 3.0, 4.0, 100.0]}})
    row = summarise(trials, ["obj"]).iloc[0]
    assert (row["median"], row["iqm"]) == (3.0, 3.0)
    assert row["median_ci_low"] <= row["median"] <= row["median_ci_high"]
    assert row["iqm_ci_low"] <= row["iqm"] <= row["iqm_ci_high"]
    assert row["mean"] == 22.0


def test_welch_power_matches_statsmodels_for_equal_deviations() -> None:
    for n, effect in ((5, 1.0), (12, 0.8), (40, 0.3)):
        expected = TTestIndPower().power(effect_size=effect / 2.0, nobs1=n, alpha=0.05)
        assert welch_power(n, effect, 2.0) == pytest.approx(expected, rel=1e-6)


def test_seeds_needed_matches_statsmodels_solve_power() -> None:
    for effect, power in ((1.0, 0.8), (0.5, 0.9), (2.0, 0.8)):
        expected = TTestIndPower().solve_power(effect_size=effect, alpha=0.05, power=power)
        assert seeds_needed(effect, 1.0, power=power) == int(np.ceil(expected))


def test_seeds_needed_from_pilot_is_nan_when_the_pilot_cannot_say() -> None:
    assert np.isnan(seeds_needed_from_pilot(np.ones(5), np.ones(5)))
    assert np.isnan(seeds_needed_from_pilot(np.ones(1), FIXED_B))
    assert seeds_needed_from_pilot(FIXED_A, FIXED_B) >= 2


def test_performance_profile_at_zero_violation_is_the_feasibility_rate() -> None:
    trials = trials_frame({("alm", "a"): {"v": [0.0, -0.1, 0.2, 0.0]}})
    profile = performance_profile(trials, "v", taus=np.array([-0.2, 0.0, 0.5]))
    assert profile["share"].tolist() == [0.0, 0.75, 1.0]
    assert (profile["ci_low"] <= profile["share"]).all()


def test_performance_profile_counts_runs_above_tau_when_higher_is_better() -> None:
    trials = trials_frame({("alm", "a"): {"acc": [0.7, 0.8, 0.9]}})
    profile = performance_profile(trials, "acc", taus=np.array([0.8]), higher_is_better=True)
    assert profile["share"].tolist() == [pytest.approx(1 / 3)]


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    frame = pd.DataFrame(
        {
            "obj": [1.0, 2.0, 3.0, 2.5, 1.0, 4.0, np.nan],
            "vio": [3.0, 2.0, 1.0, 2.5, 3.0, 1.0, 0.0],
        }
    )
    assert pareto_front(frame, "obj", "vio").tolist() == [
        True,
        True,
        True,
        False,
        True,
        False,
        False,
    ]


def test_pareto_front_is_computed_within_each_group() -> None:
    frame = pd.DataFrame({"g": ["a", "a", "b"], "obj": [1.0, 2.0, 5.0], "vio": [1.0, 2.0, 5.0]})
    assert pareto_front(frame, "obj", "vio", by="g").tolist() == [True, False, True]


# Calibration by simulation ----------------------------------------------------------------------

REPETITIONS = 4000


def monte_carlo_slack(rate: float, repetitions: int = REPETITIONS) -> float:
    """Three standard errors of a rejection rate estimated from ``repetitions`` simulations."""
    return 3 * np.sqrt(rate * (1 - rate) / repetitions)


def null_family_p_values(test, rng: np.random.Generator) -> np.ndarray:
    """p-values of all 6 pairs of 4 identical algorithms (10 seeds), shape (REPETITIONS, 6)."""
    scores = rng.normal(0.4, 0.02, (REPETITIONS, 4, 10))
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    return np.stack([test(scores[:, i], scores[:, j])[1] for i, j in pairs], axis=1)


@pytest.mark.parametrize("test", [welch_t, mann_whitney_u], ids=["welch", "mann_whitney"])
@pytest.mark.parametrize("correct", [holm, benjamini_hochberg], ids=["holm", "bh"])
def test_corrected_tests_reject_at_most_at_alpha_on_null_data(test, correct) -> None:
    p = null_family_p_values(test, np.random.default_rng(6))
    any_rejection = (correct(p) < 0.05).any(axis=1).mean()
    assert any_rejection <= 0.05 + monte_carlo_slack(0.05)


def test_uncorrected_tests_do_reject_too_often_on_null_data() -> None:
    """The check above can fail: without correction, 6 tests reject far more than 5%."""
    p = null_family_p_values(welch_t, np.random.default_rng(6))
    assert (p < 0.05).any(axis=1).mean() > 0.05 + monte_carlo_slack(0.05)


@pytest.mark.parametrize(("effect", "std_a", "std_b"), [(1.0, 1.0, 1.0), (1.5, 1.0, 2.0)])
def test_welch_power_matches_simulation_with_a_known_effect(effect, std_a, std_b) -> None:
    n = seeds_needed(effect, std_a, std_b)
    rng = np.random.default_rng(7)
    a = rng.normal(effect, std_a, (REPETITIONS, n))
    b = rng.normal(0.0, std_b, (REPETITIONS, n))
    rejected = (welch_t(a, b)[1] < 0.05).mean()
    expected = welch_power(n, effect, std_a, std_b)
    assert expected >= 0.8
    assert rejected == pytest.approx(expected, abs=monte_carlo_slack(expected))
