r"""Stochastic Ghost's subproblems solved exactly in closed form where their size allows.

Ghost's step solves, per direction, an LP over :math:`n` variables (the feasibility bound
:math:`\kappa_{\text{feas}}`) and a QP over :math:`n` variables with :math:`m` linearised
constraints and a box (``ghost``'s docstring). :math:`n` is the network's size (thousands),
:math:`m` the number of constraint values (a handful), and general-purpose solvers pay for
:math:`n`. Both problems have :math:`m`-dimensional duals, solved here directly:

**The LP**, :math:`\min_{\|d\|_\infty \le \rho} \max(0, \max_i c_i + J_i d)`. By LP duality
the inner value is :math:`\max_{\lambda \in \Delta_m} \lambda^\top c - \rho \|J^\top
\lambda\|_1` over the simplex. For :math:`m = 1` that is :math:`c - \rho \|J\|_1`; for
:math:`m = 2`, with :math:`\lambda = (t, 1-t)`, the function :math:`\phi(t) = t c_1 + (1-t)
c_2 - \rho \|J_2 + t (J_1 - J_2)\|_1` is concave and piecewise linear, its kinks where a
coordinate of :math:`J_2 + t(J_1 - J_2)` changes sign; its slope falls by :math:`2\rho |J_{1j}
- J_{2j}|` at kink :math:`t_j`, so sorting the kinks finds the maximiser exactly
(:func:`feasibility_value`). Larger :math:`m`: ``None`` (the caller solves the LP).

**The QP**, :math:`\min_d g^\top d + \frac\tau2 \|d\|^2` s.t. :math:`J d \le u`,
:math:`\|d\|_\infty \le \beta`. Without the box its solution is :math:`d = -(g + J^\top
\mu)/\tau` with :math:`\mu \ge 0` minimising :math:`\frac12 \mu^\top H \mu + b^\top \mu`,
:math:`H = J J^\top / \tau`, :math:`b = J g / \tau + u`: an :math:`m`-dimensional QP, solved
by trying every active set :math:`S` (:math:`\mu_S = -H_{SS}^{-1} b_S \ge 0` and
:math:`(H \mu + b)_i \ge 0` off :math:`S`: the KKT conditions, unique when :math:`H` is
positive definite). If that :math:`d` lies in the box it solves the boxed QP too (it is
optimal for a relaxation and feasible); otherwise, or if no active set passes (dependent
rows), :func:`qp_without_box` returns ``None`` and the caller falls back to OSQP. With the
trust region well above a step's size, the box is inactive almost always.

Exact in exact arithmetic, so Ghost's trajectory changes only by OSQP's tolerance (1e-9).
``tests/test_ghost_subproblems.py`` checks both against HiGHS and OSQP on random instances.
"""

from __future__ import annotations

import itertools

import numpy as np

MAX_ACTIVE_SET_ROWS = 6
"""Above this many constraint values the 2^m active sets cost more than they save."""
_KKT_TOLERANCE = 1e-12
"""Relative slack for μ ≥ 0 and the complement's gradient ≥ 0 in floating point."""


def feasibility_value(c: np.ndarray, jacobian: np.ndarray, rho: float) -> float | None:
    """``min_{‖d‖∞≤ρ} max(0, max_i c_i + J_i d)`` for one or two values; ``None`` for more."""
    if c.size == 1:
        return max(0.0, float(c[0] - rho * np.abs(jacobian[0]).sum()))
    if c.size != 2:
        return None
    base, change = jacobian[1], jacobian[0] - jacobian[1]

    def phi(t: float) -> float:
        return float(t * c[0] + (1 - t) * c[1] - rho * np.abs(base + t * change).sum())

    # Slope just right of t = 0: each coordinate's sign there (its sign at 0, else where the
    # change takes it), then the kinks inside (0, 1) in order.
    sign = np.where(base != 0, np.sign(base), np.sign(change))
    slope = float(c[0] - c[1] - rho * (sign * change).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = -base / change
    inside = (change != 0) & (kinks > 0) & (kinks < 1)
    order = np.argsort(kinks[inside])
    points, drops = kinks[inside][order], 2 * rho * np.abs(change[inside][order])
    best = 0.0
    if slope > 0:
        after = slope - np.cumsum(drops)
        stop = int(np.searchsorted(-after, 0.0))  # first kink after which the slope is ≤ 0
        best = float(points[stop]) if stop < points.size else 1.0
    return max(0.0, phi(best))


def qp_without_box(
    gradient: np.ndarray,
    jacobian: np.ndarray,
    upper: np.ndarray,
    tau: float,
    beta: float,
) -> np.ndarray | None:
    """The QP's solution through its dual when its box is inactive, else ``None``."""
    m = upper.size
    if m > MAX_ACTIVE_SET_ROWS:
        return None
    hessian = jacobian @ jacobian.T / tau
    linear = jacobian @ gradient / tau + upper
    scale = 1.0 + np.abs(linear).max(initial=0.0) + np.abs(hessian).max(initial=0.0)
    for size in range(m + 1):
        for active in itertools.combinations(range(m), size):
            duals = np.zeros(m)
            if active:
                rows = list(active)
                block = hessian[np.ix_(rows, rows)]
                try:
                    duals[rows] = np.linalg.solve(block, -linear[rows])
                except np.linalg.LinAlgError:
                    continue
                if not np.isfinite(duals).all() or duals.min() < -_KKT_TOLERANCE * scale:
                    continue
            residual = hessian @ duals + linear
            if residual.min(initial=0.0) < -_KKT_TOLERANCE * scale * m:
                continue
            direction = -(gradient + jacobian.T @ np.maximum(duals, 0.0)) / tau
            return direction if np.abs(direction).max(initial=0.0) <= beta else None
    return None
