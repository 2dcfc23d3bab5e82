r"""SSL-ALM: stochastic smoothed linearised augmented Lagrangian method.

Huang, Zhang & Alacaoglu (2025), "Stochastic smoothed primal-dual algorithms for nonconvex
optimization with linear inequality constraints", arXiv 2504.07607; applied to nonlinear
fairness constraints as in the Folktables benchmark (Kliachkin et al., arXiv 2507.04033).

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0` with :math:`c: \mathbb{R}^n \to
\mathbb{R}^m`. The paper treats :math:`Ax \le b` through the augmented Lagrangian of the
inequalities; here they enter in Rockafellar's form, which is the same function once the slack
is minimised out,

.. math::
    \mathcal{L}_\rho(x, \lambda) = f(x) + \frac{1}{2\rho} \sum_i \big(
        [\lambda_i + \rho c_i(x)]_+^2 - \lambda_i^2 \big),

smoothed by a proximal term around a slowly moving centre :math:`z`:
:math:`K(x, z, \lambda) = \mathcal{L}_\rho(x, \lambda) + \frac{\mu}{2}\|x - z\|^2`.
One iteration with step sizes :math:`\tau` (primal), :math:`\eta` (dual) and :math:`\beta`
(centre), dual bound :math:`\Lambda`, and two independent minibatches :math:`\xi, \xi'`:

.. math::
    \lambda^{k+1} &= \Pi_{[0, \Lambda]}\big(\lambda^k + \eta\, c(x^k; \xi)\big) \\
    x^{k+1} &= x^k - \tau \Big(\nabla f(x^k; \xi') + \sum_i [\lambda^{k+1}_i
        + \rho\, c_i(x^k; \xi)]_+ \nabla c_i(x^k; \xi') + \mu (x^k - z^k)\Big) \\
    z^{k+1} &= z^k + \beta (x^{k+1} - z^k)

The primal step is ``primal`` (``primal.py``) over the bracket, the direction of
:math:`\nabla_x K`; the paper's analysis is for the ``sgd`` step written here.
The order is load-bearing: the dual step uses the constraint at :math:`x^k` and the primal step
then uses :math:`\lambda^{k+1}` (the paper's dual-first order); the centre follows the new
iterate. The weights :math:`[\lambda + \rho c]_+` come from the first sample and the gradients
from the second, so their product is not biased by the correlation of one minibatch with
itself. The projection onto :math:`[0, \Lambda]` keeps the multipliers bounded, as the paper's
analysis assumes (the reference implementation clamps to its ``dual_range`` too).
humancompatible.train 0.4.2 composes SSL-ALM from its ``ALM`` dual optimiser (Rockafellar's
"hpr" augmentation) and a ``MoreauEnvelope`` primal wrapper; it differs by design in two
places, both pinned by ``tests/test_reference_crosscheck.py``: its dual step ascends the
augmented Lagrangian's gradient :math:`([\lambda + \rho c]_+ - \lambda)/\rho`, which is
:math:`c` wherever :math:`\lambda + \rho c \ge 0` (ours ascends :math:`c` always, the paper's
step), and it moves the centre towards :math:`x^k`, before the primal step (ours towards
:math:`x^{k+1}`, as written above).

At a fixed point :math:`x = z`, :math:`\lambda^\star = [\lambda^\star + \eta c]_+` gives
complementarity and the primal step gives :math:`\nabla f + \sum_i \lambda^\star_i \nabla c_i
= 0`: the KKT conditions, with the multipliers approaching the true ones.

Equality constraints :math:`h_i(x) = 0` (``equality``, ``base``): their multipliers are free
in sign, projected onto :math:`[-\Lambda, \Lambda]`, and the weight's clamp drops for them
(``Multiplier.cone``): :math:`\lambda_i + \rho h_i`, the gradient weight of the
Hestenes–Powell term :math:`\lambda_i h_i + \frac\rho2 h_i^2`. The paper's linear constraints
:math:`Ax \le b` include equalities as two inequalities; one free multiplier is their
difference. The fixed point is then stationarity with :math:`h = 0`.

Proxy constraints and empty groups (``base``): the dual step reads the first sample's
decision values and moves only the multipliers of values that sample defines; the weights
:math:`[\lambda + \rho c]_+` read its surrogate, since they scale the primal gradient.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
    scaled,
)
from ctrain_dist.algorithms.multiplier import detached_as
from ctrain_dist.algorithms.primal import (
    PRIMAL_MEMBER_HYPERPARAMETERS,
    PrimalHyperparameters,
    primal_optimizer,
)


class SSLALMHyperparameters(PrimalHyperparameters):
    dual_lr: float = Field(0.05, gt=0, description="dual step size η")
    rho: float = Field(1.0, ge=0, description="augmentation (penalty) weight ρ")
    mu: float = Field(2.0, ge=0, description="smoothing (proximal) weight μ")
    beta: float = Field(0.5, gt=0, le=1, description="centre update rate β")
    dual_bound: float = Field(100.0, gt=0, description="multiplier bound Λ")


class SSLALM(Algorithm[SSLALMHyperparameters]):
    """SSL-ALM; the update and the reasons for its order are in the module docstring."""

    name = "ssl_alm"
    constrained = True
    paper = "Huang, Zhang & Alacaoglu 2025, arXiv 2504.07607"
    hyperparameters = SSLALMHyperparameters
    compiles_whole = True
    takes_equalities = True
    dual_overrides = frozenset({"dual_lr", "dual_bound"})
    state_attributes = ("duals", "centres", "optimizer")
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {"dual_lr", "rho", "mu", "beta"}

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)
        self.centres = [p.detach().clone() for p in self.params]
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        duals = self.duals.value
        with torch.no_grad():
            first = draw(estimate)
        dual_lr = self._per_value("dual_lr", self.hyper("dual_lr", like=duals))
        self.duals.ascend(dual_lr, first.decision)  # 0 where undefined: those stay as they are
        rho = self.hyper("rho", like=duals)
        weights = self.duals.cone(self.duals.value + scaled(rho, detached_as(first.c, self.dtype)))

        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        self._backward(loss + (detached_as(weights, c.dtype) * c).sum(-1))
        with torch.no_grad():
            # In place, one temporary: with packed seeds each tensor is K models' worth of
            # memory, and this traffic would rival the step's matmuls.
            for p, centre in zip(self.params, self.centres, strict=True):
                mu = self.hyper("mu", like=p)
                if isinstance(mu, torch.Tensor):
                    p.grad.addcmul_(p - centre, mu)
                else:
                    p.grad.add_(p - centre, alpha=mu)
            self.optimizer.step()
            for p, centre in zip(self.params, self.centres, strict=True):
                centre.lerp_(p, self.hyper("beta", like=p))
        self.iteration += 1
        return self._log(sample, self.duals)
