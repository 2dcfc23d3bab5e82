"""The contract every algorithm keeps: torch.optim's shape with a stochastic oracle.

An algorithm is built from the model's parameters, the number of constraint values ``m`` and
its validated hyperparameters, and advances with ``step(estimate)``. ``estimate()`` draws a
fresh minibatch and returns ``(loss, c)``: the mean objective and the ``m`` constraint values
(feasible when ``<= 0``), both attached to the autograd graph of the current parameters.
Methods that need independent samples (SSL-ALM's second constraint sample) call it again; each
call costs one minibatch, which the trainer counts.

Why an oracle rather than ``(loss, c)`` arguments: the number of samples per step is the
algorithm's choice, and under data parallelism ``estimate`` is where statistics are
all-reduced, so every rank sees the same ``c`` and takes the same switching and dual decisions
without further messages.

``state_dict()`` round-trips everything needed to resume the same trajectory: primal optimiser
state, multipliers, smoothing centres, step counters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

Estimate = Callable[[], tuple[torch.Tensor, torch.Tensor]]


class Hyperparameters(BaseModel):
    """Base of each algorithm's hyperparameters: unknown names are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Algorithm(ABC):
    """A stochastic (constrained) training algorithm over a list of parameters."""

    name: ClassVar[str]
    constrained: ClassVar[bool]
    paper: ClassVar[str]
    hyperparameters: ClassVar[type[Hyperparameters]]

    def __init__(
        self, params: Iterable[torch.nn.Parameter], num_constraints: int, hp: Hyperparameters
    ) -> None:
        self.params = list(params)
        self.num_constraints = num_constraints
        self.hp = hp
        self.iteration = 0

    @abstractmethod
    def step(self, estimate: Estimate) -> dict[str, float]:
        """One iteration; returns scalars worth logging (at least ``loss``)."""

    def multipliers(self) -> torch.Tensor:
        """Current dual variables (empty for methods without them)."""
        return torch.zeros(0)

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])

    def _zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def max_violation(c: torch.Tensor) -> float:
    """``max(0, max_i c_i)``: how far the worst constraint is from feasible (0 if none)."""
    return float(c.detach().clamp_min(0).max()) if c.numel() else 0.0
