r"""Stochastic Ghost: SQP steps with a randomised multilevel sample size.

Facchinei & Kungurtsev (2023), "Stochastic approximation for expectation objective and
expectation inequality-constrained nonconvex optimization", arXiv 2307.02943; the deterministic
"ghost penalty" SQP it builds on is Facchinei, Kungurtsev, Lampariello & Scutari (2021, Math.
Oper. Res.). Benchmarked on fairness constraints by Kliachkin et al. (arXiv 2507.04033).

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0`, with :math:`f, c` expectations over
samples. For a sample :math:`S` (here: a set of minibatches, averaged) let :math:`g, c, J` be
the estimated objective gradient, constraint values and Jacobian at :math:`x^k`. The direction
:math:`d(x^k; S)` solves the strongly convex QP

.. math::
    \min_d\; g^\top d + \frac{\tau}{2}\|d\|^2 \quad\text{s.t.}\quad
    c + J d \le \kappa \mathbf{1}, \quad \|d\|_\infty \le \beta,

whose relaxation :math:`\kappa = (1-\lambda) \max(0, \max_i c_i) + \lambda\, \kappa_{\text{feas}}`
mixes the current violation with the best linearised violation reachable in a smaller box,
:math:`\kappa_{\text{feas}} = \min_{\|d\|_\infty \le \rho} \max(0, \max_i c_i + J_i d)` (an LP;
:math:`\rho \le \beta` makes the QP always feasible). The step is

.. math::
    x^{k+1} = x^k + \gamma_k\, \hat d_k, \qquad
    \hat d_k = d(x^k; S_0) + \frac{d(x^k; S_{N+1}) - \frac12 d(x^k; S^{O}_{N+1})
        - \frac12 d(x^k; S^{E}_{N+1})}{p_N},

with :math:`\gamma_k = \gamma_0 / (k+1)^\zeta`, :math:`S_0` one minibatch, :math:`S_{N+1}`
:math:`2^{N+1}` minibatches, :math:`S^O, S^E` its two halves, and the level :math:`N` drawn
with probability :math:`p_N` (Blanchet & Glynn's randomised multilevel Monte Carlo). The
stochastic-approximation analysis needs :math:`\sum_k \gamma_k = \infty` and
:math:`\sum_k \gamma_k^2 < \infty`, i.e. :math:`\tfrac12 < \zeta \le 1`; the default
:math:`\zeta = 0.6` lies inside that range (:math:`\zeta = \tfrac12` makes
:math:`\sum_k \gamma_k^2` the harmonic series). Smaller values are allowed, as the benchmark's
near-constant :math:`\zeta = 0.001` is, outside the guarantee. Each QP must be solved (OSQP's
status "solved"); any other status, "maximum iterations reached" included, fails the step.

**The bound on the sample size, and its bias.** The paper draws :math:`N` from an untruncated
geometric law :math:`p_N = q (1-q)^N`; then :math:`E[2^{N+1}] = \infty` whenever
:math:`q \le \tfrac12`, and even for larger :math:`q` a single step may draw millions of rows
(the reference implementation's default did). Here :math:`N` is truncated at ``max_level``
:math:`L`: :math:`p_N = q (1-q)^N / (1 - (1-q)^{L+1})` for :math:`N = 0..L`, so one step
draws at most :math:`1 + 2^{L+1}` minibatches, and they are streamed: each minibatch's
gradients are accumulated into three running sums (both halves and the constraint values) and
its graph freed, so memory is :math:`O((m+1)\, n)` whatever :math:`N` is. The price is a bias:
the telescoping sum now ends at level :math:`L`, so :math:`E[\hat d_k] = E[d(x^k;
S_{L+1})]`, the direction of the subproblem built from :math:`2^{L+1}` minibatches rather than
from the exact expectations. The solution map is Lipschitz in :math:`(g, c, J)`, so this bias
is of the order of that estimate's error, :math:`O(2^{-(L+1)/2})` in norm, and smaller,
:math:`O(2^{-(L+1)})`, where the map is smooth. ``max_level = 5`` (at most 65 minibatches)
keeps it below the minibatch noise of every other method in the benchmark.

**Proxy constraints and empty groups** (``base``): :math:`c` in the subproblems is the
decision value (the hard rate of a proxy constraint), :math:`J` the surrogate's Jacobian;
each value's :math:`c_i` and :math:`J_i` are averaged over the minibatches that define it, and
a value none of them defines enters the subproblem as :math:`0 + 0 \cdot d \le \kappa`,
which every direction satisfies.

**Host work (the documented GPU exception).** The LP and the QP are solved on the host: in
closed form through their :math:`m`-dimensional duals where that is exact
(``ghost_subproblems``: the LP for :math:`m \le 2`, the QP when its box is inactive), else by
SciPy's HiGHS and OSQP (from PyPI), so each step copies :math:`g, c, J` to the host and the
direction back; this is the only algorithm that synchronises inside ``step``. The level
:math:`N` comes from the algorithm's own generator, whose state is in ``state_dict``.
"""

