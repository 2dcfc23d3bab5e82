"""Tuning curves (Dodge et al. 2019) with feasibility first, against enumeration of draws."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ctrain_dist.analysis import stats
from ctrain_dist.analysis.stats.tuning_curves import (
    VAL_MAX_VIOLATION,
    VAL_OBJECTIVE,
    best_of_n_distribution,
    configuration_values,
    expected_best,
    sensitivity,
    tuning_curve,
    tuning_curves,
)
from ctrain_dist.store.schema import (
    ALGORITHM,
    CONFIG_LABEL,
    SEED,
    STATUS,
    STATUS_DIVERGED,
    STATUS_ERROR,
    STATUS_FINISHED,
    hyperparameter_column,
)


def enumerate_draws(objective, feasible, n):
    """Every one of the N^n ordered draws with replacement, equally likely: the exact mean and
    variance of the best feasible objective given one is feasible, and P(one is feasible)."""
    best = []
    none = 0
    for draw in itertools.product(range(len(objective)), repeat=n):
        chosen = [objective[i] for i in draw if feasible[i]]
        if chosen:
            best.append(min(chosen))
        else:
            none += 1
    total = len(objective) ** n
    if not best:
        return np.nan, np.nan, 0.0
    return float(np.mean(best)), float(np.std(best)), 1 - none / total


CASES = [
    ([0.5, 0.3, 0.9, 0.4, 0.7], [True, True, True, True, True]),
    ([0.5, 0.3, 0.9, 0.4, 0.7], [True, False, True, False, True]),
    ([0.2, 0.2, 0.6, 0.1, 0.6], [True, True, True, False, True]),  # ties, best infeasible
    ([0.1, 0.5, 0.3], [False, False, True]),
]


@pytest.mark.parametrize(("objective", "feasible"), CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_closed_form_equals_enumeration_of_every_draw(objective, feasible, n):
    mean, std, p_any = expected_best(np.array(objective), np.array(feasible), n)
    want_mean, want_std, want_p = enumerate_draws(objective, feasible, n)
    assert mean == pytest.approx(want_mean, abs=1e-12)
    assert std == pytest.approx(want_std, abs=1e-12)
    assert p_any == pytest.approx(want_p, abs=1e-12)


def test_closed_form_equals_monte_carlo_at_many_configurations():
    rng = np.random.default_rng(0)
    objective = rng.normal(size=40)
    feasible = rng.random(40) < 0.3
    n, repeats = 12, 200_000
    draws = rng.integers(0, 40, size=(repeats, n))
    masked = np.where(feasible[draws], objective[draws], np.inf)
    best = masked.min(axis=1)
    any_feasible = np.isfinite(best)
    mean, std, p_any = expected_best(objective, feasible, n)
    # Monte Carlo error: std / sqrt(repeats) ≈ 0.001 here; 5 standard errors of slack.
    assert p_any == pytest.approx(any_feasible.mean(), abs=5 * 0.5 / np.sqrt(repeats))
    assert mean == pytest.approx(best[any_feasible].mean(), abs=5 * std / np.sqrt(repeats))
    assert std == pytest.approx(best[any_feasible].std(), rel=0.02)


def test_probabilities_of_the_best_and_of_no_feasible_draw_sum_to_one():
    _, probabilities, none = best_of_n_distribution(
        np.array([3.0, 1.0, 2.0, 5.0]), np.array([True, False, True, True]), 3
    )
    assert probabilities.sum() + none == pytest.approx(1.0)
    assert none == pytest.approx(0.25**3)


def test_curve_starts_at_the_feasible_mean_and_falls_to_the_best_feasible_value():
    objective = np.array([0.5, 0.3, 0.9, 0.1, 0.7])
    feasible = np.array([True, True, True, False, True])
    curve = tuning_curve(objective, feasible)
    assert list(curve["n"]) == [1, 2, 3, 4, 5]
    assert curve["expected_best"].iloc[0] == pytest.approx(objective[feasible].mean())
    assert np.all(np.diff(curve["expected_best"]) <= 1e-12)
    assert np.all(np.diff(curve["p_any_feasible"]) >= 0)
    assert curve["feasible_share"].iloc[0] == pytest.approx(0.8)
    assert tuning_curve(objective, feasible.copy())["expected_best"].iloc[-1] > 0.3
    big = tuning_curve(np.tile(objective, 40), np.tile(feasible, 40))  # N = 200
    assert big["expected_best"].iloc[-1] == pytest.approx(0.3, abs=1e-9)
    inside = (curve["band_low"] >= 0.3 - 1e-12) & (curve["band_high"] <= 0.9 + 1e-12)
    assert inside.all()


def test_an_algorithm_without_a_feasible_configuration_has_no_curve_and_zero_chance():
    curve = tuning_curve(np.array([0.1, 0.2]), np.array([False, False]))
    assert curve["expected_best"].isna().all()
    assert (curve["p_any_feasible"] == 0).all()
    assert (curve["feasible_share"] == 0).all()


def test_n_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        best_of_n_distribution(np.array([1.0]), np.array([True]), 0)


def trials_frame() -> pd.DataFrame:
    """Two algorithms × configurations × 2 seeds, with a diverged and an errored seed."""
    rows = []
    configs = {
        "alm": [(0.01, 0.40, 0.00), (0.1, 0.30, 0.00), (1.0, 0.20, 0.05)],
        "sgd": [(0.01, 0.35, 0.02), (0.1, 0.25, 0.03)],
    }
    for algorithm, grid in configs.items():
        for lr, objective, violation in grid:
            for seed in (0, 1):
                rows.append(
                    {
                        ALGORITHM: algorithm,
                        CONFIG_LABEL: f"{algorithm}-lr{lr:g}",
                        SEED: seed,
                        STATUS: STATUS_FINISHED,
                        hyperparameter_column("lr"): lr,
                        hyperparameter_column("rho"): 1.0,
                        VAL_OBJECTIVE: objective + 0.01 * seed,
                        VAL_MAX_VIOLATION: violation,
                    }
                )
    frame = pd.DataFrame(rows)
    frame.loc[frame[CONFIG_LABEL].eq("alm-lr0.1") & frame[SEED].eq(1), STATUS] = STATUS_ERROR
    frame.loc[frame[CONFIG_LABEL].eq("alm-lr0.01") & frame[SEED].eq(1), STATUS] = STATUS_DIVERGED
    return frame


def test_a_diverged_seed_makes_its_configuration_infeasible_and_an_errored_one_is_left_out():
    values = configuration_values(trials_frame()).set_index(CONFIG_LABEL)
    assert not values.loc["alm-lr0.01", "feasible"]  # median of (0.40, +inf): +inf
    assert values.loc["alm-lr0.1", VAL_OBJECTIVE] == pytest.approx(0.30)  # seed 0 only
    assert values.loc["alm-lr0.1", "feasible"]
    assert not values.loc["alm-lr1", "feasible"]


def test_the_best_feasible_value_is_the_configuration_selection_picks():
    trials = trials_frame()
    curves = tuning_curves(trials, tolerance=0.025)
    selected = stats.select_configurations(trials, tolerance=0.025)
    for algorithm, curve in curves.groupby(ALGORITHM):
        values = configuration_values(trials, tolerance=0.025)
        chosen = set(selected.loc[selected[ALGORITHM] == algorithm, CONFIG_LABEL])
        best = values[(values[ALGORITHM] == algorithm) & values["feasible"]]
        assert set(best.nsmallest(1, VAL_OBJECTIVE)[CONFIG_LABEL]) == chosen
        assert curve["configurations"].iloc[0] == len(values[values[ALGORITHM] == algorithm])
    sgd = curves[curves[ALGORITHM] == "sgd"]
    assert list(sgd["feasible_configurations"].unique()) == [1]
    assert sgd["expected_best"].tolist() == pytest.approx([0.355, 0.355])


def test_sensitivity_lists_only_the_hyperparameters_an_algorithm_tuned():
    frame = sensitivity(trials_frame())
    assert set(frame["hyperparameter"]) == {"lr"}  # rho is fixed at 1.0
    alm = frame[frame[ALGORITHM] == "alm"].set_index("value")
    assert sorted(alm.index) == [0.01, 0.1, 1.0]
    assert alm.loc[1.0, VAL_MAX_VIOLATION] == pytest.approx(0.05)
    assert np.isinf(alm.loc[0.01, VAL_OBJECTIVE])
