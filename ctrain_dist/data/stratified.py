"""Group-stratified minibatches: fixed rows per group a batch, at least a minimum or equal.

Why: a constraint on a small group is estimated from that group's rows only; with Adult's
one-third women a 64-row batch holds about 21 of them, and with a 5 % minority about 3, so the
constraint estimate (and every switching or dual decision made on it) is noisy or, when the
group is absent, meaningless. Fixing a minimum count per group bounds that noise.

Why the objective stays unbiased: the batch composition is fixed, ``n_g`` rows of group g
drawn uniformly within the group, and every row of group g carries the design weight
``w_g = π_g B / n_g`` (``π_g`` the group's share of the training rows, ``B`` the batch size).
The weighted mean ``Σ_g w_g Σ_{r∈g} ℓ_r / Σ w = Σ_g π_g (mean of ℓ over g's rows)`` has
expectation ``Σ_g π_g μ_g = μ``, the population mean, exactly (``Σ w = B`` is constant, so
there is no ratio bias). Per-group means are untouched, because a weight constant within a
group cancels in them. The problem's statistics take these weights (``constraints.py``).

Quotas, two ways (:func:`sampler_quotas`, the one place that decides them):

* ``min_group_count = m``: ``n_g = max(m, round(π_g B))``, then adjusted to sum to ``B`` by the
  largest remainders, taking from groups above ``m`` when the minimums overshoot;
* ``rows_per_group = n``: ``n_g = n`` for every group, ``B = n G`` (group-balanced batches, as
  humancompatible.train's ``BalancedBatchSampler`` draws them and its Folktables benchmark
  draws each constraint's sample: a fixed number of rows per group).

A separate constraint draw (:class:`ConstraintBatchSampler`, ``constraint_rows_per_group = n``):
the objective keeps its own batch (plain, or stratified as above) and every oracle call adds
``n`` rows of every group that only the constraints read, as humancompatible.train's benchmark
drew them (its ``FairnessConstraint`` samples ``batch_size`` rows of each group per constraint
estimate, its algorithms a separate uniform ``batch_size`` batch for the loss). A small group
is then in every constraint estimate, with no reweighting of the objective at all.

Within a group the rows come from that group's own seeded permutations, epoch after epoch, so
small groups are revisited more often than large ones (that is the point). A design weight
``π_g B / n_g`` may be well below 1 (a 0.5 % group with 4 of 64 rows: 0.08), so a group's
weighted count may be too; per-group means divide by that true count (``constraints``).
"""

from __future__ import annotations

from typing import Any

import torch

from ctrain_dist.data.sampler import MinibatchSampler


def group_sizes(rows: torch.Tensor, groups: torch.Tensor, num_groups: int) -> list[int]:
    """How many of ``rows`` each group holds (``groups``: every row's group id)."""
    return torch.bincount(groups[rows], minlength=num_groups).tolist()


def sampler_quotas(
    sizes: list[int],
    batch_size: int,
    min_group_count: int | None = None,
    rows_per_group: int | None = None,
) -> list[int] | None:
    """Rows per group a batch for the training options (``None``: plain uniform batches).

    Raises:
        ValueError: a quota the groups' sizes or the batch cannot meet, saying why.
    """
    if rows_per_group is not None:
        return balanced_quotas(sizes, batch_size, rows_per_group)
    if min_group_count is not None:
        return quotas(sizes, batch_size, min_group_count)
    return None


def balanced_quotas(sizes: list[int], batch_size: int, rows: int) -> list[int]:
    """``rows`` rows of every group, which must make up the batch exactly."""
    if rows * len(sizes) != batch_size:
        raise ValueError(
            f"rows_per_group {rows} × {len(sizes)} groups is {rows * len(sizes)} rows, not "
            f"batch_size {batch_size}; set batch_size to {rows * len(sizes)}"
        )
    smallest = min(sizes)
    if smallest < rows:
        raise ValueError(f"a group has only {smallest} training rows, below rows_per_group")
    return [rows] * len(sizes)


def quotas(sizes: list[int], batch_size: int, minimum: int) -> list[int]:
    """Rows per group a batch: proportional, at least ``minimum``, summing to ``batch_size``."""
    total = sum(sizes)
    if minimum * len(sizes) > batch_size:
        raise ValueError(
            f"min_group_count {minimum} × {len(sizes)} groups exceeds batch_size {batch_size}"
        )
    smallest = min(sizes)
    if smallest < minimum:
        raise ValueError(f"a group has only {smallest} training rows, below min_group_count")
    exact = [batch_size * size / total for size in sizes]
    counts = [max(minimum, int(share)) for share in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda g: exact[g] - int(exact[g]), reverse=True)
    while sum(counts) < batch_size:
        for g in by_remainder:
            if sum(counts) < batch_size and counts[g] < sizes[g]:
                counts[g] += 1
    while sum(counts) > batch_size:
        above = [g for g in range(len(sizes)) if counts[g] > minimum]
        g = max(above, key=lambda g: counts[g] - exact[g])
        counts[g] -= 1
    return counts


