"""Constraint groups with their own dual step and bound: a spec constraint's ``dual_lr`` and
``dual_bound`` replace the algorithm's for that constraint's values.

The problem has two constraints, c₀ = x₁ + x₂ − 1 and c₁ = x₁ − x₂ − 0.5, both violated at
the start (3, 1). One step's dual update reads c(x⁰) in alm, ssl_alm and νPI, so after it each
value's multiplier is the one a run with that value's step size gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_algorithms import _host_counters, _HostSyncDetector

from ctrain_dist.algorithms import ALGORITHMS, build_algorithm
from ctrain_dist.data.load import load_data
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import load_spec
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
A = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
B = torch.tensor([1.0, 0.5], dtype=torch.float64)
STEPPED = sorted(n for n, c in ALGORITHMS.items() if "dual_lr" in c.dual_overrides)


def _run(name: str, settings: dict, steps: int = 1, seeds: int | None = None, **overrides):
    start = torch.tensor([3.0, 1.0], dtype=torch.float64)
    x = torch.nn.Parameter(start if seeds is None else start + torch.arange(seeds)[:, None])

    def estimate():
        return ((x - 2) ** 2).sum(-1), x @ A.T - B

    algorithm = build_algorithm(name, [x], 2, settings, seeds, **overrides)
    for _ in range(steps):
        algorithm.step(estimate)
    return algorithm, x


@pytest.mark.parametrize("name", STEPPED)
def test_a_constraints_own_dual_step_moves_its_multiplier_alone(name):
    assert STEPPED == ["alm", "nupi", "ssl_alm"]
    overridden, _ = _run(name, {"dual_lr": 0.1}, dual_lrs=[None, 0.4])
    slow, _ = _run(name, {"dual_lr": 0.1})
    fast, _ = _run(name, {"dual_lr": 0.4})
    duals = overridden.multipliers()
    assert duals[0] == slow.multipliers()[0] and duals[1] == fast.multipliers()[1]
    assert duals[1] != slow.multipliers()[1]


@pytest.mark.parametrize("name", ["alm", "ialm", "nupi", "ssl_alm"])
def test_a_constraints_own_bound_caps_its_multiplier(name):
    settings = {"dual_bound": 50.0, **({} if name == "ialm" else {"dual_lr": 100.0})}
    if name == "ialm":
        settings.update(penalty=100.0, dual_step_bound=1000.0)
    algorithm, _ = _run(name, settings, dual_bounds=[None, 3.0])
    duals = algorithm.multipliers()
    assert duals[1] == 3.0 and 3.0 < duals[0] <= 50.0


@pytest.mark.parametrize("name", ["classical_pbm", "spbm"])
def test_a_constraints_own_bound_caps_a_penalty_barrier_multiplier(name):
    """Both constraints stay violated (a primal step too small to move x): the multipliers
    grow, one capped at its own bound, the other further, at most ``max_multiplier``."""
    settings = {"max_multiplier": 50.0, "init_multiplier": 1.0, "lr": 1e-12}
    if name == "classical_pbm":
        settings["inner_steps"] = 1
    algorithm, _ = _run(name, settings, steps=200, dual_bounds=[None, 3.0])
    duals = algorithm.multipliers()
    assert duals[1] == 3.0 and 3.0 < duals[0] <= 50.0


def test_a_bound_below_a_penalty_barrier_methods_initial_multiplier_is_refused():
    constraints = [{"kind": "loss_gap", "bound": 0.05, "dual_bound": 0.5}]
    with pytest.raises(
        SpecError, match=r"constraints\.0\.dual_bound: 0\.5 lies below classical_pbm"
    ) as e:
        _spec(constraints, "[{name: classical_pbm, params: {init_multiplier: 1.0}}]")
    assert "\n" not in str(e.value)
    _spec(constraints, "[{name: spbm}, {name: alm}]")  # spbm starts at its floor, 1e-9


def test_overrides_on_packed_members_with_their_own_dual_lr_step_as_alone():
    members = [{"dual_lr": lr, "lr": 0.05} for lr in (0.05, 0.1, 0.2)]
    overrides = {"dual_lrs": [None, 0.3], "dual_bounds": [2.0, None]}
    packed, x = _run("alm", members, steps=20, seeds=3, **overrides)
    for member, settings in enumerate(members):  # alone, from the member's own start
        start = torch.tensor([3.0, 1.0], dtype=torch.float64) + member
        y = torch.nn.Parameter(start)

        def estimate(y=y):
            return ((y - 2) ** 2).sum(-1), y @ A.T - B

        alone = build_algorithm("alm", [y], 2, settings, **overrides)
        for _ in range(20):
            alone.step(estimate)
        torch.testing.assert_close(x[member], y, rtol=0, atol=1e-12)
        torch.testing.assert_close(
            packed.multipliers()[member], alone.multipliers(), rtol=0, atol=1e-12
        )
    assert (packed.multipliers()[:, 0] <= 2.0).all()


@pytest.mark.parametrize(
    ("name", "setting"),
    [("spbm", "dual_lrs"), ("ialm", "dual_lrs"), ("switching_subgradient", "dual_bounds")],
)
def test_an_algorithm_without_the_dual_step_or_bound_refuses_it(name, setting):
    x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=f"{name} has no per-constraint"):
        build_algorithm(name, [x], 2, {}, **{setting: [0.1, None]})


def _spec(constraints: list[dict], algorithms: str = "[{name: alm}, {name: sgd}]"):
    return load_spec(
        QUICKSTART,
        [f"constraints={json.dumps(constraints)}", f"algorithms={algorithms}", "seeds=[1]"],
    )


def test_a_spec_constraints_dual_settings_reach_its_values_and_no_other():
    spec = _spec(
        [
            {"kind": "positive_rate_gap", "bound": 0.05, "dual_lr": 0.3},
            {"kind": "loss_gap", "bound": 0.05, "dual_bound": 4.0},
        ]
    )
    trial = spec.trials()[0]
    data = load_data(trial.data, trial.split)
    learner = ModelLearner(trial, data, Workers(), torch.device("cpu"))
    values = learner.problem.constraints[0].num_values
    total = learner.problem.num_constraints
    assert values >= 1 and total > values
    mask, lrs = learner.algorithm._overrides["dual_lr"]
    assert mask.tolist() == [True] * values + [False] * (total - values)
    assert torch.equal(lrs[:values], torch.full((values,), 0.3, dtype=lrs.dtype))  # float32
    assert learner.algorithm.duals.upper.tolist() == [100.0] * values + [4.0] * (total - values)


def test_specs_without_dual_settings_keep_their_trial_ids():
    plain = _spec([{"kind": "loss_gap", "bound": 0.05}]).trials()[0]
    dumped = plain.model_dump(mode="json")["constraints"][0]
    assert "dual_lr" not in dumped and "dual_bound" not in dumped
    own = _spec([{"kind": "loss_gap", "bound": 0.05, "dual_lr": 0.2}]).trials()[0]
    assert own.model_dump(mode="json")["constraints"][0]["dual_lr"] == 0.2
    assert own.trial_id != plain.trial_id


@pytest.mark.parametrize(
    ("setting", "algorithm"),
    [("dual_lr", "switching_subgradient"), ("dual_lr", "ialm"), ("dual_lr", "spbm")],
)
def test_a_dual_setting_for_an_algorithm_without_it_is_refused_naming_the_field(setting, algorithm):
    constraints = [{"kind": "loss_gap", "bound": 0.05, setting: 0.5}]
    with pytest.raises(SpecError, match=rf"constraints\[0\]\.{setting}: {algorithm} has no") as e:
        _spec(constraints, f"[{{name: {algorithm}}}, {{name: sgd}}]")
    assert "\n" not in str(e.value)


def test_ctrain_algorithms_lists_what_each_method_reads_from_a_constraint(capsys):
    from ctrain_dist.cli.main import main

    assert main(["algorithms"]) == 0
    listed = capsys.readouterr().out
    assert "alm (constrained)" in listed
    assert "    constraints may set: equality, dual_bound, dual_lr\n" in listed
    assert "    constraints may set: equality, dual_bound\n" in listed  # ialm
    assert "    output = 'last'" in listed  # switching_subgradient's output rule


@pytest.mark.parametrize("name", ["alm", "ialm", "nupi", "ssl_alm"])
def test_per_constraint_settings_read_nothing_on_the_host(name):
    own = {"dual_bounds": [None, 3.0]}
    if name != "ialm":
        own["dual_lrs"] = [0.4, None]
    algorithm, x = _run(name, {}, **own)

    def estimate():
        return ((x - 2) ** 2).sum(-1), x @ A.T - B

    with _HostSyncDetector(_host_counters(algorithm)) as detector:
        for _ in range(3):
            algorithm.step(estimate)
    assert detector.syncs == []
