"""Equality constraints h(x) = 0: free-sign multipliers reach the KKT point of small QPs.

f(x) = ½[(x₁ − 2)² + 2(x₂ − 1)²] (``test_algorithms_kkt``'s objective), started at the origin.

* ``equality``: h(x) = x₁ + x₂ − 4 = 0. The unconstrained minimum (2, 1) has x₁ + x₂ = 3 < 4,
  so as an inequality this would be inactive; as an equality, stationarity x₁ − 2 + μ = 0,
  2(x₂ − 1) + μ = 0 with x₁ + x₂ = 4 gives x* = (8/3, 4/3) and μ* = −2/3 < 0: a multiplier
  projected onto μ ≥ 0 cannot reach it.
* ``mixed``: h(x) = x₁ − x₂ − 1 = 0 and c(x) = x₁ + x₂ − 1 ≤ 0, both active at x* = (1, 0);
  stationarity −1 + μ + λ = 0, −2 − μ + λ = 0 gives μ* = −1/2 (free) and λ* = 3/2 (≥ 0).

The noisy versions add ``test_algorithms_kkt``'s zero-mean noise (σ = 0.1, seeded).
"""

from __future__ import annotations

import pytest
import torch

from ctrain_dist.algorithms import ALGORITHMS, build_algorithm
from ctrain_dist.constraints import ConstrainedProblem, build_constraints
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import parse_spec

Q = torch.tensor([1.0, 2.0], dtype=torch.float64)
CENTRE = torch.tensor([2.0, 1.0], dtype=torch.float64)
PROBLEMS = {
    # (A, b, equality mask, x*, multipliers*)
    "equality": ([[1.0, 1.0]], [4.0], [True], [8 / 3, 4 / 3], [-2 / 3]),
    "mixed": ([[1.0, -1.0], [1.0, 1.0]], [1.0, 1.0], [True, False], [1.0, 0.0], [-0.5, 1.5]),
}


def _problem(key: str, sigma: float = 0.0, seed: int = 0):
    rows, b, equality, x_star, multipliers = PROBLEMS[key]
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)
    x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    generator = torch.Generator().manual_seed(seed)

    def noise(*shape):
        return sigma * torch.randn(*shape, generator=generator, dtype=torch.float64)

    def estimate():
        f = 0.5 * (Q * (x - CENTRE) ** 2).sum()
        c = a @ x - b
        if sigma:
            f = f + noise(2) @ x
            c = c + noise(len(b), 2) @ x + noise(len(b))
        return f, c

    expected = (
        torch.tensor(x_star, dtype=torch.float64),
        torch.tensor(multipliers, dtype=torch.float64),
    )
    return x, estimate, equality, expected


# name/variant: (hyperparameters, steps, tolerance on the tail-mean x, on the final λ or None)
DETERMINISTIC = {
    "alm": ({"lr": 0.1, "dual_lr": 0.1}, 800, 1e-6, 1e-6),
    "alm/quadratic": ({"lr": 0.1, "dual_lr": 0.1, "augmentation": "quadratic"}, 800, 1e-6, 1e-6),
    "alm/none": ({"lr": 0.1, "dual_lr": 0.1, "augmentation": "none"}, 800, 1e-6, 1e-6),
    "alm/restart": ({"lr": 0.1, "dual_lr": 0.1, "restart": True}, 800, 1e-6, 1e-6),
    "ialm": ({"lr": 0.1, "penalty": 0.1, "dual_step_bound": 1.0}, 800, 1e-6, 1e-6),
    "nupi": ({"lr": 0.1, "dual_lr": 0.1}, 800, 1e-6, 1e-6),
    "ssl_alm": ({"lr": 0.1, "dual_lr": 0.1}, 800, 1e-6, 1e-6),
    "ssl_alm/smoothing": ({"lr": 0.1, "dual_lr": 0.1, "mu": 0.5, "beta": 0.2}, 800, 1e-6, 1e-6),
    # |h| ≤ 0 is met by no iterate, so the switch needs a tolerance ε > 0 (the paper's
    # ε-feasibility); the Polyak step lands on h = 0 and the objective steps chatter within
    # O(η‖∇f‖ + ε) of x* (measured 0.005 and 0.008).
    "switching_subgradient": (
        {"lr": 0.01, "step_rule": "adaptive", "lr_constraint": 1.0, "tol": 0.01},
        2000,
        2e-2,
        None,
    ),
}


def _run(key: str, problem: str, sigma: float, steps: int, hp: dict):
    x, estimate, equality, expected = _problem(problem, sigma)
    algorithm = build_algorithm(key.split("/")[0], [x], len(equality), hp, equality=equality)
    tail = []
    for k in range(steps):
        algorithm.step(estimate)
        if k >= steps // 2:
            tail.append(x.detach().clone())
    return algorithm, torch.stack(tail).mean(0), expected


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("key", sorted(DETERMINISTIC))
def test_deterministic_equality_problem_reaches_the_kkt_point(key, problem):
    hp, steps, x_tol, lambda_tol = DETERMINISTIC[key]
    algorithm, x_mean, (x_star, multipliers) = _run(key, problem, 0.0, steps, hp)
    assert torch.linalg.norm(x_mean - x_star) < x_tol
    if lambda_tol is not None:
        assert (algorithm.multipliers() - multipliers).abs().max() < lambda_tol


