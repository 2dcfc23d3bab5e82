"""The contract of a constraint: additive statistics in, values with their strict companion out.

Contract of a :class:`Constraint`:

* ``statistics(logits, labels, groups, weights)`` returns a 1-D tensor of ``num_statistics``
  weighted sums and counts, differentiable with respect to ``logits`` (and, for
  ``WeightNorm``, the model's parameters);
* ``value(stats)`` returns ``num_values`` constraint values, feasible when ``<= 0`` (the bound is
  folded in); with ``strict=True`` it returns the value that is reported and judged (e.g. a
  hard 0/1 positive rate) instead of the differentiable surrogate that training follows;
* ``estimate(stats)`` returns what a training step reads, a :data:`Reading`: the surrogate
  (for the primal gradient), the detached decision value (for multipliers, switching and
  feasibility inside an algorithm: the strict value unless the constraint's ``decide_on`` is
  ``"surrogate"``), and which values are *defined* in this minibatch.

A value is undefined when a group, or (group, label) cell, it compares is empty in the
minibatch (the global one under data parallelism: counts are statistics). An undefined value
reads 0 in every output, with no gradient, and its ``defined`` entry is false; algorithms
then leave its multiplier and switching state as they were (``algorithms/base.py``). Means are
a group's sum over its true weighted count, never a clamped one, so design weights below 1
(``data/stratified.py``) leave per-group means unchanged.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch

DecideOn = Literal["strict", "surrogate"]
Reading = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(surrogate, decision, defined)``, each ``[num_values]``: the differentiable values, their
detached decision values, and a bool mask of the values this minibatch defines."""


def true_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` where ``count > 0``, else 0 (an empty group: its sums are 0 too).

    Dividing by the true count keeps a weighted count below 1 exact: the count is clamped at
    the dtype's smallest normal number only, which no count of rows or design weights
    reaches, so the division changes for an empty group alone (0 / tiny = 0). An empty
    group's 0 is a placeholder that the caller masks out, never a value anyone reads as a
    mean. One clamp rather than a comparison and a select: a step of a small model is mostly
    per-operation dispatch.
    """
    return total / count.clamp_min(_smallest_normal(count.dtype))


@functools.cache
def _smallest_normal(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def group_membership(
    groups: torch.Tensor,
    num_groups: int,
    dtype: torch.dtype,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[G, n]``: row r's weight (1 without ``weights``) in its group's row, 0 elsewhere, with
    no gradient.

    Columns of a cached identity matrix gathered by group id: per-group sums of per-row
    quantities ``[n, k]`` are then one matmul, with no loop over groups and no matrix built
    per step.
    """
    key = (num_groups, dtype, groups.device)
    identity = _IDENTITIES.get(key)
    if identity is None:
        identity = _IDENTITIES[key] = torch.eye(num_groups, dtype=dtype, device=groups.device)
    member = identity.index_select(1, groups)
    return member if weights is None else member * weights.to(dtype)


_IDENTITIES: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
"""``group_membership``'s identity matrices, one per (groups, dtype, device)."""


def row_weights(logits: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(logits) if weights is None else weights.to(logits.dtype)


class Constraint(ABC):
    """One constraint family: maps statistics to ``num_values`` values, feasible when ``<= 0``."""

    kind: str
    num_values: int
    num_statistics: int
    equality: bool = False
    """Whether every value must be 0 rather than ``<= 0`` (the spec's ``equality``, set by
    ``build_constraints``): algorithms give it free-sign multipliers, feasibility reads |h|."""

    def __init__(self, bound: float, decide_on: DecideOn = "strict") -> None:
        self.bound = float(bound)
        self.decide_on = decide_on

    @abstractmethod
    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Additive statistics of a (shard of a) minibatch, differentiable in ``logits``.

        ``losses``: the rows' BCE of ``logits``, when the caller has computed it already
        (``ConstrainedProblem`` does, for the objective), so that a constraint on the
        loss reuses it rather than adding a second BCE to the step's graph.
        """

    @abstractmethod
    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        """Constraint values from (global) statistics; ``strict`` gives the judged value."""

    def estimate(self, stats: torch.Tensor) -> Reading:
        """The training reading of (global) statistics. Here for constraints whose surrogate
        is their strict value and that every minibatch defines."""
        values = self.value(stats)
        return values, values.detach(), torch.ones_like(values, dtype=torch.bool)

    def batch_estimate(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> Reading:
        """The reading of a batch one process holds whole (nothing to all-reduce):
        ``estimate(statistics(...))``, which a subclass may compute with fewer operations."""
        return self.estimate(self.statistics(logits, labels, groups, weights, losses))

    @abstractmethod
    def names(self, group_names: Sequence[str]) -> list[str]:
        """Human-readable names of the ``num_values`` values, e.g. ``loss_gap[a-b]<=0.05``."""
