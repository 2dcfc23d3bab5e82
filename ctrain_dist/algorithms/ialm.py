r"""Stochastic inexact augmented Lagrangian method (iALM) with a geometric penalty.

Li, Chen, Liu, Lu & Xu (2024), "Stochastic inexact augmented Lagrangian method for nonconvex
expectation constrained optimization", Comput. Optim. Appl., doi:10.1007/s10589-023-00521-z
(Algorithm 1), in the single-loop form of humancompatible.train 0.4.2's ``iALM`` (one primal
step per dual step), which ``tests/test_algorithms_reference.py`` checks step for step.

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0`. The penalty :math:`\beta_k` is at once
the weight of the quadratic term and the cap of the dual step, and grows geometrically,
:math:`\beta_{k+1} = \sigma \beta_k` (:math:`\sigma \ge 1`); the dual step is cut where the
constraint estimate is large, so a noisy violation cannot throw the multipliers away. One
iteration, one minibatch :math:`\xi`:

.. math::
    w_k &= \min\big(\beta_k,\; \gamma / \|c(x^k; \xi)\|\big) \\
    \lambda^{k+1} &= \Pi_{[0, \Lambda]}\big(\lambda^k + w_k\, c(x^k; \xi)\big) \\
    x^{k+1} &= x^k - \tau \Big(\nabla f(x^k; \xi) + \sum_i \big(\lambda^{k+1}_i
        + \beta_k [c_i(x^k; \xi)]_+\big) \nabla c_i(x^k; \xi)\Big) \\
    \beta_{k+1} &= \min(\sigma \beta_k, \beta_{\max})

the primal line being the gradient of :math:`f + \lambda^\top c + \frac{\beta_k}{2}
\|[c]_+\|^2` (the quadratic acts on the violation only, as for inequalities it must). The
primal step is ``primal`` (``primal.py``); the paper's analysis is for its inner solver's
gradient steps, i.e. ``sgd``. Order (the reference's ``forward_update``): the dual step
first, on the constraint at :math:`x^k`, then the primal step with :math:`\lambda^{k+1}`.
:math:`\beta_{\max}` (unset: no cap, as in the reference and the paper) keeps the curvature
:math:`\beta_k \|\nabla c\|^2` within what a fixed primal step tolerates on long runs.

Dual momentum (``dual_momentum`` :math:`\mu`, the reference's ``momentum`` with its default
dampening :math:`\mu`): the step direction is then the exponential average
:math:`b^{k+1} = \mu b^k + (1-\mu) c(x^k; \xi)` in place of :math:`c`, in :math:`w_k`'s
norm too.

Equality constraints :math:`h_i(x) = 0` (``equality``, ``base``): free-sign multipliers in
:math:`[-\Lambda, \Lambda]` and the quadratic term :math:`\frac{\beta_k}{2} h_i^2`, the
paper's own setting (its constraints are equalities; inequalities take the clamp above).

Proxy constraints and empty groups (``base``): :math:`w_k` and the dual step read the decision
values (the norm of those the minibatch defines) and move only the multipliers (and momentum)
of defined values; the quadratic term reads the surrogate. :math:`\beta_k` is a host number:
it changes with the iteration count only, so reading it costs no device sync.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
    info,
)
from ctrain_dist.algorithms.primal import PrimalHyperparameters, primal_optimizer


class IALMHyperparameters(PrimalHyperparameters):
    penalty: float = Field(1.0, gt=0, description="initial penalty β₀, also the dual step cap")
    growth: float = Field(1.0, ge=1, description="penalty growth σ per step: β ← σβ")
    max_penalty: float | None = Field(
        None, gt=0, description="cap β_max on the penalty (unset: none, as in the paper)"
    )
    dual_step_bound: float = Field(
        1.0, gt=0, description="γ: the dual step is min(β, γ/‖c‖) times c"
    )
    dual_momentum: float = Field(
        0.0, ge=0, lt=1, description="EMA weight μ of the dual direction (0: plain c)"
    )
    dual_bound: float = Field(100.0, gt=0, description="multiplier bound Λ")


class IALM(Algorithm[IALMHyperparameters]):
    """Single-loop stochastic iALM; the update and its order are in the module docstring."""

    name = "ialm"
    constrained = True
    paper = "Li, Chen, Liu, Lu & Xu 2024, Comput. Optim. Appl., doi:10.1007/s10589-023-00521-z"
    hyperparameters = IALMHyperparameters
    takes_equalities = True
    state_attributes = ("duals", "penalty", "direction", "optimizer")

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)
        self.penalty = self.hp.penalty
        """β_k, a host number (module docstring)."""
        self.direction = self._zeros(self.num_constraints)
        """The momentum buffer b^k (unused without dual momentum)."""
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        observed = torch.where(sample.defined, sample.decision.to(self.dtype), 0.0)
        if hp.dual_momentum:
            smoothed = hp.dual_momentum * self.direction + (1 - hp.dual_momentum) * observed
            self.direction = torch.where(sample.defined, smoothed, self.direction)
            observed = torch.where(sample.defined, smoothed, 0.0)
        norm = torch.linalg.vector_norm(observed, dim=-1, keepdim=True)
        weight = (hp.dual_step_bound / norm).clamp(max=self.penalty)
        self.duals.update(self.duals.value + weight * observed, where=sample.defined)
        violation = self.duals.cone(c.detach().to(self.dtype))
        weights = self.duals.value + self.penalty * violation
        self._backward(loss + (weights.to(c.dtype) * c).sum(-1))
        self.optimizer.step()
        grown = self.penalty * hp.growth
        self.penalty = grown if hp.max_penalty is None else min(grown, hp.max_penalty)
        self.iteration += 1
        return info(sample, self.duals, penalty=self._scalar(self.penalty))
