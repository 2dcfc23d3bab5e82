r"""Stochastic penalty-barrier multiplier method (PBM) with penalty annealing: the classical one.

Registered as ``classical_pbm``, not ``pbm``: humancompatible.train calls its own, different
stochastic penalty-barrier method ``PBM``, which is ``spbm`` here (``spbm.py``: per-step dual
averaging, per-constraint adaptive penalties, other penalty functions); this is Ben-Tal &
Zibulevsky's outer loop, in a stochastic single-loop form. A spec naming ``pbm`` is refused with
both names (``algorithms.RENAMED``), so nobody gets one while meaning the other.

Ben-Tal & Zibulevsky (1997), "Penalty/barrier multiplier methods for convex programming
problems", SIAM J. Optim. 7(2):347–366; the quadratic extrapolations make the functions
defined on the whole line, so the method may start infeasible (Kočvara & Stingl's PENNON uses
the same construction). Here in a single-loop stochastic form: the inner minimisation is a few
SGD steps on minibatch estimates.

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0`. With a penalty parameter :math:`p > 0`,
multipliers :math:`u > 0` and a penalty-barrier function :math:`\varphi` (convex, increasing,
:math:`\varphi(0) = 0`, :math:`\varphi'(0) = 1`), the method works on

.. math::
    F(x; u, p) = f(x) + \sum_i u_i\, p\, \varphi\big(c_i(x) / p\big).

Two functions, each a barrier for :math:`t \le \tfrac12` continued by the quadratic that
matches value, slope and curvature at :math:`\tfrac12`:

.. math::
    \varphi_{\text{qlog}}(t) &= \begin{cases} -\log(1 - t) & t \le \tfrac12 \\
        2t^2 + \log 2 - \tfrac12 & t > \tfrac12 \end{cases} \qquad
    \varphi_{\text{qrec}}(t) = \begin{cases} \frac{t}{1 - t} & t \le \tfrac12 \\
        8t^2 - 4t + 1 & t > \tfrac12 \end{cases}

Iteration :math:`k` (primal step :math:`\alpha`, one minibatch :math:`\xi_k`):
:math:`x^{k+1} = x^k - \alpha \nabla_x F(x^k; u, p; \xi_k)` for ``primal: sgd`` (``lr`` is
:math:`\alpha`; any ``primal`` of ``primal.py`` may take the inner steps). Every :math:`K`
steps (an outer iteration) the multipliers and the penalty move, on the constraint values
averaged over the inner loop, :math:`\bar c = \frac1K \sum c(x^k; \xi_k)`:

.. math::
    u_i \leftarrow \Pi_{[u_{\min}, u_{\max}]}\big(u_i\, \varphi'(\bar c_i / p)\big), \qquad
    p \leftarrow \max(p_{\min}, \gamma p)

At a fixed point, active constraints have :math:`\varphi'(c_i/p) = 1`, i.e. :math:`c_i = 0`,
and :math:`\nabla f + \sum_i u_i \nabla c_i = 0`: :math:`u` approaches the true multipliers
(inactive ones shrink towards :math:`u_{\min}`). Annealing :math:`p` sharpens the barrier, so
late iterates are pushed harder towards feasibility; :math:`p_{\min}` keeps the curvature
:math:`u \varphi''/p` within what the step size tolerates.

Proxy constraints and empty groups (``base``): the barrier reads the surrogate (it is the
primal objective); :math:`\bar c` averages the decision values over the inner steps whose
minibatch defined them, and a multiplier no inner step observed keeps its value.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
)
from ctrain_dist.algorithms.multiplier import detached_as
from ctrain_dist.algorithms.primal import (
    PRIMAL_MEMBER_HYPERPARAMETERS,
    PrimalHyperparameters,
    primal_optimizer,
)

_LOG2 = math.log(2.0)


def quadratic_logarithmic(t: torch.Tensor) -> torch.Tensor:
    """φ_qlog: −log(1 − t) up to ½, then its C² quadratic continuation."""
    barrier = -torch.log1p(-t.clamp(max=0.5))
    return torch.where(t <= 0.5, barrier, 2 * t**2 + _LOG2 - 0.5)


def quadratic_reciprocal(t: torch.Tensor) -> torch.Tensor:
    """φ_qrec: t / (1 − t) up to ½, then its C² quadratic continuation."""
    inside = t.clamp(max=0.5)
    return torch.where(t <= 0.5, inside / (1 - inside), 8 * t**2 - 4 * t + 1)


def _derivative(kind: str, t: torch.Tensor) -> torch.Tensor:
    """φ'(t), used for the multiplier update."""
    inside = t.clamp(max=0.5)
    if kind == "quadratic_logarithmic":
        return torch.where(t <= 0.5, 1 / (1 - inside), 4 * t)
    return torch.where(t <= 0.5, 1 / (1 - inside) ** 2, 16 * t - 4)


