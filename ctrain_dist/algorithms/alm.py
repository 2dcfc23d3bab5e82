r"""Stochastic augmented Lagrangian method (unsmoothed), one primal step per dual step.

Hestenes (1969) and Powell (1969) for equalities, Rockafellar (1973) for inequalities; the
single-loop stochastic form (one gradient step on the augmented Lagrangian, then a projected
dual ascent step) is the "ALM" baseline of the Folktables benchmark (Kliachkin et al., arXiv
2507.04033) and SSL-ALM without its smoothing term (Huang, Zhang & Alacaoglu, arXiv
2504.07607, with :math:`\mu = 0`).

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

Order: primal first with :math:`\lambda^k`, then the dual step with the constraint value
already computed at :math:`x^k` (simultaneous gradient descent-ascent), so one minibatch and
one backward pass per step. Unlike SSL-ALM the weights and the gradients share one sample, a
small bias of order Var(c)·ρ that the benchmark's ALM accepts for half the sampling cost.
Fixed points satisfy the KKT conditions with :math:`\lambda^\star` the true multipliers.
"""

from __future__ import annotations

from pydantic import Field

from ctrain_dist.algorithms.base import Algorithm, Estimate, Hyperparameters, StepInfo, info


class ALMHyperparameters(Hyperparameters):
    lr: float = Field(0.05, gt=0, description="primal step size τ")
    dual_lr: float = Field(0.05, gt=0, description="dual step size η")
    rho: float = Field(1.0, ge=0, description="augmentation (penalty) weight ρ")
    dual_bound: float = Field(100.0, gt=0, description="multiplier bound Λ")


class ALM(Algorithm[ALMHyperparameters]):
    """Stochastic ALM; the update and its order are in the module docstring."""

    name = "alm"
    constrained = True
    paper = "Rockafellar 1973, Math. Programming 5:354–373 (stochastic single-loop form)"
    hyperparameters = ALMHyperparameters
    state_attributes = ("duals",)

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        loss, c = estimate()
        c_now = c.detach().to(self.dtype)
        weights = (self.duals.value + hp.rho * c_now).clamp_min(0.0)
        self._backward(loss + (weights.to(c.dtype) * c).sum(-1))
        self._descend(hp.lr)
        self.duals.ascend(hp.dual_lr, c_now)
        self.iteration += 1
        return info(loss, c, self.duals)
