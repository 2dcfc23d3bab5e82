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
constraint) and moves only the multipliers (and momentum) of values the minibatch defines.

Options (humancompatible.train's ``ALM`` and Cooper's update schemes; the defaults are the
update above; ``tests/test_algorithms_reference.py`` checks each against its reference):

* ``augmentation``: the weight on :math:`\nabla c_i` in the primal step. ``hpr``
  (Hestenes–Powell–Rockafellar, the function above): :math:`[\lambda_i + \rho c_i]_+`;
  ``quadratic``, the gradient of :math:`f + \lambda^\top c + \frac\rho2 \|[c]_+\|^2`:
  :math:`\lambda_i + \rho [c_i]_+`, which never falls below :math:`\lambda_i` however
  feasible the constraint; ``none``, the plain Lagrangian: :math:`\lambda_i` (``rho`` unread).
  The dual step ascends :math:`c` under each; the reference's ``hpr`` ascends the augmented
  Lagrangian's gradient :math:`([\lambda + \rho c]_+ - \lambda)/\rho` instead, the same step
  when :math:`\eta = \rho` (both are then :math:`[\lambda + \rho c]_+`), which is where the
  cross-check compares them.
* Equality constraints :math:`h_i(x) = 0` (``equality``, ``base``): their multipliers are free
  in sign (projected onto :math:`[-\Lambda, \Lambda]`) and the clamps :math:`[\cdot]_+` above
  drop for them (``Multiplier.cone``): HPR's weight is :math:`\lambda_i + \rho h_i`, the
  quadratic one the same, the gradient of :math:`\lambda_i h_i + \frac\rho2 h_i^2` (Hestenes
  and Powell's original); ``restart`` leaves them alone.
* ``dual_momentum`` :math:`\mu`: heavy-ball momentum on the dual direction,
  :math:`b^{k+1} = \mu b^k + c(x^k; \xi)`, :math:`\lambda^{k+1} = \Pi(\lambda^k + \eta
  b^{k+1})` (the reference's ``momentum`` with its default dampening 0).
* ``restart``: after the dual step, multipliers of strictly satisfied constraints
  (:math:`c_i(x^k; \xi) < 0`) are set to 0, the reference's ``restart`` (it warns that a
  stochastic constraint makes this noisy).
* ``order``: ``simultaneous`` (above); ``dual_primal``, the dual step first and the primal
  step with :math:`\lambda^{k+1}` on the same minibatch (Cooper's
  ``AlternatingDualPrimalOptimizer``, and the reference's ``forward_update``); ``primal_dual``,
  the primal step first, then the dual step on the constraint at the new iterate
  :math:`x^{k+1}`, estimated on a second, independent minibatch without a graph (Cooper's
  ``AlternatingPrimalDualOptimizer``, which recomputes the violations after the primal step);
  ``extragradient`` (Korpelevich 1976; Cooper's ``ExtrapolationConstrainedOptimizer`` with
  ``ExtraSGD`` on both sides): a simultaneous step from :math:`(x^k, \lambda^k)` to a look-ahead
  point :math:`(\tilde x, \tilde\lambda)`, then the simultaneous step from :math:`(x^k,
  \lambda^k)` with the gradients at the look-ahead point, on a second minibatch (two oracle
  calls and two backward passes a step); without dual momentum or restart. Both primal
  steps are steps of ``primal``, so a stateful optimiser advances its state at each, the
  look-ahead's gradient entering the moments too: with ``adam`` this is Extra-Adam (Gidel et
  al. 2019, Cooper's ``ExtraAdam``), with ``momentum`` Cooper's ``ExtraSGD`` with momentum.
  One difference from Cooper's ``ExtraAdam``, which is torch's Adam against the Adam paper's
  efficient form: torch adds ε to :math:`\sqrt{\hat v}`, Cooper to :math:`\sqrt{v}` (its ε
  is torch's times :math:`\sqrt{1-\beta_2^t}`); the cross-check aligns it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    Sample,
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


class ALMHyperparameters(PrimalHyperparameters):
    dual_lr: float = Field(0.05, gt=0, description="dual step size η")
    rho: float = Field(1.0, ge=0, description="augmentation (penalty) weight ρ")
    dual_bound: float = Field(100.0, gt=0, description="multiplier bound Λ")
    augmentation: Literal["hpr", "quadratic", "none"] = Field(
        "hpr", description="primal weight: hpr [λ+ρc]₊; quadratic λ+ρ[c]₊; none λ"
    )
    dual_momentum: float = Field(
        0.0, ge=0, lt=1, description="heavy-ball momentum μ of the dual direction"
    )
    restart: bool = Field(False, description="zero the multipliers of strictly satisfied values")
    order: Literal["simultaneous", "dual_primal", "primal_dual", "extragradient"] = Field(
        "simultaneous",
        description="simultaneous; dual first; primal first, dual on a fresh sample; "
        "extragradient (look-ahead step; with adam, Extra-Adam)",
    )

    @model_validator(mode="after")
    def _settings_read(self) -> ALMHyperparameters:
        if self.augmentation == "none" and "rho" in self.model_fields_set:
            raise ValueError("rho is read by augmentation hpr or quadratic, not by none")
        if self.order == "extragradient" and (self.dual_momentum or self.restart):
            raise ValueError("order extragradient takes no dual_momentum or restart")
        return self


class ALM(Algorithm[ALMHyperparameters]):
    """Stochastic ALM; the update and its order are in the module docstring."""

    name = "alm"
    constrained = True
    paper = "Rockafellar 1973, Math. Programming 5:354–373 (stochastic single-loop form)"
    hyperparameters = ALMHyperparameters
    compiles_whole = True
    state_attributes = ("duals", "direction", "optimizer")
    late_state_attributes = frozenset({"direction"})  # older checkpoints: no momentum, b = 0
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {"dual_lr", "rho"}
    takes_equalities = True
    dual_overrides = frozenset({"dual_lr", "dual_bound"})

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)
        self.direction = self._zeros(self.num_constraints)
        """The dual momentum buffer b^k (unused without ``dual_momentum``)."""
        self.optimizer = primal_optimizer(self.params, self.hp)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        if hp.order == "extragradient":
            return self._extragradient_step(sample, estimate)
        if hp.order == "dual_primal":
            self._dual_step(sample.decision, sample.defined)
        self._primal_step(sample.loss, sample.c)
        if hp.order == "simultaneous":
            self._dual_step(sample.decision, sample.defined)
        elif hp.order == "primal_dual":
            with torch.no_grad():
                after = draw(estimate)
            self._dual_step(after.decision, after.defined)
        self.iteration += 1
        return self._log(sample, self.duals)

    def _primal_step(self, loss: torch.Tensor, c: torch.Tensor) -> None:
        """One ``primal`` step on the augmented Lagrangian at the current multipliers."""
        self._backward_augmented(loss, c)
        self.optimizer.step()

    def _backward_augmented(self, loss: torch.Tensor, c: torch.Tensor) -> None:
        """The augmented Lagrangian's gradient at the current multipliers, into ``.grad``."""
        hp = self.hp
        duals = self.duals.value
        if hp.augmentation == "hpr":
            rho = self.hyper("rho", like=duals)
            weights = self.duals.cone(duals + scaled(rho, detached_as(c, self.dtype)))
        elif hp.augmentation == "quadratic":
            rho = self.hyper("rho", like=duals)
            weights = duals + scaled(rho, self.duals.cone(detached_as(c, self.dtype)))
        else:
            weights = duals
        self._backward(loss + (detached_as(weights, c.dtype) * c).sum(-1))

    def _dual_step(self, decision: torch.Tensor, defined: torch.Tensor) -> None:
        """Projected ascent on the decision values, with momentum and restart if set."""
        hp = self.hp
        direction = decision
        if hp.dual_momentum:
            decision = detached_as(decision, self.dtype)
            momentum = torch.add(decision, self.direction, alpha=hp.dual_momentum)  # d + μb
            self.direction = torch.where(defined, momentum, self.direction)
            direction = self.direction
        dual_lr = self._per_value("dual_lr", self.hyper("dual_lr", like=direction))
        # Without momentum the direction is the decision values, 0 where undefined (``base``),
        # so those multipliers stay as they are without a mask (``Multiplier.ascend``).
        self.duals.ascend(dual_lr, direction, where=defined if hp.dual_momentum else None)
        if hp.restart:
            satisfied = defined & (decision < 0) & ~self.equality
            self.duals.update(torch.zeros_like(self.duals.value), where=satisfied)

    def _extragradient_step(self, sample: Sample, estimate: Estimate) -> StepInfo:
        """The look-ahead step, then the step from the saved point with its gradients: two
        steps of the primal optimiser, both advancing its state (Extra-Adam with ``adam``)."""
        with torch.no_grad():
            start = [p.detach().clone() for p in self.params]
        duals = self.duals.value
        self._primal_step(sample.loss, sample.c)
        dual_lr = self._per_value("dual_lr", self.hyper("dual_lr", like=duals))
        self.duals.ascend(dual_lr, sample.decision, where=sample.defined)
        ahead = draw(estimate)
        self._backward_augmented(ahead.loss, ahead.c)
        with torch.no_grad():
            torch._foreach_copy_(self.params, start)
        self.optimizer.step()
        self.duals.value = duals
        self.duals.ascend(dual_lr, ahead.decision, where=ahead.defined)
        self.iteration += 1
        return self._log(sample, self.duals)
