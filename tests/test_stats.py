"""Specification of the statistics across seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctrain_dist.stats import (
    bootstrap_ci,
    compare_to_baseline,
    convergence_bands,
    feasibility,
    holm,
    select_configurations,
    summarise,
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


def test_compare_to_baseline_finds_a_clear_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(0)
    trials = trials_frame(
        {
            ("sgd", "s"): {"obj": rng.normal(1.0, 0.1, 20), "acc": rng.normal(0.8, 0.05, 20)},
            ("alm", "a"): {"obj": rng.normal(0.5, 0.1, 20), "acc": rng.normal(0.8, 0.05, 20)},
        }
    )
    result = compare_to_baseline(trials, "sgd", ["obj", "acc"]).set_index("metric")
    assert result.loc["obj", "significant"]
    assert result.loc["obj", "mean_diff"] == pytest.approx(-0.5, abs=0.1)
    assert not result.loc["acc", "significant"]
    assert (result["p_holm"] >= result["p"]).all()


def test_compare_to_baseline_reports_untestable_comparisons_as_nan() -> None:
    trials = trials_frame(
        {
            ("sgd", "s"): {"obj": [1.0, 1.0, 1.0], "one_seed": [1.0, np.nan, np.nan]},
            ("alm", "a"): {"obj": [2.0, 2.0, 2.0], "one_seed": [1.0, 2.0, 3.0]},
        }
    )
    result = compare_to_baseline(trials, "sgd", ["obj", "one_seed"])
    assert result[["t", "p", "p_holm"]].isna().all().all()
    assert not result["significant"].any()


def test_compare_to_baseline_rejects_an_absent_baseline() -> None:
    trials = trials_frame({("alm", "a"): {"obj": [1.0, 2.0]}})
    with pytest.raises(ValueError, match="baseline"):
        compare_to_baseline(trials, "sgd", ["obj"])


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
