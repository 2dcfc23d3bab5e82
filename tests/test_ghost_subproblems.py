"""Ghost's closed-form subproblems equal HiGHS's LP and OSQP's QP on random instances."""

from __future__ import annotations

import numpy as np
import osqp
import pytest
from scipy import sparse
from scipy.optimize import linprog

from ctrain_dist.algorithms.ghost_subproblems import feasibility_value, qp_without_box

N = 60


def _highs(c: np.ndarray, jacobian: np.ndarray, rho: float) -> float:
    m, n = jacobian.shape
    result = linprog(
        c=np.concatenate([[1.0], np.zeros(n)]),
        A_ub=np.hstack([-np.ones((m, 1)), jacobian]),
        b_ub=-c,
        bounds=[(0.0, None)] + [(-rho, rho)] * n,
        method="highs",
    )
    assert result.status == 0
    return float(result.fun)


def _osqp(gradient, jacobian, upper, tau, beta) -> np.ndarray:
    n = gradient.size
    solver = osqp.OSQP()
    solver.setup(
        P=sparse.identity(n, format="csc") * tau,
        q=gradient,
        A=sparse.vstack([sparse.csc_matrix(jacobian), sparse.identity(n)], "csc"),
        l=np.concatenate([np.full(upper.size, -np.inf), np.full(n, -beta)]),
        u=np.concatenate([upper, np.full(n, beta)]),
        eps_abs=1e-10,
        eps_rel=1e-10,
        max_iter=200_000,
        polishing=True,
        verbose=False,
    )
    solution = solver.solve(raise_error=False)
    assert solution.info.status_val == osqp.SolverStatus.OSQP_SOLVED
    return solution.x


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_feasibility_value_is_the_lps_optimum(m, seed):
    generator = np.random.default_rng(seed)
    jacobian = generator.normal(size=(m, N)) * generator.uniform(0.01, 0.2)
    jacobian[:, :5] = 0.0  # coordinates no constraint reads
    c = generator.normal(size=m) * (0.5 if seed % 2 else 5.0)  # reachable or not within ρ
    assert feasibility_value(c, jacobian, 0.8) == pytest.approx(_highs(c, jacobian, 0.8), abs=1e-8)


def test_feasibility_value_leaves_three_values_to_the_lp():
    assert feasibility_value(np.ones(3), np.ones((3, 4)), 0.5) is None


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_qp_without_box_is_the_qps_solution_when_the_box_is_inactive(m, seed):
    generator = np.random.default_rng(100 + seed)
    gradient = generator.normal(size=N) * 0.1
    jacobian = generator.normal(size=(m, N)) * 0.1
    upper = generator.normal(size=m) * 0.05  # some rows active, some not
    direction = qp_without_box(gradient, jacobian, upper, tau=1.0, beta=10.0)
    assert direction is not None
    np.testing.assert_allclose(direction, _osqp(gradient, jacobian, upper, 1.0, 10.0), atol=1e-7)


def test_qp_without_box_declines_when_the_box_binds():
    gradient = np.full(N, 5.0)  # unconstrained step −g/τ = −5 per coordinate
    jacobian = np.zeros((1, N))
    assert qp_without_box(gradient, jacobian, np.ones(1), tau=1.0, beta=1.0) is None


def test_qp_without_box_handles_an_undefined_value_row():
    """A value no minibatch defined enters as 0 + 0·d ≤ κ (``ghost``): its multiplier is 0."""
    generator = np.random.default_rng(7)
    gradient = generator.normal(size=N) * 0.1
    jacobian = np.vstack([generator.normal(size=N) * 0.1, np.zeros(N)])
    upper = np.array([-0.05, 0.0])
    direction = qp_without_box(gradient, jacobian, upper, tau=1.0, beta=10.0)
    np.testing.assert_allclose(direction, _osqp(gradient, jacobian, upper, 1.0, 10.0), atol=1e-7)