from __future__ import annotations

import functools

import numpy as np
import osqp
import torch
from pydantic import Field, model_validator
from scipy import sparse
from scipy.optimize import linprog

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    Hyperparameters,
    Sample,
    StepInfo,
    draw,
)
from ctrain_dist.algorithms.ghost_subproblems import feasibility_value, qp_without_box

_SOLVER_TOLERANCE = 1e-9
"""OSQP's absolute and relative tolerance: far below the step's stochastic noise."""


class GhostHyperparameters(Hyperparameters):
    lr: float = Field(0.05, gt=0, description="initial step size γ₀")
    lr_decay: float = Field(
        0.6,
        ge=0,
        description="step decay exponent ζ in γ₀/(k+1)^ζ; Σγ = ∞, Σγ² < ∞ need ½ < ζ ≤ 1",
    )
    tau: float = Field(1.0, gt=0, description="QP proximal weight τ")
    beta: float = Field(10.0, gt=0, description="QP trust region β (∞-norm)")
    rho: float = Field(0.8, gt=0, description="feasibility LP trust region ρ ≤ β")
    relaxation: float = Field(
        0.5, ge=0, le=1, description="λ: weight of the LP's feasibility bound in κ"
    )
    level_probability: float = Field(
        0.7, gt=0, lt=1, description="q of the geometric level law p_N ∝ q(1−q)^N"
    )
    max_level: int = Field(
        5, ge=0, le=12, description="largest level L: at most 1 + 2^(L+1) minibatches a step"
    )

    @model_validator(mode="after")
    def _rho_within_beta(self) -> GhostHyperparameters:
        if self.rho > self.beta:
            raise ValueError("rho must not exceed beta, or the QP can be infeasible")
        return self


class _Moments:
    """Running sums of objective gradient, constraint values and Jacobian over minibatches;
    each value's (and Jacobian row's) sum and count only over the minibatches defining it."""

    def __init__(self, m: int, n: int, like: torch.Tensor) -> None:
        self.count = 0
        self.observed = like.new_zeros(m)
        self.gradient = like.new_zeros(n)
        self.values = like.new_zeros(m)
        self.jacobian = like.new_zeros(m, n)

    def add(
        self,
        gradient: torch.Tensor,
        values: torch.Tensor,
        jacobian: torch.Tensor,
        defined: torch.Tensor,
    ) -> None:
        weight = defined.to(values.dtype)
        self.count += 1
        self.observed += weight
        self.gradient += gradient
        self.values += values * weight
        self.jacobian += jacobian * weight[:, None]

    def merged(self, other: _Moments) -> _Moments:
        both = _Moments(0, 0, self.gradient)
        both.count = self.count + other.count
        both.observed = self.observed + other.observed
        both.gradient = self.gradient + other.gradient
        both.values = self.values + other.values
        both.jacobian = self.jacobian + other.jacobian
        return both

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        per_value = 1.0 / self.observed.clamp_min(1.0)
        means = (
            self.gradient * (1.0 / self.count),
            self.values * per_value,
            self.jacobian * per_value[:, None],
        )
        return tuple(t.double().cpu().numpy() for t in means)  # type: ignore[return-value]


