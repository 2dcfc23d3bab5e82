"""The equal-budget Optuna searcher, driven as Tune drives it (suggest, then complete).

Real ``OptunaSearch`` instances behind it, no Ray cluster: each test plays Tune's part and
checks what the searcher hands out, as a resumed driver would see it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ray.tune.search import Searcher

from ctrain_dist.launch.score import FINALS, SCORE
from ctrain_dist.launch.search import Configuration, EqualBudgetSearch
from ctrain_dist.spec import SweepSpec, TrialSpec, parse_spec
from ctrain_dist.store.schema import (
    MAX_VIOLATION,
    OBJECTIVE,
    STATUS,
    STATUS_FINISHED,
    VAL,
    final_column,
)
from ctrain_dist.tuning import configuration_key


def optuna_spec(lr: dict[str, Any], configurations: int, seeds: int = 1) -> SweepSpec:
    return parse_spec(
        {
            "name": "search",
            "constraints": [{"kind": "loss_gap", "bound": 0.05}],
            "training": {"budget": {"steps": 100}, "eval_every": 50},
            "algorithms": [
                {"name": "sgd", "params": {"lr": lr}},
                {"name": "alm", "params": {"lr": lr, "dual_lr": 0.1}},
            ],
            "tuning": {
                "budget": {"configurations": configurations},
                "search": "optuna",
                "seeds_per_configuration": seeds,
            },
            "seeds_per_trial": seeds,
        }
    )


def drive(search: EqualBudgetSearch, limit: int = 100) -> list[list[TrialSpec]]:
    """Tune's loop, one trial at a time: every pack handed out, until FINISHED."""
    packs = []
    for number in range(limit):
        suggestion = search.suggest(f"t{number}")
        if suggestion is Searcher.FINISHED:
            return packs
        pack = [TrialSpec.model_validate(t) for t in suggestion["pack"]]
        lr = pack[0].hyperparameters["lr"]
        finals = [[abs(lr - 0.03), 0.0] for _ in pack]  # best near 0.03, all feasible
        search.on_trial_complete(f"t{number}", {SCORE: 0.0, FINALS: json.dumps(finals)})
        packs.append(pack)
    pytest.fail("the searcher never said FINISHED")


def keys(packs: list[list[TrialSpec]]) -> list[str]:
    return [configuration_key(p[0].algorithm, p[0].hyperparameters) for p in packs]


def finished(spec: SweepSpec, algorithm: str, hp: dict[str, Any], seeds=None) -> Configuration:
    """A configuration as the store would show it, its listed seeds finished."""
    trials = spec.configuration_trials(algorithm, {**spec_fixed(spec, algorithm), **hp})
    rows = {
        t.trial_id: {
            STATUS: STATUS_FINISHED,
            final_column(VAL, OBJECTIVE): 0.5,
            final_column(VAL, MAX_VIOLATION): 0.0,
        }
        for t in trials
        if seeds is None or t.seed in seeds
    }
    return Configuration(trials[0].hyperparameters, trials, rows)


def spec_fixed(spec: SweepSpec, algorithm: str) -> dict[str, Any]:
    params = next(a.params for a in spec.algorithms if a.name == algorithm)
    return {k: v for k, v in params.items() if not isinstance(v, dict)}


def test_every_algorithm_gets_exactly_its_budget_of_distinct_configurations():
    spec = optuna_spec({"loguniform": [1e-3, 0.3]}, configurations=5)
    packs = drive(EqualBudgetSearch(spec, {"sgd": [], "alm": []}))
    by_algorithm = {name: [p for p in packs if p[0].algorithm == name] for name in ("sgd", "alm")}
    assert [len(v) for v in by_algorithm.values()] == [5, 5]
    assert len(set(keys(packs))) == 10


def test_a_small_space_is_searched_without_repeating_a_configuration():
    """TPE suggests repeats in a space of four values; each is told its score and asked again."""
    values = [0.01, 0.02, 0.03, 0.05]
    spec = optuna_spec({"choice": values}, configurations=4)
    packs = drive(EqualBudgetSearch(spec, {"sgd": [], "alm": []}))
    assert len(packs) == 8 and len(set(keys(packs))) == 8
    for name in ("sgd", "alm"):
        tried = sorted(p[0].hyperparameters["lr"] for p in packs if p[0].algorithm == name)
        assert tried == values


def test_seeds_of_a_configuration_come_as_one_pack():
    spec = optuna_spec({"loguniform": [1e-3, 0.3]}, configurations=2, seeds=3)
    packs = drive(EqualBudgetSearch(spec, {"sgd": [], "alm": []}))
    assert [sorted(t.seed for t in pack) for pack in packs] == [[0, 1, 2]] * 4


def test_a_rebuilt_searcher_asks_only_for_the_rest_and_never_for_a_stored_configuration():
    spec = optuna_spec({"choice": [0.01, 0.02, 0.03, 0.05]}, configurations=4)
    stored = {
        "sgd": [finished(spec, "sgd", {"lr": 0.01}), finished(spec, "sgd", {"lr": 0.03})],
        "alm": [finished(spec, "alm", {"lr": 0.02})],
    }
    search = EqualBudgetSearch(spec, stored)
    assert search.remaining == {"sgd": 2, "alm": 3}
    packs = drive(search)
    new = {
        name: {p[0].hyperparameters["lr"] for p in packs if p[0].algorithm == name}
        for name in ("sgd", "alm")
    }
    assert new == {"sgd": {0.02, 0.05}, "alm": {0.01, 0.03, 0.05}}


def test_a_configuration_cut_short_runs_its_missing_seeds_first_within_the_budget():
    spec = optuna_spec({"loguniform": [1e-3, 0.3]}, configurations=2, seeds=2)
    half = finished(spec, "sgd", {"lr": 0.01}, seeds={0})
    search = EqualBudgetSearch(spec, {"sgd": [half], "alm": []})
    first = search.suggest("t0")["pack"]
    assert [(t["hyperparameters"]["lr"], t["seed"]) for t in first] == [(0.01, 1)]
    search.on_trial_complete("t0", {SCORE: 0.0, FINALS: "[[0.5, 0.0]]"})
    packs = drive(search)
    assert sum(p[0].algorithm == "sgd" for p in packs) == 1  # 1 resumed + 1 new = budget 2
    assert sum(p[0].algorithm == "alm" for p in packs) == 2
