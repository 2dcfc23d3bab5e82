"""Each algorithm's step on tiny deterministic problems with known answers, and exact resume.

The problem: minimise (x - 2)^2 subject to x - 1 <= 0; the solution is x* = 1 with multiplier
λ* = 2 (stationarity: 2(x* - 2) + λ* = 0).
"""

import copy

import pytest
import torch

from ctrain_dist.algorithms import ALGORITHMS, build_algorithm


def _problem(start: float = 0.0):
    x = torch.nn.Parameter(torch.tensor([start], dtype=torch.float64))

    def estimate():
        return ((x - 2) ** 2).sum(), x - 1

    return x, estimate


def test_sgd_step_is_a_gradient_step_on_the_objective():
    x, estimate = _problem()
    build_algorithm("sgd", [x], 1, {"lr": 0.1}).step(estimate)
    assert x.item() == pytest.approx(0.0 - 0.1 * 2 * (0.0 - 2))


def test_adam_ignores_the_constraint_and_reaches_the_unconstrained_minimum():
    x, estimate = _problem()
    algorithm = build_algorithm("adam", [x], 1, {"lr": 0.05})
    for _ in range(2000):
        algorithm.step(estimate)
    assert x.item() == pytest.approx(2.0, abs=1e-2)


def test_ssl_alm_converges_to_the_constrained_solution_and_its_multiplier():
    x, estimate = _problem()
    algorithm = build_algorithm("ssl_alm", [x], 1, {"lr": 0.05, "dual_lr": 0.05})
    for _ in range(3000):
        algorithm.step(estimate)
    assert x.item() == pytest.approx(1.0, abs=1e-3)
    assert algorithm.multipliers().item() == pytest.approx(2.0, abs=1e-2)


def test_ssl_alm_keeps_multipliers_within_the_dual_bound():
    x, estimate = _problem(start=50.0)
    algorithm = build_algorithm("ssl_alm", [x], 1, {"dual_lr": 10.0, "dual_bound": 3.0})
    algorithm.step(estimate)
    assert 0.0 <= algorithm.multipliers().item() <= 3.0


def test_switching_subgradient_takes_a_constraint_step_when_infeasible():
    x, estimate = _problem(start=3.0)
    algorithm = build_algorithm("switching_subgradient", [x], 1, {"lr": 0.1, "lr_constraint": 0.5})
    algorithm.step(estimate)
    assert x.item() == pytest.approx(3.0 - 0.5 * 1.0)


def test_switching_subgradient_takes_an_objective_step_when_feasible():
    x, estimate = _problem(start=0.0)
    algorithm = build_algorithm("switching_subgradient", [x], 1, {"lr": 0.1})
    algorithm.step(estimate)
    assert x.item() == pytest.approx(0.0 - 0.1 * 2 * (0.0 - 2))


def test_switching_subgradient_with_diminishing_steps_approaches_the_boundary():
    x, estimate = _problem()
    algorithm = build_algorithm(
        "switching_subgradient", [x], 1, {"lr": 0.1, "step_rule": "diminishing"}
    )
    for _ in range(5000):
        algorithm.step(estimate)
    assert x.item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_state_dict_resumes_the_same_trajectory(name):
    x, estimate = _problem()
    algorithm = build_algorithm(name, [x], 1, {})
    for _ in range(7):
        algorithm.step(estimate)
    saved_x, saved_state = x.detach().clone(), copy.deepcopy(algorithm.state_dict())
    for _ in range(5):
        algorithm.step(estimate)
    expected = x.item()

    y, other_estimate = _problem()
    with torch.no_grad():
        y.copy_(saved_x)
    resumed = build_algorithm(name, [y], 1, {})
    resumed.load_state_dict(saved_state)
    for _ in range(5):
        resumed.step(other_estimate)
    assert y.item() == expected
