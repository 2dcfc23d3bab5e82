r"""Stochastic switching subgradient method.

Huang & Lin (2023), "Oracle complexity of single-loop switching subgradient methods for
non-smooth weakly convex functional constrained optimization", arXiv 2301.13314 (NeurIPS 2023);
the stochastic variant is the one benchmarked by Kliachkin et al. (arXiv 2507.04033).

Problem: :math:`\min_x f(x)` s.t. :math:`g(x) = \max_i c_i(x) \le 0`. Each iteration draws one
minibatch :math:`\xi`, estimates :math:`\hat g = \max_i c_i(x^k; \xi)` and switches:

.. math::
    x^{k+1} = \begin{cases}
        x^k - \eta_k\, \nabla f(x^k; \xi) & \text{if } \hat g \le \epsilon_k
            \quad\text{(objective step, } k \in I)\\
        x^k - \eta'_k\, \nabla c_{i^*}(x^k; \xi), \; i^* = \arg\max_i c_i(x^k; \xi)
            & \text{otherwise (constraint step)}
    \end{cases}

with the constant rule :math:`\eta_k = \eta, \eta'_k = \eta'` or the diminishing rule
:math:`\eta_k = \eta / \sqrt{k+1}`, :math:`\eta'_k = \eta' / \sqrt{k+1}`, and a constant
tolerance :math:`\epsilon_k = \epsilon`. The paper's guarantee is for an iterate drawn from the
objective steps :math:`I`; the trainer evaluates the last iterate, the practice of the
benchmark. The share of objective steps is logged so that a run which never leaves the
constraint branch is visible.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from .base import Algorithm, Estimate, Hyperparameters, max_violation


class SwitchingSubgradientHyperparameters(Hyperparameters):
    lr: float = Field(0.05, gt=0, description="objective step size η")
    lr_constraint: float | None = Field(
        None, gt=0, description="constraint step size η' (defaults to lr)"
    )
    tol: float = Field(0.0, ge=0, description="constraint tolerance ε for the switch")
    step_rule: Literal["constant", "diminishing"] = Field(
        "constant", description="constant steps, or steps divided by sqrt(k+1)"
    )


class SwitchingSubgradient(Algorithm):
    """Switching subgradient; the update is in the module docstring."""

    name = "switching_subgradient"
    constrained = True
    paper = "Huang & Lin 2023, arXiv 2301.13314"
    hyperparameters = SwitchingSubgradientHyperparameters

    def __init__(
        self, params, num_constraints: int, hp: SwitchingSubgradientHyperparameters
    ) -> None:
        super().__init__(params, num_constraints, hp)
        self.objective_steps = 0

    def _scale(self) -> float:
        return 1.0 if self.hp.step_rule == "constant" else 1.0 / math.sqrt(self.iteration + 1)

    def step(self, estimate: Estimate) -> dict[str, float]:
        hp = self.hp
        loss, c = estimate()
        worst = int(c.detach().argmax()) if c.numel() else -1
        objective_step = worst < 0 or float(c.detach()[worst]) <= hp.tol
        if objective_step:
            target, lr = loss, hp.lr
            self.objective_steps += 1
        else:
            target, lr = c[worst], hp.lr_constraint or hp.lr
        self._zero_grad()
        target.backward()
        step_size = lr * self._scale()
        with torch.no_grad():
            for p in self.params:
                p.sub_(step_size * p.grad)
        self.iteration += 1
        return {
            "loss": float(loss.detach()),
            "max_violation": max_violation(c),
            "objective_step_share": self.objective_steps / self.iteration,
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "objective_steps": self.objective_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.objective_steps = int(state["objective_steps"])
