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

Packed configurations (``base``): every scalar but the bound :math:`\Lambda` may differ
between members. Members whose schedule differs (:math:`\beta_0`, :math:`\sigma` or
:math:`\beta_{\max}`) keep :math:`\beta_k` as a float64 ``[K]`` tensor on the device, grown
by the same double-precision products and minima as the host number, so each member's
:math:`\beta_k` is its lone run's bit for bit.
"""

from __future__ import annotations

import functools

import torch
from pydantic import Field

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
)
from ctrain_dist.algorithms.members import member_tensor
from ctrain_dist.algorithms.multiplier import detached_as
from ctrain_dist.algorithms.primal import (
    PRIMAL_MEMBER_HYPERPARAMETERS,
    PrimalHyperparameters,
    primal_optimizer,
)

_SCHEDULE = ("penalty", "growth", "max_penalty")
"""The settings that fix β_k's schedule."""


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
    compiles_whole = True
    takes_equalities = True
    dual_overrides = frozenset({"dual_bound"})
    state_attributes = ("duals", "penalty", "direction", "optimizer")
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {
        *_SCHEDULE,
        "dual_step_bound",
        "dual_momentum",
    }

    def _init_state(self) -> None:
        self.duals = self._multiplier(upper=self.hp.dual_bound)
        self._schedule: dict[str, float | torch.Tensor | None] = {
            name: self._schedule_value(name) for name in _SCHEDULE
        }
        self.penalty: float | torch.Tensor = self._schedule["penalty"]  # type: ignore[assignment]
        """β_k: a host number, or one float64 per member (module docstring)."""
        self.direction = self._zeros(self.num_constraints)
        """The momentum buffer b^k (unused without dual momentum)."""
        self.optimizer = primal_optimizer(self.params, self.hp)

    def _schedule_value(self, name: str) -> float | torch.Tensor | None:
        """A schedule setting as β_k's arithmetic reads it: the host number when the members
        share the whole schedule, else one float64 per member (None: unset in all)."""
        if not self._member_values.keys() & set(_SCHEDULE):
            return getattr(self.hp, name)
        values = (
            self.hp.values(name)  # type: ignore[attr-defined]
            if name in self._member_values
            else [getattr(self.hp, name)] * (self.seeds or 1)
        )
        if values[0] is None:
            return None
        return member_tensor(values, self.device, torch.float64)

    def step(self, estimate: Estimate) -> StepInfo:
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        observed = detached_as(sample.decision, self.dtype)  # 0 where undefined (``base``)
        momentum = self.hyper("dual_momentum", like=observed)
        if isinstance(momentum, torch.Tensor) or momentum:
            smoothed = momentum * self.direction + (1 - momentum) * observed
            moving = sample.defined
            if isinstance(momentum, torch.Tensor):  # members without momentum keep b = 0
                moving = moving & (momentum > 0)
            self.direction = torch.where(moving, smoothed, self.direction)
            observed = torch.where(sample.defined, smoothed, 0.0)
        norm = torch.linalg.vector_norm(observed, dim=-1, keepdim=True)
        penalty = self.penalty
        if isinstance(penalty, torch.Tensor):
            penalty = self._per_seed(penalty.to(self.dtype), norm)
        weight = (self.hyper("dual_step_bound", like=norm) / norm).clamp(max=penalty)
        # Undefined values observe 0, so their multipliers stay as they are without a mask.
        self.duals.update(self.duals.value + weight * observed)
        violation = self.duals.cone(detached_as(c, self.dtype))
        weights = self.duals.value + penalty * violation
        self._backward(loss + (detached_as(weights, c.dtype) * c).sum(-1))
        self.optimizer.step()
        self.penalty = self._grown(self.penalty)
        self.iteration += 1
        penalty = self.penalty
        if isinstance(penalty, float):
            return self._log(sample, self.duals, penalty=functools.partial(self._scalar, penalty))
        return self._log(sample, self.duals, penalty=functools.partial(penalty.to, self.dtype))

    def _grown(self, penalty: float | torch.Tensor) -> float | torch.Tensor:
        """β_{k+1} = min(σ β_k, β_max): host numbers, or float64 tensors per member."""
        growth, cap = self._schedule["growth"], self._schedule["max_penalty"]
        grown = penalty * growth  # type: ignore[operator]
        if cap is None:
            return grown
        if isinstance(grown, torch.Tensor):
            return torch.minimum(grown, cap)  # type: ignore[arg-type]
        return min(grown, cap)  # type: ignore[type-var]