class StochasticGhost(Algorithm[GhostHyperparameters]):
    """Stochastic Ghost; the update, the sample bound and its bias are in the module docstring."""

    name = "ghost"
    constrained = True
    paper = "Facchinei & Kungurtsev 2023, arXiv 2307.02943"
    hyperparameters = GhostHyperparameters
    data_parallel = False  # its Jacobian comes from autograd.grad, which DDP does not average
    batchable = False  # each seed's LP and QP are solved on the host, one at a time
    state_attributes = ("generator",)

    def _init_state(self) -> None:
        hp = self.hp
        self.size = sum(p.numel() for p in self.params)
        seed = int(torch.randint(0, 2**62, (1,)))
        self.generator = torch.Generator().manual_seed(seed)
        levels = np.arange(hp.max_level + 1)
        q = hp.level_probability
        weights = q * (1 - q) ** levels
        self.level_probabilities = weights / weights.sum()

    def _sample(self, estimate: Estimate) -> tuple[Sample, torch.Tensor]:
        """One minibatch: its sample, and its objective gradient and surrogate Jacobian as
        rows of one matrix."""
        sample = draw(estimate)
        outputs = torch.cat([sample.loss.reshape(1), sample.c])
        rows = []
        for i in range(outputs.numel()):
            grads = torch.autograd.grad(
                outputs[i], self.params, retain_graph=i + 1 < outputs.numel(), allow_unused=True
            )
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, self.params, strict=True)
                    ]
                )
            )
        return sample, torch.stack(rows)

    def _accumulate(self, estimate: Estimate, moments: _Moments) -> Sample:
        sample, rows = self._sample(estimate)
        moments.add(rows[0], sample.decision, rows[1:], sample.defined)
        return sample

    def _draw_level(self) -> int:
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        return int(
            np.searchsorted(np.cumsum(self.level_probabilities), u, side="right").clip(
                0, self.hp.max_level
            )
        )

    def _feasibility_bound(self, c: np.ndarray, jacobian: np.ndarray) -> float:
        """κ = (1−λ)·max(0, max c) + λ·min_{‖d‖∞≤ρ} max(0, max_i c_i + J_i d)."""
        hp = self.hp
        violation = max(0.0, float(c.max()))
        reachable = feasibility_value(c, jacobian, hp.rho)
        if reachable is None:
            m, n = jacobian.shape
            # variables (t, d): minimise t subject to J d − t ≤ −c, t ≥ 0, |d| ≤ ρ
            result = linprog(
                c=np.concatenate([[1.0], np.zeros(n)]),
                A_ub=np.hstack([-np.ones((m, 1)), jacobian]),
                b_ub=-c,
                bounds=[(0.0, None)] + [(-hp.rho, hp.rho)] * n,
                method="highs",
            )
            reachable = float(result.fun) if result.status == 0 else violation
        return (1 - hp.relaxation) * violation + hp.relaxation * min(reachable, violation)

    def direction(self, gradient: np.ndarray, c: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
        """The QP's solution d(x; S) for estimates ``(g, c, J)`` (module docstring)."""
        hp = self.hp
        n = gradient.size
        if c.size == 0:
            return np.clip(-gradient / hp.tau, -hp.beta, hp.beta)
        kappa = self._feasibility_bound(c, jacobian)
        exact = qp_without_box(gradient, jacobian, kappa - c, hp.tau, hp.beta)
        if exact is not None:
            return exact
        constraints = sparse.vstack([sparse.csc_matrix(jacobian), sparse.identity(n)], "csc")
        lower = np.concatenate([np.full(c.size, -np.inf), np.full(n, -hp.beta)])
        upper = np.concatenate([kappa - c, np.full(n, hp.beta)])
        solver = osqp.OSQP()
        solver.setup(
            P=sparse.identity(n, format="csc") * hp.tau,
            q=gradient,
            A=constraints,
            l=lower,
            u=upper,
            eps_abs=_SOLVER_TOLERANCE,
            eps_rel=_SOLVER_TOLERANCE,
            max_iter=20_000,
            polishing=False,
            verbose=False,
        )
        solution = solver.solve(raise_error=False)
        if solution.info.status_val != osqp.SolverStatus.OSQP_SOLVED:
            # "maximum iterations reached" and "solved inaccurate" return an x that need not
            # satisfy the linearised constraints: a step along it is not the method's step.
            raise RuntimeError(f"Ghost's QP subproblem was not solved: {solution.info.status}")
        return solution.x

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        like = self.params[0].detach()
        m = self.num_constraints
        single = _Moments(m, self.size, like)
        sample = self._accumulate(estimate, single)
        level = self._draw_level()
        halves = (_Moments(m, self.size, like), _Moments(m, self.size, like))
        for index in range(2 ** (level + 1)):
            self._accumulate(estimate, halves[index % 2])
        whole = halves[0].merged(halves[1])
        d_single = self.direction(*single.means())
        d_whole = self.direction(*whole.means())
        d_odd = self.direction(*halves[0].means())
        d_even = self.direction(*halves[1].means())
        correction = (d_whole - 0.5 * d_odd - 0.5 * d_even) / self.level_probabilities[level]
        step = (hp.lr / (self.iteration + 1) ** hp.lr_decay) * (d_single + correction)
        flat = torch.from_numpy(step).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            offset = 0
            for p in self.params:
                p.add_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        self.iteration += 1
        return self._log(sample, level=functools.partial(self._scalar, float(level)))
