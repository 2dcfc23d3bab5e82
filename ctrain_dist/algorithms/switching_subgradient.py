r"""Stochastic switching subgradient method.

Huang & Lin (2023), "Oracle complexity of single-loop switching subgradient methods for
non-smooth weakly convex functional constrained optimization", arXiv 2301.13314 (NeurIPS 2023);
the stochastic variant is the one benchmarked by Kliachkin et al. (arXiv 2507.04033).

Problem: :math:`\min_x f(x)` s.t. :math:`g(x) = \max_i c_i(x) \le 0`. Each iteration draws one
minibatch :math:`\xi`, estimates :math:`\hat g = \max_i c_i(x^k; \xi)` and switches:

.. math::
    x^{k+1} = \begin{cases}
        x^k - \eta_k\, \zeta_f, \; \zeta_f = \nabla f(x^k; \xi)
            & \text{if } \hat g \le \epsilon \quad\text{(objective step, } k \in I)\\
        x^k - \eta'_k\, \zeta_g, \; \zeta_g = \nabla c_{i^*}(x^k; \xi),
            \; i^* = \arg\max_i c_i(x^k; \xi) & \text{otherwise (constraint step)}
    \end{cases}

Step rules (``step_rule``):

* ``constant``: :math:`\eta_k = \eta`, :math:`\eta'_k = \eta'`;
* ``diminishing``: :math:`\eta_k = \eta / \sqrt{k+1}`, :math:`\eta'_k = \eta' / \sqrt{k+1}`;
* ``adaptive``: the paper's Polyak-type step on the constraint branch,
  :math:`\eta'_k = \hat g / \|\zeta_g\|^2` (capped at :math:`\eta'` so that a near-zero
  stochastic subgradient cannot throw the iterate away), and :math:`\eta_k = \eta` on the
  objective branch. :math:`\hat g > \epsilon \ge 0` there, so the step is positive.

:math:`\epsilon` is the constant tolerance of the switch. The paper's guarantee is for an
iterate drawn from the objective steps :math:`I`; the trainer evaluates the last iterate, the
practice of the benchmark. The share of objective steps is logged so that a run which never
leaves the constraint branch is visible.

Proxy constraints and empty groups (``base``): :math:`\hat g` and :math:`i^*` are read from
the decision values of the values the minibatch defines (none defined: an objective step),
and the constraint step follows the surrogate's gradient :math:`\nabla c_{i^*}`; the
adaptive step's numerator is that decision value :math:`\hat g`.

GPU-ready: the switch is a ``torch.where`` on the target and on the step size, so a single
backward pass follows the chosen branch without reading :math:`\hat g` on the host. Packed
seeds switch independently: the ``where`` is per seed, so one seed's constraint step and
another's objective step share the batched backward pass.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    Hyperparameters,
    StepInfo,
    draw,
    info,
)

_TINY = 1e-12
"""Guards the Polyak step's denominator against a zero subgradient."""


class SwitchingSubgradientHyperparameters(Hyperparameters):
    lr: float = Field(0.05, gt=0, description="objective step size η")
    lr_constraint: float | None = Field(
        None,
        gt=0,
        description="constraint step size η' (defaults to lr); the cap of the adaptive step",
    )
    tol: float = Field(0.0, ge=0, description="constraint tolerance ε for the switch")
    step_rule: Literal["constant", "diminishing", "adaptive"] = Field(
        "constant",
        description="constant; divided by sqrt(k+1); or Polyak-type ĝ/‖ζ_g‖² on constraint steps",
    )


class SwitchingSubgradient(Algorithm[SwitchingSubgradientHyperparameters]):
    """Switching subgradient; the update is in the module docstring."""

    name = "switching_subgradient"
    constrained = True
    paper = "Huang & Lin 2023, arXiv 2301.13314"
    hyperparameters = SwitchingSubgradientHyperparameters
    state_attributes = ("objective_steps",)

    def _init_state(self) -> None:
        self.objective_steps = self._zeros()
        """How many steps (per seed) took the objective branch: the set :math:`I`'s size."""

    def _scale(self) -> float:
        if self.hp.step_rule == "diminishing":
            return 1.0 / math.sqrt(self.iteration + 1)
        return 1.0

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        lr_constraint = hp.lr_constraint or hp.lr
        if c.numel():
            observed = torch.where(sample.defined, sample.decision, -torch.inf)
            worst, chosen = observed.max(-1, keepdim=True)
            worst = worst.squeeze(-1)
            objective_step = worst <= hp.tol
            target = torch.where(objective_step, loss, c.gather(-1, chosen).squeeze(-1))
        else:
            worst = objective_step = None
            target = loss
        self._backward(target)
        scale = self._scale()
        if objective_step is None:
            step_size: float | torch.Tensor = hp.lr * scale
            self.objective_steps += 1
        else:
            constraint_lr: float | torch.Tensor = lr_constraint * scale
            if hp.step_rule == "adaptive":
                squared_norm = sum(
                    self._seed_sum(p.grad.detach() ** 2) for p in self.params if p.grad is not None
                )
                polyak = worst / (squared_norm + _TINY)
                constraint_lr = polyak.clamp(0.0, lr_constraint)
            if not isinstance(constraint_lr, torch.Tensor):
                constraint_lr = self._scalar(constraint_lr)
            step_size = torch.where(objective_step, self._scalar(hp.lr * scale), constraint_lr)
            self.objective_steps += objective_step.to(self.objective_steps.dtype)
        self._descend(step_size)
        self.iteration += 1
        return info(sample, objective_step_share=self.objective_steps / self.iteration)