# Measured on oracle seed 0 (x; λ): alm 0.006; 0.012, ialm 0.006; 0.011, ssl_alm 0.005; 0.008.
NOISY = {
    "alm": ({"lr": 0.1, "dual_lr": 0.1}, 3000, 3e-2, 0.1),
    "ssl_alm": ({"lr": 0.1, "dual_lr": 0.1}, 3000, 3e-2, 0.1),
    "ialm": ({"lr": 0.1, "penalty": 0.1, "dual_step_bound": 1.0}, 3000, 3e-2, 0.1),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(NOISY))
def test_noisy_mixed_problem_converges_in_expectation(key):
    hp, steps, x_tol, lambda_tol = NOISY[key]
    algorithm, x_mean, (x_star, multipliers) = _run(key, "mixed", 0.1, steps, hp)
    assert torch.linalg.norm(x_mean - x_star) < x_tol
    assert (algorithm.multipliers() - multipliers).abs().max() < lambda_tol


def test_an_inequality_multiplier_cannot_reach_the_negative_equality_multiplier():
    """The same QP with h treated as h ≤ 0: the multiplier stays at 0 and x at the
    unconstrained minimum, which is why the sign must be free."""
    x, estimate, _, _ = _problem("equality")
    algorithm = build_algorithm("alm", [x], 1, {"lr": 0.1, "dual_lr": 0.1})
    for _ in range(1500):
        algorithm.step(estimate)
    assert algorithm.multipliers().item() == 0.0
    torch.testing.assert_close(x.detach(), CENTRE, rtol=0, atol=1e-6)


def test_equality_multipliers_are_bounded_by_the_dual_bound_in_both_signs():
    x, estimate, equality, _ = _problem("equality")
    settings = {"dual_lr": 100.0, "dual_bound": 3.0}
    algorithm = build_algorithm("alm", [x], 1, settings, equality=equality)
    algorithm.step(estimate)  # h(0) = −4: one step of −400 clamps to −Λ
    assert algorithm.multipliers().item() == -3.0


@pytest.mark.parametrize(
    "name",
    sorted(n for n, cls in ALGORITHMS.items() if cls.constrained and not cls.takes_equalities),
)
def test_methods_without_equality_support_refuse_equalities(name):
    x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="inequality constraints only"):
        build_algorithm(name, [x], 1, {}, equality=[True])


# --- through the spec -------------------------------------------------------------------------

_SPEC = {
    "name": "equality",
    "data": {"dataset": "adult", "sensitive": "sex"},
    "constraints": [
        {"kind": "rate_bound", "bound": 0.3, "equality": True, "options": {"group": 0}},
        {"kind": "loss_gap", "bound": 0.05},
    ],
    "algorithms": [{"name": "alm"}, {"name": "sgd"}],
    "seeds": 1,
}


def test_an_equality_reaches_the_algorithm_and_feasibility_reads_its_size():
    spec = parse_spec(_SPEC)
    constraints = build_constraints(spec.constraints, num_groups=2)
    problem = ConstrainedProblem(constraints)
    assert problem.equality == [True, False, False]  # the rate, then the gap's two values
    values = torch.tensor([-0.2, -0.1, 0.03])
    assert problem.violations(values).tolist() == pytest.approx([0.2, -0.1, 0.03])
    x = torch.nn.Parameter(torch.zeros(2))
    algorithm = build_algorithm("alm", [x], 3, {}, equality=problem.equality)
    assert algorithm.equality.tolist() == [True, False, False]
    assert algorithm.duals.lower.tolist() == [-100.0, 0.0, 0.0]  # free in [−Λ, Λ]


def test_inequality_specs_keep_their_trial_ids():
    """``equality`` is dumped only when set: the hash of an inequality-only trial is unchanged."""
    spec = parse_spec({**_SPEC, "constraints": [{"kind": "loss_gap", "bound": 0.05}]})
    assert "equality" not in spec.trials()[0].model_dump(mode="json")["constraints"][0]
    assert "equality" in parse_spec(_SPEC).trials()[0].model_dump(mode="json")["constraints"][0]


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"constraints": [{"kind": "loss_gap", "bound": 0.0, "equality": True}]}, "two-sided"),
        (
            {"algorithms": [{"name": "classical_pbm"}]},
            "classical_pbm takes inequality constraints only",
        ),
    ],
)
def test_a_spec_that_cannot_hold_an_equality_is_refused_before_training(change, refused):
    with pytest.raises(SpecError, match=refused):
        parse_spec({**_SPEC, **change})
