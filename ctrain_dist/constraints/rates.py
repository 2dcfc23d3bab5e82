"""Absolute rate bounds: a safety requirement on one group or on every row, not a gap.

E.g. "the false-negative rate of group 1 is at most 0.1" or "the positive rate is at least
0.2". Why a kind of its own: a gap constraint is met by making both groups equally bad, a
rate bound is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ctrain_dist.constraints.base import Constraint, DecideOn, Reading, row_weights, true_mean

Rate = Literal["positive_rate", "tpr", "fnr", "fpr", "tnr"]
RATES: dict[str, tuple[int | None, bool]] = {
    "positive_rate": (None, True),
    "tpr": (1, True),
    "fnr": (1, False),
    "fpr": (0, True),
    "tnr": (0, False),
}
"""Each rate as (the label of the rows it counts, or None for every row; whether it counts
predicted positives, else predicted negatives)."""


class RateBound(Constraint):
    r"""One rate of one group (or of every row) on one side of ``bound``.

    :math:`r_g \le b` (``at_least=False``) or :math:`r_g \ge b` (``at_least=True``), where
    :math:`r_g` is, over the eligible rows of group ``g`` (every row when ``group`` is None),
    the share predicted positive (``positive_rate``, ``tpr`` on positives, ``fpr`` on
    negatives) or negative (``fnr`` on positives, ``tnr`` on negatives). A proxy constraint
    as the gap rates are: the sigmoid drives the primal gradient, the hard 0/1 rate the
    decisions (``decide_on``) and what is reported. Statistics: ``[Σ w·soft, Σ w·hard, Σ w]``
    over eligible rows; undefined in a minibatch without eligible rows.
    """

    kind = "rate_bound"
    num_values = 1
    num_statistics = 3

    def __init__(
        self,
        bound: float,
        num_groups: int,
        decide_on: DecideOn = "strict",
        *,
        rate: Rate = "positive_rate",
        group: int | None = None,
        at_least: bool = False,
    ) -> None:
        super().__init__(bound, decide_on)
        if rate not in RATES:
            raise ValueError(f"unknown rate {rate!r}; use one of {', '.join(RATES)}")
        if group is not None and not 0 <= group < num_groups:
            raise ValueError(f"group {group} is not a group index 0..{num_groups - 1}")
        self.rate, self.group, self.at_least = rate, group, at_least

    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        label, positive = RATES[self.rate]
        sign = 1.0 if positive else -1.0
        soft = torch.sigmoid(sign * logits)
        hard = ((sign * logits) > 0).to(logits.dtype)
        eligible = row_weights(logits, weights)
        if label is not None:
            eligible = eligible * ((labels > 0.5) == bool(label)).to(logits.dtype)
        if self.group is not None:
            eligible = eligible * (groups == self.group).to(logits.dtype)
        return torch.stack([(eligible * soft).sum(), (eligible * hard).sum(), eligible.sum()])

    def _values(self, stats: torch.Tensor, strict: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``[1]`` values of the soft (or hard) rate, 0 where undefined, and the mask."""
        count = stats.detach()[2:3]
        defined = count > 0
        rate = true_mean(stats[1:2] if strict else stats[0:1], count)
        gap = self.bound - rate if self.at_least else rate - self.bound
        return torch.where(defined, gap, torch.zeros_like(gap)), defined

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        return self._values(stats, strict)[0]

    def estimate(self, stats: torch.Tensor) -> Reading:
        values, defined = self._values(stats, strict=False)
        decision = self._values(stats.detach(), strict=self.decide_on == "strict")[0]
        return values, decision, defined

    def names(self, group_names: Sequence[str]) -> list[str]:
        who = "all" if self.group is None else group_names[self.group]
        side = ">=" if self.at_least else "<="
        return [f"{self.kind}.{self.rate}[{who}]{side}{self.bound:g}"]