class StratifiedSampler:
    """Fixed per-group quotas ``counts`` each batch; ``weights`` are the rows' design weights.

    Same interface as :class:`MinibatchSampler` (``next``, ``samples_drawn``, ``epochs``,
    ``state_dict``); ``next()`` returns the group blocks concatenated in group order, and
    ``weights`` is aligned with that order and constant across batches.
    """

    def __init__(
        self,
        rows: torch.Tensor,
        groups: torch.Tensor,
        num_groups: int,
        counts: list[int],
        seed: int,
    ) -> None:
        batch_size = sum(counts)
        if batch_size > rows.numel():
            raise ValueError(f"batch_size {batch_size} exceeds the {rows.numel()} training rows")
        row_groups = groups[rows]
        members = [rows[row_groups == g] for g in range(num_groups)]
        sizes = [int(m.numel()) for m in members]
        self.rows = rows
        self.batch_size = batch_size
        self.counts = counts
        self.samplers = [
            MinibatchSampler(member, count, seed * num_groups + g)
            for g, (member, count) in enumerate(zip(members, counts, strict=True))
        ]
        shares = [size / rows.numel() for size in sizes]
        self.weights = torch.cat(
            [
                torch.full((count,), share * batch_size / count, dtype=torch.float64)
                for share, count in zip(shares, counts, strict=True)
            ]
        ).to(rows.device)
        self.samples_drawn = 0

    def next(self) -> torch.Tensor:
        self.samples_drawn += self.batch_size
        return torch.cat([sampler.next() for sampler in self.samplers])

    @property
    def epochs(self) -> float:
        return self.samples_drawn / self.rows.numel()

    def state_dict(self) -> dict[str, Any]:
        return {
            "samplers": [sampler.state_dict() for sampler in self.samplers],
            "samples_drawn": self.samples_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for sampler, saved in zip(self.samplers, state["samplers"], strict=True):
            sampler.load_state_dict(saved)
        self.samples_drawn = int(state["samples_drawn"])


CONSTRAINT_STREAM = 1_000_003
"""Added to a trial's seed for its constraint draw, so that stream is not the objective's."""


class ConstraintBatchSampler:
    """Each call, the objective's minibatch, then a group-balanced minibatch for the constraints.

    ``next()`` returns both blocks concatenated, so a step gathers and forwards them at once;
    which rows serve which role is in the weights, each aligned with that order and constant:
    ``objective_weights`` is the objective sampler's design weights (1 for a plain one) on its
    rows and 0 on the constraint rows, ``constraint_weights`` 0 on the objective rows and the
    balanced draw's design weights on its own. Every statistic is a weighted sum, so each role
    reads only its own rows, exactly, however the rows are sliced among workers. Same interface
    as the other samplers; ``samples_drawn`` counts the rows of both blocks.
    """

    def __init__(
        self, objective: MinibatchSampler | StratifiedSampler, constraints: StratifiedSampler
    ) -> None:
        self.objective = objective
        self.constraints = constraints
        self.rows = objective.rows
        self.batch_size = objective.batch_size + constraints.batch_size
        own = design_weights(objective)
        if own is None:
            own = torch.ones(objective.batch_size, dtype=torch.float64, device=self.rows.device)
        self.objective_weights = torch.cat([own, torch.zeros_like(constraints.weights)])
        self.constraint_weights = torch.cat([torch.zeros_like(own), constraints.weights])

    def next(self) -> torch.Tensor:
        return torch.cat([self.objective.next(), self.constraints.next()])

    @property
    def samples_drawn(self) -> int:
        return self.objective.samples_drawn + self.constraints.samples_drawn

    @property
    def epochs(self) -> float:
        return self.samples_drawn / self.rows.numel()

    def state_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective.state_dict(),
            "constraints": self.constraints.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state["objective"])
        self.constraints.load_state_dict(state["constraints"])


Sampler = MinibatchSampler | StratifiedSampler | ConstraintBatchSampler


def build_sampler(
    rows: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    batch_size: int,
    seed: int,
    *,
    min_group_count: int | None = None,
    rows_per_group: int | None = None,
    constraint_rows_per_group: int | None = None,
) -> Sampler:
    """The trainer's sampler: stratified when a quota option is set, plain otherwise, and
    with its own balanced constraint draw when ``constraint_rows_per_group`` is set."""
    sizes = group_sizes(rows, groups, num_groups)
    counts = sampler_quotas(sizes, batch_size, min_group_count, rows_per_group)
    if counts is None:
        sampler: MinibatchSampler | StratifiedSampler = MinibatchSampler(rows, batch_size, seed)
    else:
        sampler = StratifiedSampler(rows, groups, num_groups, counts, seed)
    if constraint_rows_per_group is None:
        return sampler
    balanced = constraint_quotas(sizes, constraint_rows_per_group)
    draw = StratifiedSampler(rows, groups, num_groups, balanced, seed + CONSTRAINT_STREAM)
    return ConstraintBatchSampler(sampler, draw)


def constraint_quotas(sizes: list[int], rows: int) -> list[int]:
    """``rows`` rows of every group for the separate constraint draw.

    Raises:
        ValueError: a group with fewer training rows than that.
    """
    smallest = min(sizes)
    if smallest < rows:
        raise ValueError(f"a group has only {smallest} training rows, below {rows}")
    return [rows] * len(sizes)


def design_weights(sampler: Sampler) -> torch.Tensor | None:
    """Row weights of the objective in the sampler's batches (``None``: all rows weigh 1)."""
    if isinstance(sampler, ConstraintBatchSampler):
        return sampler.objective_weights
    return sampler.weights if isinstance(sampler, StratifiedSampler) else None


def constraint_weights(sampler: Sampler) -> torch.Tensor | None:
    """Row weights of the constraints (``None``: the objective's, the rows are shared)."""
    return sampler.constraint_weights if isinstance(sampler, ConstraintBatchSampler) else None
