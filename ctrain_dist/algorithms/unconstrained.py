"""Unconstrained baselines: minimise the objective only, ignoring every constraint.

They are the reference a constrained method must beat on feasibility and stay close to on the
objective. The constraint values are still estimated and logged (the trainer does that), so a
report can show how far the baseline violates the bound.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from pydantic import Field

from ctrain_dist.algorithms.base import (
    HP,
    Algorithm,
    Estimate,
    Hyperparameters,
    StepInfo,
    draw,
)
from ctrain_dist.algorithms.member_optimizers import MemberOptimizer
from ctrain_dist.algorithms.primal import PRIMAL_MEMBER_HYPERPARAMETERS, optimizer_for


class SGDHyperparameters(Hyperparameters):
    lr: float = Field(0.01, gt=0, description="step size")
    momentum: float = Field(0.0, ge=0, lt=1, description="heavy-ball momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty coefficient")


class AdamHyperparameters(Hyperparameters):
    lr: float = Field(1e-3, gt=0, description="step size")
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay")
    beta2: float = Field(0.999, ge=0, lt=1, description="second-moment decay")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty coefficient")


class _TorchOptimizerBaseline(Algorithm[HP]):
    """Wraps a ``torch.optim`` optimiser; subclasses only say which one.

    Both optimisers act elementwise with scalar hyperparameters, so on packed (stacked)
    parameters they are exactly one optimiser per seed.
    """

    constrained: ClassVar[bool] = False
    state_attributes = ("optimizer",)
    member_hyperparameters = PRIMAL_MEMBER_HYPERPARAMETERS

    def _init_state(self) -> None:
        self.optimizer = self._make_optimizer()

    @abstractmethod
    def _make_optimizer(self) -> torch.optim.Optimizer | MemberOptimizer:
        """The torch optimiser over ``self.params`` built from ``self.hp`` (per-member
        settings for packed configurations: ``primal.optimizer_for``)."""

    def step(self, estimate: Estimate) -> StepInfo:
        sample = draw(estimate)
        self.optimizer.zero_grad(set_to_none=True)
        sample.loss.sum().backward()
        self.optimizer.step()
        self.iteration += 1
        return self._log(sample)


class SGD(_TorchOptimizerBaseline[SGDHyperparameters]):
    r"""Stochastic gradient descent on the objective: :math:`x \leftarrow x - \alpha \nabla f`.

    Robbins & Monro (1951); the unconstrained baseline of the Folktables benchmark.
    """

    name = "sgd"
    paper = "Robbins & Monro 1951, A stochastic approximation method"
    hyperparameters = SGDHyperparameters

    def _make_optimizer(self) -> torch.optim.Optimizer | MemberOptimizer:
        return optimizer_for(self.params, "momentum", self.hp)


class Adam(_TorchOptimizerBaseline[AdamHyperparameters]):
    """Adam on the objective (Kingma & Ba 2015, arXiv 1412.6980)."""

    name = "adam"
    paper = "Kingma & Ba 2015, arXiv 1412.6980"
    hyperparameters = AdamHyperparameters

    def _make_optimizer(self) -> torch.optim.Optimizer | MemberOptimizer:
        return optimizer_for(self.params, "adam", self.hp)
