"""Algorithms by name: one file each, torch.optim-like (see ``base``)."""

from __future__ import annotations

from .base import Algorithm, Estimate, Hyperparameters
from .ssl_alm import SSLALM
from .switching_subgradient import SwitchingSubgradient
from .unconstrained import SGD, Adam

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (SGD, Adam, SSLALM, SwitchingSubgradient)
}

__all__ = ["ALGORITHMS", "Algorithm", "Estimate", "Hyperparameters", "build_algorithm"]


def build_algorithm(name: str, params, num_constraints: int, hyperparameters: dict) -> Algorithm:
    """An algorithm from its registry name and raw hyperparameters (validated here)."""
    cls = ALGORITHMS[name]
    return cls(params, num_constraints, cls.hyperparameters(**hyperparameters))
