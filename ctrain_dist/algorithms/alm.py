r"""Stochastic augmented Lagrangian method (unsmoothed), one primal step per dual step.

Hestenes (1969) and Powell (1969) for equalities, Rockafellar (1973) for inequalities; the
single-loop stochastic form (one gradient step on the augmented Lagrangian, then a projected
dual ascent step) is the "ALM" baseline of the Folktables benchmark (Kliachkin et al., arXiv
2507.04033). It is *not* SSL-ALM with :math:`\mu = 0` (Huang, Zhang & Alacaoglu, arXiv
2504.07607): that variant draws two samples and steps with the updated multiplier
:math:`\lambda^{k+1}`, this one draws one and steps with :math:`\lambda^k` (it is
humancompatible.train's ``ALM`` driven ``forward``, primal step, ``update``, as
``tests/test_reference_crosscheck.py`` checks).

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0`. With Rockafellar's augmented Lagrangian

.. math::
    \mathcal{L}_\rho(x, \lambda) = f(x) + \frac{1}{2\rho} \sum_i \big(
        [\lambda_i + \rho c_i(x)]_+^2 - \lambda_i^2 \big),

one iteration with primal step :math:`\tau`, dual step :math:`\eta`, bound :math:`\Lambda` and
one minibatch :math:`\xi` is

.. math::
    x^{k+1} &= x^k - \tau \Big(\nabla f(x^k; \xi) + \sum_i [\lambda^k_i
        + \rho\, c_i(x^k; \xi)]_+ \nabla c_i(x^k; \xi)\Big) \\
    \lambda^{k+1} &= \Pi_{[0, \Lambda]}\big(\lambda^k + \eta\, c(x^k; \xi)\big)

The primal step is ``primal`` (``primal.py``) over that gradient; shown here for ``sgd``.
Order: primal first with :math:`\lambda^k`, then the dual step with the constraint value
already computed at :math:`x^k` (simultaneous gradient descent-ascent), so one minibatch and
one backward pass per step. Unlike SSL-ALM the weights and the gradients share one sample, a
small bias of order Var(c)·ρ that the benchmark's ALM accepts for half the sampling cost.
Fixed points satisfy the KKT conditions with :math:`\lambda^\star` the true multipliers.
The weights :math:`[\lambda + \rho c]_+` read the surrogate (they are part of the primal
gradient); the dual step reads the decision value (``base``: the hard rate of a proxy
constraint) and moves only the multipliers of values the minibatch defines.
"""

from __future__ import annotations

from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
    info,
)
from ctrain_dist.algorithms.primal import PrimalHyperparameters, primal_optimizer


class ALMHyperparameters(PrimalHyperparameters):
    dual_lr: float = Field(0.05, gt=0, description="dual step size η")
    rho: float = Field(1.0, ge=0, description="augmentation (penalty) weight ρ")
    dual_bound: float = Field(100.0, gt=0, description="multiplier bound Λ")


class ALM(Algorithm[ALMHyperparameters]):
    """Stochastic ALM; the update and its order are in the module docstring."""

    name = "alm"
    constrained = True
    paper = "Rockafellar 1973, Math. Programming 5:354–373 (stochastic single-loop form)"
    hyperparameters = ALMHyperparameters
    state_attributes = ("duals", "optimizer")

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        weights = (self.duals.value + hp.rho * c.detach().to(self.dtype)).clamp_min(0.0)
        self._backward(loss + (weights.to(c.dtype) * c).sum(-1))
        self.optimizer.step()
        self.duals.ascend(hp.dual_lr, sample.decision, where=sample.defined)
        self.iteration += 1
        return info(sample, self.duals)
