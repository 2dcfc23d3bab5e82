"""Gaps between per-group means: loss gap, demographic parity, equalized odds.

Groups: ``G`` groups numbered ``0..G-1`` (intersectional groups such as sex × race are built on
the data side and arrive as one id). Gap constraints compare per-group means in one of three
ways (``pairs``): ``all`` (every pair a < b), ``vs_rest`` (each group against all other rows)
or ``vs_population`` (each group against every row). Each comparison is two-sided,
``|gap| <= bound``, so it contributes two values, ``gap - bound`` and ``-gap - bound``.

Empty groups: a comparison is defined when both of its sides have rows (eligible rows: the
positives of a true-positive rate) in the minibatch; otherwise both of its values read 0, with
no gradient, and are marked undefined (``base``). With more than two groups only the
comparisons that touch the empty group drop out.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn import functional

from ctrain_dist.constraints.base import (
    Constraint,
    DecideOn,
    Reading,
    group_membership,
    true_mean,
)

Pairs = Literal["all", "vs_rest", "vs_population"]


class GroupGap(Constraint):
    """Gaps between per-group means of per-row quantities (the shared machinery of gap kinds).

    A subclass says which per-row quantities it averages (``channels``), over which rows each
    channel counts (``_quantities``: e.g. only positives for a true-positive rate), and which
    channel training follows versus which is judged. Statistics: for each group and channel,
    the weighted sum and the weighted count of eligible rows, laid out ``[G, channels, 2]``.
    """

    channels: int
    measures: tuple[str, ...]
    """Names of the compared rates, one per block of values (e.g. ``("tpr", "fpr")``)."""
    proxy: bool
    """Whether the surrogate differs from the strict value (rates: sigmoid vs 0/1)."""

    def __init__(
        self,
        bound: float,
        num_groups: int,
        pairs: Pairs = "all",
        decide_on: DecideOn = "strict",
    ) -> None:
        super().__init__(bound, decide_on)
        if num_groups < 2:
            raise ValueError(f"a gap constraint needs at least two groups, got {num_groups}")
        self.num_groups = num_groups
        self.pairs = pairs
        self.comparisons: list[tuple[int, int | None]] = (
            list(itertools.combinations(range(num_groups), 2))
            if pairs == "all"
            else [(g, None) for g in range(num_groups)]
        )
        self.num_statistics = num_groups * self.channels * 2
        self.num_values = 2 * len(self.comparisons) * len(self.measures)
        self._constants: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def _layout(
        self, strict: bool, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, ...]:
        """Constants the values are read with, built once per (mode, dtype, device).

        For ``pairs="all"``: ``contrast`` ``[num_values, G·channels]`` over the means of every
        group and channel (value ``2k`` is ``+1·mean_a − 1·mean_b`` of comparison ``k`` in the
        mode's channel, value ``2k + 1`` the reverse), so all values, gap minus bound, are one
        matrix-vector product added to ``offsets`` (``-bound``; a row has one +1 and one −1,
        every other product is an exact zero); ``positions``, the flat positions of every
        value's first mean, then of every value's second, for its mask; and the zeros an
        undefined value reads.
        Otherwise: ``channels``, the mode's channel of each measure.
        """
        key = (strict, dtype, device)
        if key not in self._constants:
            measures = range(len(self.measures))
            channels = [self._channel(m, strict) for m in measures]
            if self.pairs != "all":
                self._constants[key] = (torch.tensor(channels, device=device),)
                return self._constants[key]
            rows = [
                (m, first, second)
                for m in measures
                for a, b in self.comparisons
                for first, second in ((a, b), (b, a))
            ]
            contrast = torch.zeros(
                len(rows), self.num_groups * self.channels, dtype=dtype, device=device
            )
            at = [[g * self.channels + channels[m] for g in (f, s)] for m, f, s in rows]
            for row, (first, second) in enumerate(at):
                contrast[row, first], contrast[row, second] = 1.0, -1.0
            positions = torch.tensor(at, device=device).T.reshape(-1)
            offsets = torch.full((len(rows),), -self.bound, dtype=dtype, device=device)
            zeros = torch.zeros(len(rows), dtype=dtype, device=device)
            self._constants[key] = (contrast, positions, offsets, zeros)
        return self._constants[key]

    @abstractmethod
    def _quantities(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-row quantities ``[n, channels]`` (or ``[n]`` for one channel) and eligibility
        ``[n, channels]`` (0/1).

        Eligibility depends on the labels only, never on the logits, so counts carry no
        gradient (``value`` relies on it); ``None`` means every row counts in every channel.
        """

    @abstractmethod
    def _channel(self, measure: int, strict: bool) -> int:
        """Which channel gives measure ``measure`` in training (surrogate) or judging mode."""

    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sums, counts = self._group_sums(logits, labels, groups, weights, losses)
        return torch.stack([sums, counts], dim=-1).view(-1)

    def _group_sums(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None,
        losses: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sums of eligible quantities and weighted counts, both ``[G, channels]``,
        or both ``[G]`` for one channel (a matrix-vector product, and no shape to undo)."""
        values, eligible = self._quantities(logits, labels, losses)
        member = group_membership(groups, self.num_groups, logits.dtype, weights)
        if eligible is None:
            if values.ndim == 1:
                return member @ values, member.sum(dim=1)
            sums = member @ values
            return sums, member.sum(dim=1, keepdim=True).expand_as(sums)
        return member @ (values * eligible), member @ eligible

    def _split(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat statistics as sums and detached counts, ``[G, channels]`` each.

        Counts never depend on the parameters (see ``_quantities``), so their branch needs no
        backward pass.
        """
        sums, counts = stats.view(self.num_groups, self.channels, 2).unbind(-1)
        return sums, counts.detach()

    def _compare(self, sums: torch.Tensor, counts: torch.Tensor, strict: bool) -> Reading:
        """Values of mode ``strict`` from ``[G, channels]`` sums and counts (``[G]`` for one
        channel): ``(values, values detached, defined)``, undefined values 0 with no gradient.

        Vectorised over groups and measures: a handful of tensor operations whatever ``G``.
        Why it matters: a training step's cost for a small MLP is mostly per-operation
        overhead, forward and backward, so every node this graph saves is saved twice a step.
        """
        present = counts > 0
        means = true_mean(sums, counts)
        layout = self._layout(strict, sums.dtype, sums.device)
        if self.pairs == "all":
            contrast, positions, offsets, zeros = layout
            if means.ndim > 1:
                present, means = present.reshape(-1), means.reshape(-1)
            defined = present.index_select(0, positions).view(2, -1).all(0)
            values = torch.where(defined, torch.addmv(offsets, contrast, means), zeros)
            return values, values.detach(), defined
        (channels,) = layout
        if means.ndim == 1:
            sums, counts, means, present = (t[:, None] for t in (sums, counts, means, present))
        pick = [t.index_select(1, channels).T for t in (sums, counts, means, present)]
        sums, counts, means, present = pick  # [measures, G]
        total, rows = sums.sum(1, keepdim=True), counts.sum(1, keepdim=True)
        if self.pairs == "vs_rest":
            others = true_mean(total - sums, rows - counts)
            other_rows = present.sum(1, keepdim=True) - present.long()
        else:
            others = true_mean(total, rows)
            other_rows = present.sum(1, keepdim=True).expand_as(present)
        both = present & (other_rows > 0)
        gaps = torch.stack([means - others, others - means], dim=2).view(-1)
        defined = torch.stack([both, both], dim=2).view(-1)
        values = torch.where(defined, gaps - self.bound, 0.0)
        return values, values.detach(), defined

    def _reading(self, sums: torch.Tensor, counts: torch.Tensor) -> Reading:
        """The training reading: the surrogate, and the decision value ``decide_on`` names
        (the strict one computed only where it differs from the surrogate)."""
        values, decision, defined = self._compare(sums, counts, strict=False)
        if self.proxy and self.decide_on == "strict":
            decision = self._compare(sums.detach(), counts, strict=True)[0]
        return values, decision, defined

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        return self._compare(*self._split(stats), strict)[0]

    def estimate(self, stats: torch.Tensor) -> Reading:
        return self._reading(*self._split(stats))

    def batch_estimate(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> Reading:
        """Straight from the group sums, without the flat layout's stack and view (the
        counts carry no gradient: ``_quantities``)."""
        return self._reading(*self._group_sums(logits, labels, groups, weights, losses))

    def names(self, group_names: Sequence[str]) -> list[str]:
        names = []
        for measure in self.measures:
            label = self.kind if len(self.measures) == 1 else f"{self.kind}.{measure}"
            for a, b in self.comparisons:
                other = group_names[b] if b is not None else self.pairs.removeprefix("vs_")
                first, second = group_names[a], other
                names += [
                    f"{label}[{first}-{second}]<={self.bound:g}",
                    f"{label}[{second}-{first}]<={self.bound:g}",
                ]
        return names


class LossGap(GroupGap):
    r"""Loss gap between groups: :math:`|\bar\ell_a - \bar\ell_b| \le b`.

    :math:`\bar\ell_g` is the mean binary cross-entropy over the minibatch rows of group g. This
    is the constraint of the Folktables benchmark (Kliachkin et al., arXiv 2507.04033), there
    with b = 0.005 between white and non-white respondents. Surrogate and strict value agree.
    """

    kind = "loss_gap"
    channels = 1
    measures = ("loss",)
    proxy = False

    def _quantities(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if losses is None:
            losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return losses, None

    def _channel(self, measure: int, strict: bool) -> int:
        return 0


class PositiveRateGap(GroupGap):
    r"""Demographic parity: :math:`|P(\hat y=1 \mid a) - P(\hat y=1 \mid b)| \le b`.

    The hard rate (share of rows with logit > 0) has zero gradient almost everywhere, so it is
    a proxy constraint (Cotter et al. 2019; Cooper's surrogate / strict split): the sigmoid
    surrogate :math:`\sigma(z)` drives the primal gradient, the hard rate drives multipliers,
    switching and feasibility (``decide_on="strict"``, the default) and is what is reported.
    Channels: ``[σ(z), 1[z>0]]``.
    """

    kind = "positive_rate_gap"
    channels = 2
    measures = ("positive_rate",)
    proxy = True

    def _quantities(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        values = torch.stack([torch.sigmoid(logits), (logits > 0).to(logits.dtype)], dim=1)
        return values, None

    def _channel(self, measure: int, strict: bool) -> int:
        return 1 if strict else 0


class EqualizedOdds(GroupGap):
    r"""Equalized odds (Hardt, Price & Srebro 2016): TPR and FPR gaps both within ``b``.

    :math:`|P(\hat y=1 \mid y=1, a) - P(\hat y=1 \mid y=1, b)| \le b` and the same with
    :math:`y = 0`. A proxy constraint as the positive rate is. Channels: ``[σ·1[y=1],
    1[z>0]·1[y=1], σ·1[y=0], 1[z>0]·1[y=0]]`` with eligibility the label indicator, so the
    counts are per-group positives and negatives, and a TPR comparison is undefined in a
    minibatch without positives of one of its groups. Values: every TPR comparison first, then
    every FPR comparison.
    """

    kind = "equalized_odds"
    channels = 4
    measures = ("tpr", "fpr")
    proxy = True

    def _quantities(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        soft, hard = torch.sigmoid(logits), (logits > 0).to(logits.dtype)
        positive = (labels > 0.5).to(logits.dtype)
        negative = 1 - positive
        values = torch.stack([soft, hard, soft, hard], dim=1)
        eligible = torch.stack([positive, positive, negative, negative], dim=1)
        return values, eligible

    def _channel(self, measure: int, strict: bool) -> int:
        return 2 * measure + (1 if strict else 0)


GAP_CONSTRAINTS: dict[str, type[GroupGap]] = {
    c.kind: c for c in (LossGap, PositiveRateGap, EqualizedOdds)
}
