"""Fairness constraints as additive sufficient statistics plus a value function.

Why statistics and not values: a constraint such as "mean loss of group a minus mean loss of
group b" is a ratio of sums. Sums add across minibatch shards, so one ``all_reduce(SUM)`` of a
flat statistics vector gives every worker the exact statistics of the global minibatch; the
ratios are then formed from global sums. Averaging per-shard constraint values instead is
biased whenever group counts differ between shards (DESIGN.md, "Constraints, exact under data
parallelism"). Counts are statistics too, so every worker also agrees on which groups the
global minibatch left empty.

Row weights: every sum is ``Σ w_r x_r`` and every count ``Σ w_r``. Unweighted minibatches use
``w = 1``; the group-stratified sampler (``data/stratified.py``) passes design weights that
are constant within a group, so per-group means (a sum over the true weighted count, which
may be below 1) are unchanged while pooled means (the objective, a group against the
population or the rest) stay unbiased for the population.

Modules, one job each: ``base`` (the contract, empty groups, proxy values), ``gaps`` (group
gap kinds), ``norm`` (the weight-norm bound), ``fairret`` (fairret's losses), ``problem``
(objective and constraints through one statistics vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ctrain_dist.constraints.base import Constraint, DecideOn, Reading, true_mean
from ctrain_dist.constraints.fairret import FairretLoss
from ctrain_dist.constraints.gaps import (
    GAP_CONSTRAINTS,
    EqualizedOdds,
    GroupGap,
    LossGap,
    Pairs,
    PositiveRateGap,
)
from ctrain_dist.constraints.norm import WeightNorm
from ctrain_dist.constraints.problem import ConstrainedProblem, Estimate
from ctrain_dist.constraints.rates import RateBound
from ctrain_dist.plugins import Registry

BUILTIN_SPECIFIC_CONSTRAINTS: dict[str, type[Constraint]] = {
    **GAP_CONSTRAINTS,
    WeightNorm.kind: WeightNorm,
}
"""The built-ins with a constructor of their own; every other kind is built generically as
``cls(bound, num_groups, decide_on, **options)`` (see :func:`build_constraints`)."""
CONSTRAINTS: Registry[type[Constraint]] = Registry(
    {**BUILTIN_SPECIFIC_CONSTRAINTS, RateBound.kind: RateBound, FairretLoss.kind: FairretLoss},
    "ctrain_dist.constraints",
)
"""The built-ins, the ``ctrain_dist.constraints`` entry points of installed packages, and any
``package.module:Class`` import path (``plugins.Registry``)."""

__all__ = [
    "BUILTIN_SPECIFIC_CONSTRAINTS",
    "CONSTRAINTS",
    "GAP_CONSTRAINTS",
    "ConstrainedProblem",
    "Constraint",
    "DecideOn",
    "EqualizedOdds",
    "Estimate",
    "FairretLoss",
    "GroupGap",
    "LossGap",
    "Pairs",
    "PositiveRateGap",
    "RateBound",
    "Reading",
    "WeightNorm",
    "build_constraints",
    "true_mean",
]


def build_constraints(
    specs: Sequence[Any], num_groups: int, model: nn.Module | None = None
) -> list[Constraint]:
    """The constraints a spec lists (objects with ``kind``, ``bound`` and optionally ``pairs``,
    ``decide_on`` and ``options``).

    ``num_groups`` comes from the data; gap kinds need at least two. ``model`` is needed only
    by ``weight_norm``, which bounds its weight matrices. Any other kind (``rate_bound``, an
    entry point, a ``package.module:Class``) is ``cls(bound, num_groups, decide_on,
    **options)``: the one constructor contract a user's constraint class keeps.
    """
    built: list[Constraint] = []
    for spec in specs:
        decide_on = getattr(spec, "decide_on", "strict")
        if spec.kind == WeightNorm.kind:
            if model is None:
                raise ValueError("weight_norm needs the model whose weights it bounds")
            built.append(WeightNorm(spec.bound, model, decide_on))
        elif spec.kind in GAP_CONSTRAINTS:
            pairs = getattr(spec, "pairs", "all")
            built.append(GAP_CONSTRAINTS[spec.kind](spec.bound, num_groups, pairs, decide_on))
        else:
            options = getattr(spec, "options", {})
            built.append(CONSTRAINTS[spec.kind](spec.bound, num_groups, decide_on, **options))
        built[-1].equality = bool(getattr(spec, "equality", False))
    return built
