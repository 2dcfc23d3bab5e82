"""A bound on the model's weights, kept in the additive-statistics contract."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctrain_dist.constraints.base import Constraint, DecideOn, row_weights, true_mean


class WeightNorm(Constraint):
    r"""Per-layer Frobenius norm bound: :math:`\|W_l\|_F \le b` for every weight matrix.

    It reads the model's parameters, not the batch, yet keeps the additive contract: the
    statistics are :math:`[\sum_r w_r,\; \|W_1\|_F^2 \sum_r w_r, \dots]`, a per-row constant
    summed over rows. All ranks hold the same parameters, so after the all-reduce the ratio is
    exactly :math:`\|W_l\|_F^2` whatever the shard sizes, and the exact-gradient construction
    of DESIGN.md gives every rank :math:`\nabla \|W_l\|_F` after DDP averages gradients (rank
    r contributes the share :math:`n_r / n` of it). Nothing outside the statistics vector, so
    nothing extra is communicated. Weight matrices are the model's parameters with two or more
    dimensions, in ``model.parameters()`` order (biases are not bounded); the constraint holds
    references to them, so it always reads the current values. Its surrogate is its strict
    value, and every minibatch defines it.
    """

    kind = "weight_norm"

    def __init__(self, bound: float, model: nn.Module, decide_on: DecideOn = "strict") -> None:
        super().__init__(bound, decide_on)
        self.weights = [p for p in model.parameters() if p.ndim >= 2]
        self.num_values = len(self.weights)
        self.num_statistics = self.num_values + 1

    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rows = row_weights(logits, weights).sum()
        squares = torch.stack([(w.to(logits.dtype) ** 2).sum() for w in self.weights])
        return torch.cat([rows[None], squares * rows])

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        norms = torch.sqrt(true_mean(stats[1:], stats[0]))
        return norms - self.bound

    def names(self, group_names: Sequence[str]) -> list[str]:
        return [f"weight_norm[layer{i}]<={self.bound:g}" for i in range(self.num_values)]
