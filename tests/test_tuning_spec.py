"""Search spaces and the tuning block: validated up front, equal budgets, draws fixed by a seed."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from ctrain_dist.analysis.stats import select_configurations
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import TrialSpec, load_spec, parse_spec
from ctrain_dist.store.schema import (
    ALGORITHM,
    CONFIG_LABEL,
    MAX_VIOLATION,
    OBJECTIVE,
    STATUS,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    VAL,
    final_column,
)
from ctrain_dist.tuning import configuration_score

SWEEPS = Path(__file__).parents[1] / "sweeps"
LR = {"loguniform": [1e-4, 1e-1]}


def spec_with(**fields: Any) -> dict[str, Any]:
    raw = {
        "name": "tune",
        "constraints": [{"kind": "loss_gap", "bound": 0.05}],
        "training": {"budget": {"steps": 100}, "eval_every": 50},
        "algorithms": [
            {"name": "sgd", "params": {"lr": LR}},
            {"name": "alm", "params": {"lr": LR}},
        ],
        "tuning": {"budget": {"configurations": 4}, "seeds_per_configuration": 2},
    }
    raw.update(fields)
    return raw


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("space", "field", "says"),
    [
        ({"loguniform": [0, 1]}, "lr.loguniform", "low > 0"),
        ({"loguniform": [-1e-3, 1]}, "lr.loguniform", "low > 0"),
        ({"uniform": [0.2, 0.1]}, "lr.uniform", "below high"),
        ({"uniform": [0.1, 0.1]}, "lr.uniform", "below high"),
        ({"uniform": [0.1]}, "lr.uniform", "[low, high]"),
        ({"uniform": ["a", 1]}, "lr.uniform", "numbers"),
        ({"loguniform": [1e-4, ".inf"]}, "lr.loguniform", "numbers"),
        ({"choice": [0.1, [0.2]]}, "lr.choice", "plain values"),
        ({"choice": [0.1, 0.1]}, "lr.choice", "twice"),
        ({"choice": []}, "lr.choice", "give a list"),
        ({"loguniform": [1e-4, 1e-1], "uniform": [0, 1]}, "lr", "one key"),
    ],
)
def test_a_malformed_space_is_refused_naming_its_field(space, field, says):
    raw = spec_with(algorithms=[{"name": "sgd", "params": {"lr": space}}])
    message = refusal(raw)
    assert message.startswith(f"algorithms.0.params.{field}") and says in message


def test_an_infinite_bound_is_refused_by_name():
    raw = spec_with(
        algorithms=[{"name": "sgd", "params": {"lr": {"loguniform": [1e-4, math.inf]}}}]
    )
    assert refusal(raw).startswith("algorithms.0.params.lr.loguniform.1")


def test_randint_takes_integers_and_choices_take_one_type():
    raw = spec_with(algorithms=[{"name": "sgd", "params": {"lr": {"randint": [1.5, 3]}}}])
    assert "integers" in refusal(raw)
    raw = spec_with(algorithms=[{"name": "alm", "params": {"primal": {"choice": ["sgd", True]}}}])
    assert "one type" in refusal(raw)


def test_a_space_bound_outside_the_algorithms_range_is_named():
    raw = spec_with(algorithms=[{"name": "sgd", "params": {"lr": {"uniform": [-1.0, 0.1]}}}])
    assert refusal(raw).startswith("algorithms.0.params.lr")


def test_a_choice_of_the_wrong_type_is_named():
    raw = spec_with(
        algorithms=[{"name": "alm", "params": {"primal": {"choice": ["sgd", "lbfgs"]}}}]
    )
    message = refusal(raw)
    assert message.startswith("algorithms.0.params.primal") and "lbfgs" in message


def test_the_primal_optimisers_hyperparameters_can_be_searched():
    params = {"lr": LR, "primal": "adam", "beta1": {"uniform": [0.5, 0.99]}}
    spec = parse_spec(spec_with(algorithms=[{"name": "alm", "params": params}]))
    betas = {t.hyperparameters["beta1"] for t in spec.trials()}
    assert len(betas) == 4 and all(0.5 <= b <= 0.99 for b in betas)


def test_a_space_without_a_tuning_block_is_refused():
    raw = spec_with()
    del raw["tuning"]
    assert refusal(raw).startswith("algorithms.0.params.lr: a search space needs a tuning block")


def test_every_shipped_spec_still_parses():
    for path in sorted(SWEEPS.glob("*.yaml")):
        if "cluster" not in path.name and "acs" not in path.name:
            load_spec(path)


def test_a_spec_without_tuning_keeps_its_trial_ids():
    """Plain values and lists mean what they did: the ids are those of the grid built by hand."""
    raw = spec_with(
        algorithms=[{"name": "sgd", "params": {"lr": [0.01, 0.1]}}], seeds=2, tuning=None
    )
    del raw["tuning"]
    spec = parse_spec(raw)
    shared = spec.model_dump(
        mode="json", include={"data", "split", "model", "constraints", "training"}
    )
    by_hand = [
        TrialSpec(sweep_id="tune", algorithm="sgd", hyperparameters={"lr": lr}, seed=s, **shared)
        for lr in (0.01, 0.1)
        for s in (0, 1)
    ]
    assert [t.trial_id for t in spec.trials()] == [t.trial_id for t in by_hand]


def test_random_search_draws_the_same_configurations_from_the_same_seed():
    ids = [t.trial_id for t in parse_spec(spec_with()).trials()]
    assert ids == [t.trial_id for t in parse_spec(spec_with()).trials()]
    assert len(ids) == 2 * 4 * 2 and len(set(ids)) == len(ids)
    other = spec_with()
    other["tuning"]["seed"] = 1
    assert set(ids).isdisjoint(t.trial_id for t in parse_spec(other).trials())


def test_adding_an_algorithm_changes_no_other_algorithms_draws():
    before = {t.trial_id for t in parse_spec(spec_with()).trials() if t.algorithm == "sgd"}
    raw = spec_with()
    raw["algorithms"].append({"name": "adam", "params": {"lr": LR}})
    after = {t.trial_id for t in parse_spec(raw).trials() if t.algorithm == "sgd"}
    assert before == after


def test_drawn_values_are_distinct_in_bounds_and_read_back_exactly():
    spec = parse_spec(spec_with())
    values = [t.hyperparameters["lr"] for t in spec.trials() if t.seed == 0]
    assert all(1e-4 <= v <= 1e-1 for v in values)
    assert all(float(f"{v:g}") == v for v in values)  # the label is the value
    assert len({t.config_label for t in spec.trials()}) == 8


def test_a_small_finite_space_is_sampled_without_repeats():
    params = {"lr": {"choice": [0.01, 0.02, 0.03, 0.04]}}
    spec = parse_spec(spec_with(algorithms=[{"name": "sgd", "params": params}]))
    assert sorted({t.hyperparameters["lr"] for t in spec.trials()}) == [0.01, 0.02, 0.03, 0.04]


# --- equal budgets --------------------------------------------------------------------------


def test_grids_of_unequal_size_are_refused_naming_the_budgets():
    raw = spec_with(
        algorithms=[
            {"name": "sgd", "params": {"lr": [0.01, 0.1]}},
            {"name": "alm", "params": {"lr": [0.01, 0.05, 0.1]}},
        ],
        tuning={"budget": {"configurations": 2}, "search": "grid"},
    )
    message = refusal(raw)
    assert message.startswith("algorithms.1.params") and "'alm': 3" in message


def test_a_grid_counts_every_entry_of_an_algorithm():
    raw = spec_with(
        algorithms=[
            {"name": "alm", "params": {"lr": [0.01, 0.1], "primal": "sgd"}},
            {"name": "alm", "params": {"lr": 0.01, "primal": "adam"}},
            {"name": "sgd", "params": {"lr": {"choice": [0.01, 0.02, 0.1]}}},
        ],
        tuning={"budget": {"configurations": 3}, "search": "grid"},
    )
    spec = parse_spec(raw)
    assert len(spec.trials()) == 2 * 3 * 1  # two algorithms × three configurations × one seed


def test_a_budget_inside_an_algorithm_is_refused():
    raw = spec_with()
    raw["algorithms"][1]["budget"] = {"configurations": 8}
    message = refusal(raw)
    assert message.startswith("algorithms.1.budget") and "same for every algorithm" in message


def test_seeds_beside_tuning_are_refused():
    assert refusal(spec_with(seeds=3)).startswith("seeds: under tuning")


def test_an_algorithm_listed_twice_under_random_search_is_refused():
    raw = spec_with()
    raw["algorithms"].append({"name": "sgd", "params": {"lr": LR}})
    assert refusal(raw).startswith("algorithms.2.name: sgd is listed twice")


def test_a_space_too_small_for_the_budget_is_refused():
    raw = spec_with(algorithms=[{"name": "sgd", "params": {"lr": {"choice": [0.01, 0.1]}}}])
    assert "fewer than the 4" in refusal(raw)


def test_a_grid_list_under_random_search_is_refused_with_the_fix():
    raw = spec_with(algorithms=[{"name": "sgd", "params": {"lr": [0.01, 0.1]}}])
    assert "{choice: [...]}" in refusal(raw)


def test_a_budget_in_steps_gives_every_algorithm_the_same_configurations():
    raw = spec_with()
    raw["tuning"]["budget"] = {"steps": 600}  # 600 / (100 steps × 2 seeds) = 3
    spec = parse_spec(raw)
    for name in ("sgd", "alm"):
        trials = [t for t in spec.trials() if t.algorithm == name]
        assert sum(t.training.budget.steps for t in trials) == 600
    raw["tuning"]["budget"] = {"steps": 500}
    assert refusal(raw).startswith("tuning.budget.steps: 500 is not a whole number")
    raw["tuning"]["budget"] = {"seconds": 60}
    assert refusal(raw).startswith("tuning.budget.seconds: counts training seconds")


def test_two_budgets_at_once_are_refused():
    raw = spec_with()
    raw["tuning"]["budget"] = {"configurations": 4, "steps": 800}
    assert refusal(raw).startswith("tuning.budget")


def test_asha_needs_each_configuration_in_one_trial_and_a_grace_period_below_the_budget():
    raw = spec_with()
    raw["tuning"]["scheduler"] = {"asha": {"grace_period": 50}}
    assert refusal(raw).startswith("seeds_per_trial: ASHA judges a configuration")
    raw["seeds_per_trial"] = 2
    parse_spec(raw)
    raw["tuning"]["scheduler"]["asha"]["grace_period"] = 100
    assert refusal(raw).startswith("tuning.scheduler.asha.grace_period")


def test_optuna_fixes_no_configuration_up_front():
    raw = spec_with()
    raw["tuning"]["search"] = "optuna"
    assert parse_spec(raw).trials() == []


# --- the score is selection's rule -------------------------------------------------------------


def _trials_frame(configurations: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    """Trials rows; a seed given as (inf, inf) diverged (its row's values are not read)."""
    rows = [
        {
            ALGORITHM: "alm",
            CONFIG_LABEL: label,
            STATUS: STATUS_DIVERGED if math.isinf(objective) else STATUS_FINISHED,
            final_column(VAL, OBJECTIVE): 0.1 if math.isinf(objective) else objective,
            final_column(VAL, MAX_VIOLATION): 0.0 if math.isinf(objective) else violation,
        }
        for label, seeds in configurations.items()
        for objective, violation in seeds
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_the_lowest_score_is_the_configuration_selection_picks(tolerance):
    rng = random.Random(7)
    for _ in range(60):
        configurations = {
            f"c{i}": [
                (rng.uniform(0.2, 0.9), max(0.0, rng.uniform(-0.03, 0.05)))
                if rng.random() > 0.1
                else (math.inf, math.inf)
                for _ in range(rng.choice([1, 2, 3]))
            ]
            for i in range(rng.randint(2, 6))
        }
        picked = set(
            select_configurations(_trials_frame(configurations), tolerance=tolerance)[CONFIG_LABEL]
        )
        scores = {
            label: configuration_score([s[0] for s in seeds], [s[1] for s in seeds], tolerance)
            for label, seeds in configurations.items()
        }
        best = min(scores.values())
        assert picked == {min(label for label, s in scores.items() if s == best)}


def test_every_feasible_score_is_below_every_infeasible_one():
    feasible = [configuration_score([f], [0.0], 0.0) for f in (0.0, 1.0, 1e6)]
    infeasible = [configuration_score([f], [v], 0.0) for f in (0.0, 1e-9) for v in (1e-6, 1e6)]
    diverged = configuration_score([math.inf], [math.inf], 0.0)
    assert max(feasible) < min(infeasible) and max(infeasible) < diverged


def test_the_tuning_block_is_not_shared_between_parses():
    raw = spec_with()
    kept = copy.deepcopy(raw)
    parse_spec(raw)
    assert raw == kept


@pytest.mark.parametrize(
    ("tuning", "field"),
    [
        ({"search": "optuna"}, "tuning.search"),
        ({"scheduler": {"asha": {"grace_period": 50}}}, "tuning.scheduler"),
    ],
)
def test_ctrain_train_refuses_what_only_the_ray_driver_runs(tmp_path, capsys, tuning, field):
    from ctrain_dist.cli.main import main

    raw = spec_with()
    raw["tuning"].update(tuning)
    raw["seeds_per_trial"] = 2
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--store", str(tmp_path / "store")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ctrain: error: {field}: ") and "\n" not in error
    assert not (tmp_path / "store" / "trials").exists()
