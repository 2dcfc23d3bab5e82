"""Fairness constraints as additive sufficient statistics plus a value function.

Why statistics and not values: a constraint such as "mean loss of group a minus mean loss of
group b" is a ratio of sums. Sums add across minibatch shards, so one ``all_reduce(SUM)`` of a
flat statistics vector gives every worker the exact statistics of the global minibatch; the
ratios are then formed from global sums. Averaging per-shard constraint values instead is
biased whenever group counts differ between shards (DESIGN.md, "Constraints, exact under data
parallelism").

Contract of a :class:`Constraint`:

* ``statistics(logits, labels, groups)`` returns a 1-D tensor of sums and counts,
  differentiable with respect to ``logits``;
* ``value(stats)`` returns ``num_values`` constraint values, feasible when ``<= 0`` (the bound is
  folded in); with ``strict=True`` it returns the value that is reported and judged (e.g. a
  hard 0/1 positive rate) instead of the differentiable surrogate that training follows.

:class:`ConstrainedProblem` stacks the objective's and every constraint's statistics into the
one flat vector that a worker all-reduces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional

_EMPTY_GROUP_COUNT = 1.0
"""Divisor used when a group is absent from a minibatch: its sums are zero, so its mean reads 0.

Absent groups are rare with the embedded data (P ≈ 6e-5 for 64 rows and the 14 % non-white
minority) but must not produce NaN that would end a trial.
"""


def _group_sums(values: torch.Tensor, groups: torch.Tensor, group: int) -> torch.Tensor:
    """Sum of ``values`` over the rows of ``group`` and that group's row count."""
    member = (groups == group).to(values.dtype)
    return torch.stack([(values * member).sum(), member.sum()])


def _mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return total / count.clamp_min(_EMPTY_GROUP_COUNT)


class Constraint(ABC):
    """One constraint family: maps statistics to ``num_values`` values, feasible when ``<= 0``."""

    kind: str
    num_values: int
    num_statistics: int

    def __init__(self, bound: float, group_a: int = 0, group_b: int = 1) -> None:
        if group_a == group_b:
            raise ValueError("a gap constraint needs two different groups")
        self.bound = float(bound)
        self.group_a = group_a
        self.group_b = group_b

    @abstractmethod
    def statistics(
        self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        """Additive statistics of a (shard of a) minibatch, differentiable in ``logits``."""

    @abstractmethod
    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        """Constraint values from (global) statistics; ``strict`` gives the judged value."""

    def names(self, group_names: Sequence[str]) -> list[str]:
        """Human-readable names of the ``num_values`` values, e.g. ``loss_gap[a-b]<=0.05``."""
        a, b = group_names[self.group_a], group_names[self.group_b]
        return [f"{self.kind}[{a}-{b}]<={self.bound:g}", f"{self.kind}[{b}-{a}]<={self.bound:g}"]

    def _two_sided(self, gap: torch.Tensor) -> torch.Tensor:
        """``|gap| <= bound`` written as the two inequalities ``±gap - bound <= 0``."""
        return torch.stack([gap - self.bound, -gap - self.bound])


class LossGap(Constraint):
    r"""Loss gap between two groups: :math:`|\bar\ell_a - \bar\ell_b| \le b`.

    :math:`\bar\ell_g` is the mean binary cross-entropy over the minibatch rows of group g. This
    is the constraint of the Folktables benchmark (Kliachkin et al., arXiv 2507.04033), there
    with b = 0.005 between white and non-white respondents. Statistics: ``[Σ_a ℓ, n_a, Σ_b ℓ,
    n_b]``.
    """

    kind = "loss_gap"
    num_values = 2
    num_statistics = 4

    def statistics(
        self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return torch.cat(
            [_group_sums(losses, groups, self.group_a), _group_sums(losses, groups, self.group_b)]
        )

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        gap = _mean(stats[0], stats[1]) - _mean(stats[2], stats[3])
        return self._two_sided(gap)


class PositiveRateGap(Constraint):
    r"""Demographic parity: :math:`|P(\hat y=1 \mid a) - P(\hat y=1 \mid b)| \le b`.

    The hard rate (share of rows with logit > 0) has zero gradient almost everywhere, so
    training follows a sigmoid surrogate :math:`\sigma(z)` of the indicator (the surrogate /
    strict split of Cooper, Gallego-Posada et al.), while ``strict=True`` reports the hard rate
    that feasibility is judged on. Statistics: ``[Σ_a σ, Σ_a 1[z>0], n_a, Σ_b σ, Σ_b 1[z>0],
    n_b]``.
    """

    kind = "positive_rate_gap"
    num_values = 2
    num_statistics = 6

    def statistics(
        self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        soft = torch.sigmoid(logits)
        hard = (logits > 0).to(logits.dtype)
        parts = []
        for group in (self.group_a, self.group_b):
            member = (groups == group).to(logits.dtype)
            parts.append(torch.stack([(soft * member).sum(), (hard * member).sum(), member.sum()]))
        return torch.cat(parts)

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        offset = 1 if strict else 0
        rate_a = _mean(stats[0 + offset], stats[2])
        rate_b = _mean(stats[3 + offset], stats[5])
        return self._two_sided(rate_a - rate_b)


CONSTRAINTS: dict[str, type[Constraint]] = {c.kind: c for c in (LossGap, PositiveRateGap)}


class ConstrainedProblem:
    """The objective (mean BCE) and a list of constraints, read through one statistics vector.

    Layout of the vector: ``[Σ ℓ, n, stats of constraint 0, stats of constraint 1, ...]``. Its
    length is fixed, so workers can fuse it into a single collective.
    """

    def __init__(self, constraints: Sequence[Constraint]) -> None:
        self.constraints = list(constraints)
        self.num_constraints = sum(c.num_values for c in self.constraints)

    def statistics(
        self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        objective = torch.stack([losses.sum(), logits.new_tensor(float(logits.numel()))])
        parts = [objective] + [c.statistics(logits, labels, groups) for c in self.constraints]
        return torch.cat(parts)

    def evaluate(
        self, stats: torch.Tensor, strict: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and the stacked constraint values (``[num_constraints]``) from statistics."""
        loss = _mean(stats[0], stats[1])
        values, offset = [], 2
        for constraint in self.constraints:
            values.append(
                constraint.value(stats[offset : offset + constraint.num_statistics], strict)
            )
            offset += constraint.num_statistics
        c = torch.cat(values) if values else stats.new_zeros(0)
        return loss, c

    def names(self, group_names: Sequence[str]) -> list[str]:
        return [name for c in self.constraints for name in c.names(group_names)]


def build_constraints(specs: Sequence[Any], num_groups: int) -> list[Constraint]:
    """The constraints a spec lists (objects with ``kind`` and ``bound``), for ``num_groups``.

    The spec has validated every ``kind``; with two groups each gap is group 0 against group 1.
    """
    if num_groups != 2:
        raise ValueError(f"gap constraints need exactly two groups, the data has {num_groups}")
    return [CONSTRAINTS[spec.kind](spec.bound) for spec in specs]
