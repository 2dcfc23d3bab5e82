r"""fairret's fairness losses (Buyl, Defrance & De Bie, ICLR 2024) as additive statistics.

fairret (the PyPI package ``fairret``) measures unfairness through a *linear-fractional
statistic* of the predicted probabilities :math:`p_r = \sigma(z_r)`: each row contributes a
numerator :math:`a_r + b_r p_r` and a denominator :math:`c_r + d_r p_r`, whose coefficients
depend on the label alone (``PositiveRate``: 0, 1, 1, 0; ``Accuracy``: 1 − y, 2y − 1, 1, 0; …).
The statistic of group :math:`s` and the overall one are

.. math::
    \gamma_s = \frac{\sum_{r \in s} (a_r + b_r p_r)}{\sum_{r \in s} (c_r + d_r p_r)}, \qquad
    \gamma = \frac{\sum_r (a_r + b_r p_r)}{\sum_r (c_r + d_r p_r)},

and its violation losses (``NormLoss``, ``LSELoss``) penalise :math:`v_s = |\gamma_s / \gamma - 1|`:
:math:`\|v\|_p`, or :math:`\log \sum_s e^{v_s} - \log S`.

Why statistics: :math:`\gamma_s` and :math:`\gamma` are ratios of sums, so the loss is a function
of ``2S + 2`` weighted sums, the contract of every constraint here (``base``): one all-reduce
gives every rank the loss of the global minibatch under data parallelism, exactly, and packed
seeds batch it with ``vmap``. The coefficients are fairret's own (its statistic objects'
``num_intercept``, ``num_slope``, ``denom_intercept``, ``denom_slope``), and so is the penalty
of the violation vector (its loss objects' ``penalize_violation``); only the sums are formed
here. On a batch without empty groups and with unit weights the value equals fairret's
``loss(logits, one_hot(groups), labels)`` (``tests/test_fairret.py`` checks value and gradient).

Where the two differ, on purpose: rows carry weights (design weights of stratified batches,
``data/stratified.py``: per-group statistics are unchanged, the overall target becomes the
population's); a group without rows in the minibatch (a zero denominator) adds no violation,
where fairret's ``safe_div`` would read its statistic as 0 and its violation as 1; and a minibatch
whose overall statistic is 0 leaves the value undefined (0, no gradient), where fairret raises.

Not offered: fairret's projection losses (``KLProjectionLoss`` and the other divergences). They
project each minibatch's predictions onto the fair set with a cvxpy solve on the host, row by
row: not a function of additive sums (so not exact under data parallelism), a host solve in
every step, and cvxpy is not a dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from fairret.loss import LSELoss, NormLoss
from fairret.statistic import (
    Accuracy,
    FalseNegativeFalsePositiveFraction,
    FalseOmissionRate,
    FalsePositiveRate,
    LinearFractionalStatistic,
    PositivePredictiveValue,
    PositiveRate,
    TruePositiveRate,
)

from ctrain_dist.constraints.base import (
    Constraint,
    DecideOn,
    Reading,
    group_membership,
    row_weights,
)

STATISTICS: dict[str, tuple[type[LinearFractionalStatistic], bool]] = {
    "positive_rate": (PositiveRate, False),
    "true_positive_rate": (TruePositiveRate, True),
    "false_positive_rate": (FalsePositiveRate, True),
    "positive_predictive_value": (PositivePredictiveValue, True),
    "false_omission_rate": (FalseOmissionRate, True),
    "accuracy": (Accuracy, True),
    "false_negative_false_positive_fraction": (FalseNegativeFalsePositiveFraction, True),
}
"""fairret's linear-fractional statistics by name: the class, and whether its coefficients
read the labels (every one but the positive rate)."""
LOSSES = ("norm", "lse")
"""fairret's violation losses: ``NormLoss`` and ``LSELoss``."""


class FairretLoss(Constraint):
    """fairret's violation loss of one statistic over the groups, at most ``bound``.

    A training term of the ``fairret`` algorithm (bound 0: its value is the loss) and a
    constraint kind of its own (``kind: fairret``, ``options: {statistic, loss, p}``).
    Statistics: ``[Σ w·num, Σ w·den]`` for each group, then for every row, ``2S + 2`` in all.
    The loss is smooth and has no hard version: its strict value is the value itself.
    """

    kind = "fairret"
    num_values = 1

    def __init__(
        self,
        bound: float,
        num_groups: int,
        decide_on: DecideOn = "strict",
        *,
        statistic: str = "accuracy",
        loss: str = "norm",
        p: float = 1.0,
    ) -> None:
        super().__init__(bound, decide_on)
        if statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}; use one of {', '.join(STATISTICS)}")
        if loss not in LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}; use norm or lse (fairret's projection losses need a "
                "cvxpy solve per minibatch and are not offered)"
            )
        if num_groups < 2:
            raise ValueError(f"a fairret loss needs at least two groups, got {num_groups}")
        cls, self.reads_labels = STATISTICS[statistic]
        self.statistic_name, self.loss_name, self.p = statistic, loss, p
        self.statistic = cls()
        self.loss = NormLoss(self.statistic, p=p) if loss == "norm" else LSELoss(self.statistic)
        self.num_groups = num_groups
        self.num_statistics = 2 * num_groups + 2

    def _linear(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[n, 2]``: each row's numerator and denominator, fairret's coefficients."""
        args = (labels,) if self.reads_labels else ()
        p = torch.sigmoid(logits)
        s = self.statistic
        num = s.num_intercept(*args) + s.num_slope(*args) * p
        den = s.denom_intercept(*args) + s.denom_slope(*args) * p
        return torch.stack([num, den], dim=-1)

    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        linear = self._linear(logits, labels) * row_weights(logits, weights)[:, None]
        per_group = group_membership(groups, self.num_groups, logits.dtype) @ linear  # [S, 2]
        return torch.cat([per_group.reshape(-1), linear.sum(0)])

    def _values(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[1]`` loss minus bound (0 where undefined) and its mask."""
        per_group = stats[: 2 * self.num_groups].view(self.num_groups, 2)
        num, den = per_group[:, 0], per_group[:, 1]
        overall_num, overall_den = stats[-2], stats[-1]
        present = den.detach() != 0
        target = overall_num / torch.where(overall_den != 0, overall_den, 1.0)
        defined = (overall_den.detach() != 0) & (target.detach() != 0)
        ratio = num / torch.where(present, den, 1.0) / torch.where(defined, target, 1.0)
        violation = torch.where(present & defined, (ratio - 1).abs(), 0.0)
        value = (self.loss.penalize_violation(violation) - self.bound).reshape(1)
        return torch.where(defined, value, 0.0), defined.reshape(1)

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        return self._values(stats)[0]

    def estimate(self, stats: torch.Tensor) -> Reading:
        values, defined = self._values(stats)
        return values, values.detach(), defined

    def names(self, group_names: Sequence[str]) -> list[str]:
        order = f"{self.p:g}" if self.loss_name == "norm" else ""
        return [f"fairret.{self.loss_name}{order}.{self.statistic_name}<={self.bound:g}"]
