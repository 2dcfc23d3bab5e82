"""The objective and the constraints of one problem, read through one statistics vector."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch.nn import functional

from ctrain_dist.constraints.base import Constraint, Reading, true_mean

Estimate = tuple[torch.Tensor, ...]
"""``(loss, c, decision, defined)``: the mean objective and every constraint's
:data:`~ctrain_dist.constraints.base.Reading`, stacked (``[num_constraints]`` each); a problem
with training terms adds their differentiable values (``[num_terms]``) as a fifth entry."""


class ConstrainedProblem:
    """The objective (mean BCE) and a list of constraints, read through one statistics vector.

    Layout of the vector: ``[Σ w ℓ, Σ w, stats of constraint 0, stats of constraint 1, ...,
    stats of term 0, ...]``. Its length is fixed, so workers can fuse it into a single collective.

    ``terms``: constraints read for training only (an algorithm's regulariser, such as the
    ``fairret`` baseline's loss, ``Algorithm.training_terms``): the oracle returns their values,
    summed over the same (global) minibatch as the constraints, but they are not constraints of
    the problem, so evaluation, names and feasibility never see them.
    """

    def __init__(self, constraints: Sequence[Constraint], terms: Sequence[Constraint] = ()) -> None:
        self.constraints = list(constraints)
        self.terms = list(terms)
        self.num_constraints = sum(c.num_values for c in self.constraints)
        sizes = [c.num_statistics for c in [*self.constraints, *self.terms]]
        self._offsets = list(itertools.accumulate([2, *sizes]))
        self.equality = [c.equality for c in self.constraints for _ in range(c.num_values)]
        """``[num_constraints]``: which values are equalities h = 0 (``Constraint.equality``)."""
        self._held = [not _builtin(c) for c in self.constraints]
        """Which constraints are a user's, whose readings are held to the contract that an
        undefined value reads 0 (``base``): algorithms rely on it, ascending along decision
        values without a mask. The built-in ones keep it by construction (and are tested)."""

    def violations(self, values: torch.Tensor) -> torch.Tensor:
        """How far each value is from feasible, before the ``max(0, ·)``: ``h`` for an
        inequality, ``|h|`` for an equality (the last dimension is the values')."""
        if not any(self.equality):
            return values
        mask = torch.tensor(self.equality, dtype=torch.bool, device=values.device)
        return torch.where(mask, values.abs(), values)

    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        constraint_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The flat statistics vector; the objective's sums use ``weights``, the constraints'
        ``constraint_weights`` when given (a separate constraint draw in the same rows, 0 on
        the objective's rows and they 0 on its: ``data.stratified.ConstraintBatchSampler``)."""
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        for_constraints = weights if constraint_weights is None else constraint_weights
        parts = [torch.stack(self._objective(losses, weights))] + [
            c.statistics(logits, labels, groups, for_constraints, losses)
            for c in [*self.constraints, *self.terms]
        ]
        return torch.cat(parts)

    @staticmethod
    def _objective(
        losses: torch.Tensor, weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Σ w ℓ`` and ``Σ w``."""
        if weights is None:
            return losses.sum(), losses.new_full((), losses.numel())
        w = weights.to(losses.dtype)
        return (w * losses).sum(), w.sum()

    def _slices(self, stats: torch.Tensor) -> list[tuple[Constraint, torch.Tensor]]:
        """Each constraint's statistics (the terms' follow them, see :meth:`_term_values`)."""
        pairs = zip(self.constraints, itertools.pairwise(self._offsets), strict=False)
        return [(c, stats[start:end]) for c, (start, end) in pairs]

    def _term_values(self, stats: torch.Tensor) -> torch.Tensor:
        """The terms' differentiable values from (global) statistics, ``[num_terms]``."""
        bounds = itertools.pairwise(self._offsets[len(self.constraints) :])
        values = [t.estimate(stats[a:b])[0] for t, (a, b) in zip(self.terms, bounds, strict=True)]
        return _concat(values, stats)

    @staticmethod
    def _loss(stats: torch.Tensor) -> torch.Tensor:
        """The mean loss; the row count ``Σ w`` is detached: it never depends on the
        parameters, so its branch needs no backward pass."""
        return true_mean(stats[0], stats.detach()[1])

    def evaluate(
        self, stats: torch.Tensor, strict: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and the stacked constraint values (``[num_constraints]``) from statistics."""
        values = [c.value(part, strict) for c, part in self._slices(stats)]
        return self._loss(stats), _concat(values, stats)

    def estimate(self, stats: torch.Tensor) -> Estimate:
        """What a training step reads from (global) statistics: loss and stacked readings."""
        readings = [c.estimate(part) for c, part in self._slices(stats)]
        readings = self._held_to_contract(readings)
        estimate = (self._loss(stats), *self._stack(readings, stats))
        return (*estimate, self._term_values(stats)) if self.terms else estimate

    def batch_estimate(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        constraint_weights: torch.Tensor | None = None,
    ) -> Estimate:
        """``estimate(statistics(...))`` for one process, where nothing is all-reduced.

        The same numbers, computed without the flat vector: each value reads its own
        statistics, so the loss's gradient no longer flows back through every constraint's
        statistics (and theirs not through the objective's). On a small MLP the backward
        pass is mostly per-node overhead, so that is a tenth of a step saved.
        """
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        if weights is None:  # the count is the batch's rows, never 0: no guard to apply
            loss = losses.mean()
        else:
            total, count = self._objective(losses, weights)
            loss = true_mean(total, count.detach())
        for_constraints = weights if constraint_weights is None else constraint_weights
        readings = [
            c.batch_estimate(logits, labels, groups, for_constraints, losses)
            for c in self.constraints
        ]
        readings = self._held_to_contract(readings)
        estimate = (loss, *self._stack(readings, losses))
        if not self.terms:
            return estimate
        terms = [
            t.batch_estimate(logits, labels, groups, for_constraints, losses)[0] for t in self.terms
        ]
        return (*estimate, _concat(terms, losses))

    def _held_to_contract(self, readings: list[Reading]) -> list[Reading]:
        """A user constraint's values and decision values 0 where it says they are undefined,
        whatever it computed there; the built-in readings as they are (no operation)."""
        if not any(self._held):
            return readings
        return [
            _zero_where_undefined(reading) if held else reading
            for reading, held in zip(readings, self._held, strict=True)
        ]

    @staticmethod
    def _stack(readings: list[Reading], like: torch.Tensor) -> Reading:
        """The readings' three parts, each concatenated over the constraints (one reading as
        it is)."""
        if len(readings) == 1:
            return readings[0]
        columns = zip(*readings, strict=True) if readings else ((), (), ())
        values, decisions, defined = (list(column) for column in columns)
        return _concat(values, like), _concat(decisions, like), _concat(defined, like, torch.bool)

    def names(self, group_names: Sequence[str]) -> list[str]:
        return [name for c in self.constraints for name in c.names(group_names)]


def _concat(
    parts: list[torch.Tensor], like: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``parts`` concatenated; one part as it is (no copy), none as an empty tensor of
    ``like``'s device and dtype (or ``dtype``), made only then: a step should not pay for it."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts) if parts else like.new_zeros(0, dtype=dtype)


def _builtin(constraint: Constraint) -> bool:
    """Whether ``constraint`` is one of this package's classes (not a user's subclass)."""
    return type(constraint).__module__.startswith("ctrain_dist.")


def _zero_where_undefined(reading: Reading) -> Reading:
    values, decision, defined = reading
    return torch.where(defined, values, 0.0), torch.where(defined, decision, 0.0), defined
