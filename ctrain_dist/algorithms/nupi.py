r"""Lagrangian descent-ascent with νPI multiplier updates.

Sohrabi, Ramirez, Zhang, Lacoste-Julien & Gallego-Posada (2024), "On PI controllers for
updating Lagrange multipliers in constrained optimization", ICML 2024, arXiv 2406.04558.

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0`, Lagrangian :math:`\mathcal{L}(x,
\lambda) = f(x) + \lambda^\top c(x)`. The multipliers are the control variable of a
proportional-integral controller whose error signal is the constraint violation
:math:`e_t = c(x^t; \xi_t)`, filtered by an exponential moving average:

.. math::
    x^{t+1} &= x^t - \alpha\, \big(\nabla f(x^t; \xi_t) + \textstyle\sum_i \lambda^t_i
        \nabla c_i(x^t; \xi_t)\big) \\
    \xi_t &= \nu\, \xi_{t-1} + (1 - \nu)\, e_t \\
    \lambda^{t+1} &= \Pi_{[0, \Lambda]}\big(\lambda^t + \eta\,
        (\kappa_I\, e_t + \kappa_P\, (\xi_t - \xi_{t-1}))\big)

with :math:`\xi_{-1} = e_0` (the paper's and Cooper's "SGD" initialisation: the first dual
step is plain gradient ascent). :math:`\kappa_P = 0` recovers gradient descent-ascent;
:math:`\nu = 0, \kappa_P = \kappa_I = 1` the optimistic gradient method. The proportional
term damps the multiplier oscillations that make plain GDA overshoot the constraint.
The primal step is ``primal`` (``primal.py``: the paper's experiments and Cooper train with
momentum or Adam there); shown here for ``sgd``, with :math:`\alpha` the hyperparameter ``lr``.
Order: the primal step uses :math:`\lambda^t`, then the multipliers move on the constraint
value at :math:`x^t` (simultaneous updates, one minibatch per step). The projection onto
:math:`[0, \Lambda]` is the paper's non-negativity projection plus a bound for stability.
The error signal is the decision value (``base``: the hard rate of a proxy constraint); a
value the minibatch leaves undefined (an empty group) moves neither its multiplier nor its
filter memory that step.
"""

from __future__ import annotations

import torch
from pydantic import Field

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


class NuPIHyperparameters(PrimalHyperparameters):
    dual_lr: float = Field(0.05, gt=0, description="dual step size η")
    kappa_p: float = Field(1.0, ge=0, description="proportional gain κ_P")
    kappa_i: float = Field(1.0, ge=0, description="integral gain κ_I")
    nu: float = Field(0.0, ge=0, lt=1, description="EMA coefficient ν of the error signal")
    dual_bound: float = Field(100.0, gt=0, description="multiplier bound Λ")


class NuPI(Algorithm[NuPIHyperparameters]):
    """νPI; the update and its order are in the module docstring."""

    name = "nupi"
    constrained = True
    paper = "Sohrabi et al. 2024, arXiv 2406.04558"
    hyperparameters = NuPIHyperparameters
    state_attributes = ("duals", "smoothed_error", "optimizer")
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {"dual_lr", "kappa_p", "kappa_i", "nu"}
    takes_equalities = True
    """An equality's multiplier is free in sign (``base``); the controller is unchanged."""
    dual_overrides = frozenset({"dual_lr", "dual_bound"})

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)
        self.optimizer = primal_optimizer(self.params, self.hp)
        self.smoothed_error = self._zeros(self.num_constraints)
        """The controller's memory ξ_{t−1}: the error signal filtered up to the last step."""

    def step(self, estimate: Estimate) -> StepInfo:
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        error = detached_as(sample.decision, self.dtype)
        self._backward(loss + (detached_as(self.duals.value, c.dtype) * c).sum(-1))
        self.optimizer.step()
        previous = error if self.iteration == 0 else self.smoothed_error
        nu = self.hyper("nu", like=error)
        smoothed = nu * previous + (1 - nu) * error
        kappa_i, kappa_p = self.hyper("kappa_i", like=error), self.hyper("kappa_p", like=error)
        control = kappa_i * error + kappa_p * (smoothed - previous)
        self.smoothed_error = torch.where(sample.defined, smoothed, previous)
        dual_lr = self._per_value("dual_lr", self.hyper("dual_lr", like=error))
        self.duals.ascend(dual_lr, control, where=sample.defined)
        self.iteration += 1
        return self._log(sample, self.duals)
