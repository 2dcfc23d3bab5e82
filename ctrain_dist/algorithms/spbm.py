r"""Stochastic penalty-barrier method (SPBM): per-step dual averaging, adaptive penalties.

The penalty-barrier multiplier method of Ben-Tal & Zibulevsky (1997) in the single-loop
stochastic form of humancompatible.train 0.4.2 (its ``PBM`` dual optimiser, benchmarked by
Kliachkin et al., arXiv 2507.04033), which ``tests/test_algorithms_reference.py`` checks step
for step. Not the classical outer-loop method ``classical_pbm`` (``pbm.py``): that one
averages the constraint over 50 inner steps and anneals one global penalty; this one moves the
multipliers every step by exponential averaging and keeps one adaptive penalty per constraint.
Its penalty functions differ too (they penalise violation quadratically and flatten
logarithmically or reciprocally on the feasible side, so :math:`\varphi'(-1)` is 0.25, where
``classical_pbm``'s is 0.5).

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) \le 0`. With multipliers :math:`\lambda > 0` and
penalties :math:`p > 0`, one per constraint, the primal objective is

.. math::
    F(x; \lambda, p) = f(x) + \sum_i \lambda_i p_i\, \varphi\big(c_i(x) / p_i\big),

    \varphi_{\text{qlog}}(t) = \begin{cases} t + \tfrac12 t^2 & t \ge -\tfrac12 \\
        -\tfrac14 \log(-2t) - \tfrac38 & t < -\tfrac12 \end{cases} \qquad
    \varphi_{\text{qrec}}(t) = \begin{cases} t + \tfrac12 t^2 & t \ge -\tfrac13 \\
        \frac{32}{27 (1 - t)} - \tfrac76 & t < -\tfrac13 \end{cases}

(both :math:`C^1` with :math:`\varphi(0) = 0`, :math:`\varphi'(0) = 1`). One iteration on one
minibatch :math:`\xi`, with :math:`c = c(x^k; \xi)`:

.. math::
    x^{k+1} &= x^k - \tau \nabla_x F(x^k; \lambda^k, p^k; \xi) \\
    \lambda^{k+1} &= \Pi_{[\lambda_{\min}, \lambda_{\max}]}\big(\gamma_e \lambda^k
        + (1 - \gamma_e)\, \lambda^k \varphi'(c / p^k)\big) \\
    p^{k+1} &= \Pi_{[p_{\min}, p_{\max}]}\big(U(p^k)\big)

The primal step is ``primal`` (``primal.py``; shown for ``sgd``), with the multipliers and
penalties from before the dual step (the reference's snapshot: the surrogate and the dual
step share the minibatch, but not its update). With ``inner_steps`` :math:`L > 1` the dual
and penalty steps are taken on every :math:`L`-th step only, on that step's minibatch.
Penalty rules :math:`U` (``penalty_update``, factor :math:`K`, ``delta`` :math:`\delta`):

* ``const``: :math:`p`; ``dimin``: :math:`K p`; ``dimin_dual``: :math:`K p \lambda^{k+1}`;
* ``dimin_adapt``: :math:`K p + (1-K) p / (d + 10^{-8})` with :math:`d = \varphi'(c)` where
  :math:`\varphi'(c) < 1` and :math:`\delta \varphi'(c)` elsewhere (the derivative at
  :math:`c`, not :math:`c/p`, as the reference computes it);
* ``aimd`` (additive increase, multiplicative decrease): :math:`p + 0.1` where :math:`c \le 0`,
  :math:`K p` where :math:`c > 0`;
* ``alm``: :math:`\rho \lambda^{k+1}`, which turns the method into an augmented Lagrangian.

Annealing (``annealing_period``: steps per epoch, unset for none): after :math:`e` epochs the
averaging weight is :math:`\gamma_e = 1 - 1/(\sqrt e + 1/(1-\gamma_0))` and, with
``anneal_penalty_mult``, the factor :math:`K_e` follows the same law from :math:`K_0` (none
when :math:`K_0 = 1`), both rising towards 1 (the reference's ``gamma_annealing`` and
``penalty_annealing``; its epoch counter advances with the former only).

At a fixed point :math:`\varphi'(c_i/p_i) = 1` for every :math:`\lambda_i` above its floor, so
:math:`c_i = 0`, and :math:`\nabla f + \sum_i \lambda_i \nabla c_i = 0`: the KKT conditions,
with inactive multipliers shrinking towards :math:`\lambda_{\min}`. The analysis is for the
``sgd`` step; the multiplier step is multiplicative, so :math:`\lambda_{\min} > 0` matters.

Proxy constraints and empty groups (``base``): :math:`F` reads the surrogate, the dual and
penalty steps the decision values, and only the multipliers and penalties of values the
minibatch defines move. Everything stays on the device; :math:`\gamma_e` and :math:`K_e` are
host numbers from the step count.

Packed configurations (``base``): members may differ in the primal settings, :math:`\gamma_0`,
:math:`K_0`, :math:`\delta` and :math:`\rho`, each then a ``[K]`` tensor in the same
arithmetic (:math:`\gamma_e` and :math:`K_e` too, the annealing law being elementwise; with
:math:`K_0 = 1` it gives 1 exactly, as the host number's special case does); the bounds,
initial values, the function, the rule and the counts are shared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator

from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    StepInfo,
    draw,
    largest,
)
from ctrain_dist.algorithms.multiplier import detached_as
from ctrain_dist.algorithms.primal import (
    PRIMAL_MEMBER_HYPERPARAMETERS,
    PrimalHyperparameters,
    primal_optimizer,
)

Function = Callable[[torch.Tensor], torch.Tensor]


def quadratic_logarithmic(t: torch.Tensor) -> torch.Tensor:
    """φ_qlog: t + t²/2 from −½ up, −¼ log(−2t) − ⅜ below."""
    below = t.clamp(max=-0.5)
    return torch.where(t >= -0.5, t + 0.5 * t**2, -0.25 * torch.log(-2 * below) - 3 / 8)


def quadratic_logarithmic_derivative(t: torch.Tensor) -> torch.Tensor:
    below = t.clamp(max=-0.5)
    return torch.where(t >= -0.5, 1 + t, -1 / (4 * below))


def quadratic_reciprocal(t: torch.Tensor) -> torch.Tensor:
    """φ_qrec: t + t²/2 from −⅓ up, 32/(27(1 − t)) − 7/6 below."""
    below = t.clamp(max=-1 / 3)
    return torch.where(t >= -1 / 3, t + 0.5 * t**2, (32 / 27) * (1 / (1 - below)) - 7 / 6)


def quadratic_reciprocal_derivative(t: torch.Tensor) -> torch.Tensor:
    below = t.clamp(max=-1 / 3)
    return torch.where(t >= -1 / 3, 1 + t, (32 / 27) * (1 / (1 - below) ** 2))


FUNCTIONS: dict[str, tuple[Function, Function]] = {
    "quadratic_logarithmic": (quadratic_logarithmic, quadratic_logarithmic_derivative),
    "quadratic_reciprocal": (quadratic_reciprocal, quadratic_reciprocal_derivative),
}
"""Each penalty function and its derivative."""


def _rising(epoch: int, start: float | torch.Tensor) -> float | torch.Tensor:
    """1 − 1/(√e + 1/(1 − start)): ``start`` at epoch 0, rising towards 1 (a tensor of 1s
    stays 1: 1/0 is infinite there)."""
    return 1.0 - 1.0 / (epoch**0.5 + 1.0 / (1.0 - start))


class SPBMHyperparameters(PrimalHyperparameters):
    function: Literal["quadratic_logarithmic", "quadratic_reciprocal"] = Field(
        "quadratic_logarithmic", description="penalty function φ"
    )
    penalty_update: Literal["const", "dimin", "dimin_dual", "dimin_adapt", "aimd", "alm"] = Field(
        "dimin_adapt", description="penalty rule U (module docstring)"
    )
    penalty_mult: float = Field(0.1, gt=0, le=1, description="penalty factor K")
    dual_smoothing: float = Field(
        0.1, ge=0, lt=1, description="averaging weight γ of the multiplier step"
    )
    delta: float = Field(1.0, gt=0, description="δ of dimin_adapt on violated values")
    rho: float = Field(2.0, gt=0, description="p = ρλ of penalty_update alm")
    init_multiplier: float | None = Field(
        None, gt=0, description="initial multipliers (unset: min_multiplier)"
    )
    min_multiplier: float = Field(1e-9, gt=0, description="multiplier floor λ_min (keeps λ > 0)")
    max_multiplier: float = Field(100.0, gt=0, description="multiplier cap λ_max")
    init_penalty: float | None = Field(
        None, gt=0, description="initial penalties (unset: max_penalty)"
    )
    min_penalty: float = Field(0.1, gt=0, description="penalty floor p_min")
    max_penalty: float = Field(1.0, gt=0, description="penalty cap p_max")
    inner_steps: int = Field(1, gt=0, description="primal steps L per dual and penalty step")
    annealing_period: int | None = Field(
        None, gt=0, description="steps per annealing epoch (unset: γ and K stay constant)"
    )
    anneal_penalty_mult: bool = Field(True, description="anneal K with γ (annealing_period)")

    @model_validator(mode="after")
    def _consistent(self) -> SPBMHyperparameters:
        if "rho" in self.model_fields_set and self.penalty_update != "alm":
            raise ValueError(f"rho is read by penalty_update alm, not {self.penalty_update}")
        if "anneal_penalty_mult" in self.model_fields_set and self.annealing_period is None:
            raise ValueError("anneal_penalty_mult is read only with an annealing_period")
        for name, low, high in (
            ("multiplier", self.min_multiplier, self.max_multiplier),
            ("penalty", self.min_penalty, self.max_penalty),
        ):
            if low > high:
                raise ValueError(f"min_{name} must not exceed max_{name}")
            init = getattr(self, f"init_{name}")
            if init is not None and not low <= init <= high:
                raise ValueError(f"init_{name} must lie within [min_{name}, max_{name}]")
        return self


class SPBM(Algorithm[SPBMHyperparameters]):
    """The toolkit's stochastic penalty-barrier method; the update is in the module docstring."""

    name = "spbm"
    constrained = True
    paper = (
        "humancompatible.train 0.4.2's PBM (Kliachkin et al., arXiv 2507.04033), "
        "after Ben-Tal & Zibulevsky 1997"
    )
    hyperparameters = SPBMHyperparameters
    state_attributes = ("duals", "penalties", "epoch", "epoch_step", "optimizer")
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS | {
        "penalty_mult",
        "dual_smoothing",
        "delta",
        "rho",
    }
    dual_overrides = frozenset({"dual_bound"})
    """A constraint's own cap on its multipliers (``max_multiplier``, per value)."""

    @classmethod
    def initial_multiplier(cls, hp: SPBMHyperparameters) -> float:  # type: ignore[override]
        return hp.min_multiplier if hp.init_multiplier is None else hp.init_multiplier

    def _init_state(self) -> None:
        hp = self.hp
        init = hp.min_multiplier if hp.init_multiplier is None else hp.init_multiplier
        self.duals = self._multiplier(init, hp.min_multiplier, hp.max_multiplier)
        penalty = hp.max_penalty if hp.init_penalty is None else hp.init_penalty
        self.penalties = self._zeros(self.num_constraints) + penalty
        self.epoch = 0
        """Annealing epochs completed (host number)."""
        self.epoch_step = 0
        """Steps into the current annealing epoch."""
        self.optimizer = primal_optimizer(self.params, hp)

    def step(self, estimate: Estimate) -> StepInfo:
        hp = self.hp
        sample = draw(estimate)
        loss, c = sample.loss, sample.c
        function, derivative = FUNCTIONS[hp.function]
        duals, penalties = self.duals.value, self.penalties
        if (self.iteration + 1) % hp.inner_steps == 0:
            self._dual_step(detached_as(sample.decision, self.dtype), sample.defined, derivative)
        scale = detached_as(duals * penalties, c.dtype)
        self._backward(loss + (scale * function(c / detached_as(penalties, c.dtype))).sum(-1))
        self.optimizer.step()
        self.iteration += 1
        if hp.annealing_period is not None:
            self.epoch_step += 1
            if self.epoch_step == hp.annealing_period:
                self.epoch += 1
                self.epoch_step = 0
        return self._log(sample, self.duals, max_penalty=functools.partial(largest, self.penalties))

    def _dual_step(self, c: torch.Tensor, defined: torch.Tensor, derivative: Function) -> None:
        """The multiplier and penalty steps on the decision values (module docstring)."""
        hp = self.hp
        p, ratio = self.penalties, c / self.penalties
        annealing = hp.annealing_period is not None
        gamma = self.hyper("dual_smoothing", like=p)
        gamma = _rising(self.epoch, gamma) if annealing else gamma
        mult = self.hyper("penalty_mult", like=p)
        if annealing and hp.anneal_penalty_mult and (isinstance(mult, torch.Tensor) or mult != 1):
            mult = _rising(self.epoch, mult)
        self.duals.update(
            self.duals.value * gamma + (1 - gamma) * (derivative(ratio) * self.duals.value),
            where=defined,
        )
        duals = self.duals.value
        if hp.penalty_update == "dimin":
            new = p * mult
        elif hp.penalty_update == "dimin_dual":
            new = p * mult * duals
        elif hp.penalty_update == "dimin_adapt":
            slope = derivative(c)
            damped = torch.where(slope < 1.0, slope, self.hyper("delta", like=p) * slope)
            new = p * mult + (1 - mult) * p / (damped + 1e-8)
        elif hp.penalty_update == "aimd":
            new = (p + torch.where(ratio <= 0.0, 0.1, 0.0)) * torch.where(ratio > 0.0, mult, 1.0)
        elif hp.penalty_update == "alm":
            new = duals * self.hyper("rho", like=duals)
        else:
            new = p
        new = new.clamp(hp.min_penalty, hp.max_penalty)
        self.penalties = torch.where(defined, new, p)