_FUNCTIONS = {
    "quadratic_logarithmic": quadratic_logarithmic,
    "quadratic_reciprocal": quadratic_reciprocal,
}


class PBMHyperparameters(PrimalHyperparameters):
    function: Literal["quadratic_logarithmic", "quadratic_reciprocal"] = Field(
        "quadratic_logarithmic", description="penalty-barrier function φ"
    )
    penalty: float = Field(1.0, gt=0, description="initial penalty parameter p")
    anneal: float = Field(0.9, gt=0, le=1, description="penalty factor γ per outer iteration")
    min_penalty: float = Field(0.05, gt=0, description="penalty floor p_min")
    inner_steps: int = Field(50, gt=0, description="SGD steps K per outer iteration")
    init_multiplier: float = Field(1.0, gt=0, description="initial multipliers u₀")
    min_multiplier: float = Field(1e-6, gt=0, description="multiplier floor u_min (keeps u > 0)")
    max_multiplier: float = Field(100.0, gt=0, description="multiplier cap u_max")

    @model_validator(mode="after")
    def _ordered(self) -> PBMHyperparameters:
        if self.min_multiplier > self.max_multiplier:
            raise ValueError("min_multiplier must not exceed max_multiplier")
        if not self.min_multiplier <= self.init_multiplier <= self.max_multiplier:
            raise ValueError("init_multiplier must lie within [min_multiplier, max_multiplier]")
        if self.min_penalty > self.penalty:
            raise ValueError("min_penalty must not exceed the initial penalty")
        return self


class PBM(Algorithm[PBMHyperparameters]):
    """Classical PBM, stochastic single-loop form; the update is in the module docstring."""

    name = "classical_pbm"
    constrained = True
    paper = "Ben-Tal & Zibulevsky 1997, SIAM J. Optim. 7(2):347–366 (classical; see spbm)"
    hyperparameters = PBMHyperparameters
    state_attributes = ("duals", "penalty", "constraint_sum", "observed", "optimizer")
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS
    """Only the primal step's settings: the penalty is a host number of the whole pack."""
    dual_overrides = frozenset({"dual_bound"})
    """A constraint's own cap on its multipliers (``max_multiplier``, per value)."""

    @classmethod
    def initial_multiplier(cls, hp: PBMHyperparameters) -> float:  # type: ignore[override]
        return hp.init_multiplier

    def _init_state(self) -> None:
        hp = self.hp
        self.duals = self._multiplier(hp.init_multiplier, hp.min_multiplier, hp.max_multiplier)
        self.penalty = hp.penalty
        """The penalty parameter p, a host number: it changes on the iteration count only."""
        self.constraint_sum = self._zeros(self.num_constraints)
        """Σ c(x^k; ξ_k) over the current outer iteration's inner steps that defined c_i."""
        self.observed = self._zeros(self.num_constraints)
        """How many of those inner steps defined each value: c̄'s denominators."""
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        phi = _FUNCTIONS[hp.function]
        duals = detached_as(self.duals.value, c.dtype)
        barrier = (duals * self.penalty * phi(c / self.penalty)).sum(-1)
        self._backward(loss + barrier)
        self.optimizer.step()
        defined = sample.defined.to(self.dtype)
        self.constraint_sum += detached_as(sample.decision, self.dtype) * defined
        self.observed += defined
        self.iteration += 1
        if self.iteration % hp.inner_steps == 0:
            mean_c = self.constraint_sum / self.observed.clamp_min(1.0)
            scale = _derivative(hp.function, mean_c / self.penalty)
            self.duals.update(self.duals.value * scale, where=self.observed > 0)
            self.penalty = max(hp.min_penalty, hp.anneal * self.penalty)
            self.constraint_sum = self._zeros(self.num_constraints)
            self.observed = self._zeros(self.num_constraints)
        return self._log(sample, self.duals, penalty=functools.partial(self._scalar, self.penalty))
