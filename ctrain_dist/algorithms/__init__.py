"""Algorithms by name: one file each, torch.optim-like (see ``base``), over one dual variable
(``multiplier``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from ctrain_dist.algorithms.alm import ALM
from ctrain_dist.algorithms.base import (
    Algorithm,
    Estimate,
    Hyperparameters,
    Sample,
    StepInfo,
    Term,
    draw,
)
from ctrain_dist.algorithms.fairret_baseline import Fairret
from ctrain_dist.algorithms.ghost import StochasticGhost
from ctrain_dist.algorithms.ialm import IALM
from ctrain_dist.algorithms.multiplier import Multiplier
from ctrain_dist.algorithms.nupi import NuPI
from ctrain_dist.algorithms.pbm import PBM
from ctrain_dist.algorithms.penalty import Penalty
from ctrain_dist.algorithms.spbm import SPBM
from ctrain_dist.algorithms.ssl_alm import SSLALM
from ctrain_dist.algorithms.switching_subgradient import SwitchingSubgradient
from ctrain_dist.algorithms.unconstrained import SGD, Adam
from ctrain_dist.plugins import Registry

_BUILTIN = (
    SGD,
    Adam,
    Penalty,
    Fairret,
    ALM,
    SSLALM,
    IALM,
    SwitchingSubgradient,
    StochasticGhost,
    PBM,
    SPBM,
    NuPI,
)
ALGORITHMS: Registry[type[Algorithm]] = Registry(
    {cls.name: cls for cls in _BUILTIN}, "ctrain_dist.algorithms"
)
"""The built-ins, the ``ctrain_dist.algorithms`` entry points of installed packages, and any
``package.module:Class`` import path (``plugins.Registry``)."""

RENAMED: dict[str, str] = {
    "pbm": "classical_pbm (Ben-Tal & Zibulevsky's outer-loop method, called pbm before) or "
    "spbm (humancompatible.train's stochastic PBM)",
}
"""Names no longer registered, and what to write instead: refused with this hint (``spec``)
rather than resolved to a method its user may not mean."""

__all__ = [
    "ALGORITHMS",
    "RENAMED",
    "Algorithm",
    "Estimate",
    "Hyperparameters",
    "Multiplier",
    "Sample",
    "StepInfo",
    "Term",
    "build_algorithm",
    "draw",
]


def build_algorithm(
    name: str,
    params: Iterable[torch.nn.Parameter],
    num_constraints: int,
    hyperparameters: dict[str, Any] | Sequence[dict[str, Any]],
    seeds: int | None = None,
    equality: Sequence[bool] | None = None,
    member_seeds: Sequence[int] | None = None,
    dual_lrs: Sequence[float | None] | None = None,
    dual_bounds: Sequence[float | None] | None = None,
) -> Algorithm:
    """An algorithm from its registry name and raw hyperparameters (validated here).

    ``seeds``: the number of packed members stacked on the parameters' leading dimension, or
    ``None`` for one model (see ``base``). ``hyperparameters``: one mapping, or one per member
    (packed configurations: they may differ in ``member_hyperparameters``). ``equality``:
    which of the ``num_constraints`` values are equalities h(x) = 0 (unset: none).
    ``member_seeds``: each member's trial seed, for methods that draw random numbers (``base``).
    ``dual_lrs``, ``dual_bounds``: each value's own dual step size and multiplier bound (None
    where its constraint sets none; ``Algorithm.dual_overrides``).
    """
    cls = ALGORITHMS[name]
    if isinstance(hyperparameters, Mapping):
        hp = cls.hyperparameters(**hyperparameters)
        return cls(
            params, num_constraints, hp, seeds, equality, member_seeds, dual_lrs, dual_bounds
        )
    members = [cls.hyperparameters(**member) for member in hyperparameters]
    return cls(
        params, num_constraints, members, seeds, equality, member_seeds, dual_lrs, dual_bounds
    )
