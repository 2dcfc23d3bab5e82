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

:math:`\epsilon` is the tolerance of the switch: constant, or with ``tol_rule: diminishing``
:math:`\epsilon_k = \epsilon / \sqrt{k+1}`, as the reference benchmark tightens it. With
``decide_on: independent`` the switch (:math:`\hat g`, :math:`i^*`) reads a second minibatch
:math:`\xi'`, drawn without a graph, and the step follows the gradient on :math:`\xi`: the
branch is then independent of the subgradient's noise, as the stochastic analysis assumes
(one more minibatch a step). The share of objective steps is logged so that a run which
never leaves the constraint branch is visible.

Output (``output``): the paper's guarantee is for an iterate :math:`x^\tau` drawn from the
objective steps :math:`I`, not for the last one. ``last`` evaluates the last iterate, the
practice of the reference benchmark; ``random`` the drawn one, with
:math:`P(\tau = k) = \eta_k / \sum_{s \in I} \eta_s` (uniform under the constant and
adaptive rules, whose objective step is :math:`\eta`); ``average`` the
:math:`\eta_k`-weighted average of :math:`\{x^k\}_{k \in I}` (Lan & Zhou's cooperative
subgradient output). :math:`x^k` is the iterate at which the switch chose the objective, before
the step from it. Both are kept online in one copy of the parameters (``output_iterate``),
drawn per member from its trial seed, and swapped into the model for every evaluation, so the
evaluation rows and final metrics are those of the output; training continues from the last
iterate. Until the first objective step the output is the current iterate.

Equality constraints :math:`h_i(x) = 0` (``equality``, ``base``) enter the switch as
:math:`|h_i| \le \epsilon` and the constraint step as the subgradient
:math:`\operatorname{sign}(h_i) \nabla h_i` of :math:`|h_i|`, the paper's functional
constraint :math:`g = \max_i |h_i|`.

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
from contextlib import AbstractContextManager
from typing import Literal

import torch
from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    Hyperparameters,
    StepInfo,
    draw,
)
from ctrain_dist.algorithms.output_iterate import OutputIterate, OutputRule, member_keys

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
    tol_rule: Literal["constant", "diminishing"] = Field(
        "constant", description="the tolerance ε, or ε/sqrt(k+1) at step k"
    )
    decide_on: Literal["same", "independent"] = Field(
        "same",
        description="switch on the gradient's minibatch, or on a second, independent one",
    )
    output: OutputRule = Field(
        "last",
        description="evaluated iterate: the last; a random objective-step one (P ∝ its step); "
        "their step-weighted average",
    )


class SwitchingSubgradient(Algorithm[SwitchingSubgradientHyperparameters]):
    """Switching subgradient; the update is in the module docstring."""

    name = "switching_subgradient"
    constrained = True
    paper = "Huang & Lin 2023, arXiv 2301.13314"
    hyperparameters = SwitchingSubgradientHyperparameters
    compiles_whole = True
    state_attributes = ("objective_steps", "output")
    late_state_attributes = frozenset({"output"})  # older checkpoints: output last, no state
    member_hyperparameters = frozenset({"lr", "lr_constraint", "tol"})

    takes_equalities = True

    def _init_state(self) -> None:
        self.objective_steps = self._zeros()
        """How many steps (per seed) took the objective branch: the set :math:`I`'s size."""
        self.output = OutputIterate(self.hp.output, self.params, self._keys())
        """The output iterate over :math:`I` (module docstring)."""

    def _keys(self) -> torch.Tensor:
        """Each member's key for the output's draws: from its trial seed, or (not given) from
        torch's global generator, which only a random output draws from."""
        seeds = self.member_seeds
        if seeds is None:
            members = self.seeds or 1
            drawn = self.hp.output == "random"
            seeds = torch.randint(0, 2**31, (members,)).tolist() if drawn else [0] * members
        keys = member_keys(seeds, self.device)
        return keys if self.seeds is not None else keys[0]

    def output_iterate(self) -> AbstractContextManager[None]:
        return self.output.swapped_in()

    def _per_member(self, value: float | torch.Tensor) -> torch.Tensor:
        """A step size once per member: a shared number filled in, a ``[K]`` tensor as is."""
        return value if isinstance(value, torch.Tensor) else self._scalar(value)

    def _scale(self) -> float:
        if self.hp.step_rule == "diminishing":
            return 1.0 / math.sqrt(self.iteration + 1)
        return 1.0

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        decision, defined = sample.decision, sample.defined
        if hp.decide_on == "independent":
            with torch.no_grad():
                second = draw(estimate)
            decision, defined = second.decision, second.defined
        lr = self.hyper("lr", like=loss)
        lr_constraint = self.hyper("lr_constraint", like=loss)
        if lr_constraint is None:
            lr_constraint = lr
        if c.numel():
            violation, signed_c = decision, c
            if self.has_equalities:  # |h| and its subgradient sign(h)∇h
                signs = torch.where(self.equality & (decision < 0), -1.0, 1.0)
                violation, signed_c = decision * signs, c * signs.to(c.dtype)
            observed = torch.where(defined, violation, -torch.inf)
            worst, chosen = observed.max(-1, keepdim=True)
            worst = worst.squeeze(-1)
            tol = self.hyper("tol", like=worst)
            if hp.tol_rule == "diminishing":
                tol = tol / math.sqrt(self.iteration + 1)
            objective_step = worst <= tol
            target = torch.where(objective_step, loss, signed_c.gather(-1, chosen).squeeze(-1))
        else:
            worst = objective_step = None
            target = loss
        self._backward(target)
        scale = self._scale()
        self.output.record(objective_step, lr * scale, self.iteration)
        if objective_step is None:
            step_size: float | torch.Tensor = lr * scale
            self.objective_steps += 1
        else:
            constraint_lr: float | torch.Tensor = lr_constraint * scale
            if hp.step_rule == "adaptive":
                squared_norm = sum(
                    self._seed_sum(p.grad.detach() ** 2) for p in self.params if p.grad is not None
                )
                polyak = worst / (squared_norm + _TINY)
                if isinstance(lr_constraint, torch.Tensor):
                    constraint_lr = polyak.clamp_min(0.0).minimum(lr_constraint)
                else:
                    constraint_lr = polyak.clamp(0.0, lr_constraint)
            step_size = torch.where(
                objective_step, self._per_member(lr * scale), self._per_member(constraint_lr)
            )
            self.objective_steps += objective_step.to(self.objective_steps.dtype)
        self._descend(step_size)
        self.iteration += 1
        return self._log(sample, objective_step_share=self.objective_steps / self.iteration)
