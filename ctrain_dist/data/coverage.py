"""How often a minibatch leaves a group, or a (group, label) cell, without a single row.

Why: a constraint comparison whose group is absent from a minibatch is skipped that step
(``constraints``), so a sampler that skips it in a large share of steps estimates, and drives
the multipliers with, only the remaining steps. This module computes that share exactly from
the training split, so the spec can warn before anything starts (``spec.check_sampling``).

The sampler draws without replacement within strata: the whole training split for plain
uniform batches, each group for stratified ones (``stratified.sampler_quotas``). A stratum of
``N`` rows with ``B`` drawn misses a set of cells holding ``n`` of its rows with the
hypergeometric probability ``C(N − n, B) / C(N, B)``. Cells of a stratum are disjoint, so
inclusion–exclusion over them is exact; strata are drawn independently, so
``P(some cell empty) = 1 − Π_s (1 − P_s)``. Cells below ``NEGLIGIBLE`` alone are left out of
the inclusion–exclusion (their terms are smaller still), which keeps it to the few cells that
matter whatever the number of groups.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ctrain_dist.data.tabular import TabularData

NEGLIGIBLE = 1e-12
"""A cell missed with a smaller probability than this is left out of the sum."""


@dataclass(frozen=True)
class Cell:
    """Rows of one group (``label`` None) or of one (group, label) cell, within a stratum."""

    group: int
    label: int | None
    rows: int


@dataclass(frozen=True)
class Stratum:
    """Rows a batch draws ``drawn`` of, without replacement, and the cells among them."""

    rows: int
    drawn: int
    cells: tuple[Cell, ...]


def miss_probability(rows: int, drawn: int, missed: int) -> float:
    """``C(rows − missed, drawn) / C(rows, drawn)``: ``drawn`` rows avoid ``missed`` of them."""
    if rows - missed < drawn:
        return 0.0
    log = (
        math.lgamma(rows - missed + 1)
        - math.lgamma(rows - missed - drawn + 1)
        - math.lgamma(rows + 1)
        + math.lgamma(rows - drawn + 1)
    )
    return math.exp(log)


def _stratum_probability(stratum: Stratum) -> float:
    cells = [
        c
        for c in stratum.cells
        if miss_probability(stratum.rows, stratum.drawn, c.rows) >= NEGLIGIBLE
    ]
    total = 0.0
    for size in range(1, len(cells) + 1):
        for subset in itertools.combinations(cells, size):
            missed = sum(c.rows for c in subset)
            total += (-1) ** (size + 1) * miss_probability(stratum.rows, stratum.drawn, missed)
    return min(1.0, max(0.0, total))


def empty_probability(strata: list[Stratum]) -> float:
    """The probability that a batch leaves at least one cell of ``strata`` empty."""
    return 1.0 - math.prod(1.0 - _stratum_probability(s) for s in strata)


def worst_cell(strata: list[Stratum]) -> tuple[Cell, float]:
    """The cell most often empty, and how often."""
    scored = [
        (cell, miss_probability(s.rows, s.drawn, cell.rows)) for s in strata for cell in s.cells
    ]
    return max(scored, key=lambda pair: pair[1])


def batch_strata(
    counts: dict[tuple[int, int], int], quotas: list[int] | None, batch_size: int, by_label: bool
) -> list[Stratum]:
    """The strata of a sampler over a training split with ``counts[(group, label)]`` rows.

    ``quotas``: rows per group a batch (stratified) or None (uniform); ``by_label``: whether
    the constraints need every (group, label) cell (equalized odds) or every group only.
    """
    groups = sorted({g for g, _ in counts})
    group_rows = {g: sum(n for (h, _), n in counts.items() if h == g) for g in groups}

    def cells(members: list[int]) -> tuple[Cell, ...]:
        if by_label:
            return tuple(Cell(g, y, n) for (g, y), n in sorted(counts.items()) if g in members)
        return tuple(Cell(g, None, group_rows[g]) for g in members)

    if quotas is None:
        return [Stratum(sum(group_rows.values()), batch_size, cells(groups))]
    return [Stratum(group_rows[g], quotas[g], cells([g])) for g in groups]


def split_strata(
    data: TabularData, split: str, batch_size: int, quotas: list[int] | None, by_label: bool
) -> list[Stratum]:
    """:func:`batch_strata` of a sampler over ``data``'s ``split``, every cell counted (an
    absent one with 0 rows: always empty)."""
    rows = data.splits[split]
    cells = data.groups[rows] * 2 + (data.labels[rows] > 0.5).long()
    tally = torch.bincount(cells, minlength=2 * data.num_groups).tolist()
    counts = {(g, y): tally[2 * g + y] for g in range(data.num_groups) for y in (0, 1)}
    return batch_strata(counts, quotas, batch_size, by_label)
