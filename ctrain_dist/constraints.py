"""Fairness constraints as additive sufficient statistics plus a value function.

Why statistics and not values: a constraint such as "mean loss of group a minus mean loss of
group b" is a ratio of sums. Sums add across minibatch shards, so one ``all_reduce(SUM)`` of a
flat statistics vector gives every worker the exact statistics of the global minibatch; the
ratios are then formed from global sums. Averaging per-shard constraint values instead is
biased whenever group counts differ between shards (DESIGN.md, "Constraints, exact under data
parallelism").

Contract of a :class:`Constraint`:

* ``statistics(logits, labels, groups, weights)`` returns a 1-D tensor of ``num_statistics``
  weighted sums and counts, differentiable with respect to ``logits`` (and, for
  :class:`WeightNorm`, the model's parameters);
* ``value(stats)`` returns ``num_values`` constraint values, feasible when ``<= 0`` (the bound is
  folded in); with ``strict=True`` it returns the value that is reported and judged (e.g. a
  hard 0/1 positive rate) instead of the differentiable surrogate that training follows.

Row weights: every sum is ``Σ w_r x_r`` and every count ``Σ w_r``. Unweighted minibatches use
``w = 1``; the group-stratified sampler (``data/stratified.py``) passes design weights that
are constant within a group, so per-group means are unchanged while pooled means (the
objective, a group against the population or the rest) stay unbiased for the population.

Groups: ``G`` groups numbered ``0..G-1`` (intersectional groups such as sex × race are built on
the data side and arrive as one id). Gap constraints compare per-group means in one of three
ways (``pairs``): ``all`` (every pair a < b), ``vs_rest`` (each group against all other rows)
or ``vs_population`` (each group against every row). Each comparison is two-sided,
``|gap| <= bound``, so it contributes two values, ``gap - bound`` and ``-gap - bound``.

:class:`ConstrainedProblem` stacks the objective's and every constraint's statistics into the
one flat vector that a worker all-reduces.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional

_EMPTY_GROUP_COUNT = 1.0
"""Divisor floor when a group is absent from a minibatch: its sums are zero, so its mean reads 0.

Absent groups are rare with the embedded data (P ≈ 6e-5 for 64 rows and the 14 % non-white
minority) but must not produce NaN that would end a trial; the stratified sampler removes them.
"""

Pairs = Literal["all", "vs_rest", "vs_population"]


def _mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return total / count.clamp_min(_EMPTY_GROUP_COUNT)


def _row_weights(logits: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(logits) if weights is None else weights.to(logits.dtype)


class Constraint(ABC):
    """One constraint family: maps statistics to ``num_values`` values, feasible when ``<= 0``."""

    kind: str
    num_values: int
    num_statistics: int

    def __init__(self, bound: float) -> None:
        self.bound = float(bound)

    @abstractmethod
    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Additive statistics of a (shard of a) minibatch, differentiable in ``logits``.

        ``losses``: the rows' BCE of ``logits``, when the caller has computed it already
        (:class:`ConstrainedProblem` does, for the objective), so that a constraint on the
        loss reuses it rather than adding a second BCE to the step's graph.
        """

    @abstractmethod
    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        """Constraint values from (global) statistics; ``strict`` gives the judged value."""

    def batch_value(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training values of a batch one process holds whole (nothing to all-reduce):
        ``value(statistics(...))``, which a subclass may compute with fewer operations."""
        return self.value(self.statistics(logits, labels, groups, weights, losses))

    @abstractmethod
    def names(self, group_names: Sequence[str]) -> list[str]:
        """Human-readable names of the ``num_values`` values, e.g. ``loss_gap[a-b]<=0.05``."""


class GroupGap(Constraint):
    """Gaps between per-group means of per-row quantities (the shared machinery of gap kinds).

    A subclass says which per-row quantities it averages (``channels``), over which rows each
    channel counts (``_rows``: e.g. only positives for a true-positive rate), and which channel
    training follows versus which is judged. Statistics: for each group and channel, the
    weighted sum and the weighted count of eligible rows, laid out ``[G, channels, 2]``.
    """

    channels: int
    measures: tuple[str, ...]
    """Names of the compared rates, one per block of values (e.g. ``("tpr", "fpr")``)."""

    def __init__(self, bound: float, num_groups: int, pairs: Pairs = "all") -> None:
        super().__init__(bound)
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
        self._identity: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def _membership(
        self, groups: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """``[G, n]``: row r's weight in its group's row, 0 elsewhere (no gradient).

        Rows of a cached identity matrix gathered by group id: per-group sums of per-row
        quantities ``[n, k]`` are then one matmul, with no loop over groups.
        """
        key = (dtype, groups.device)
        if key not in self._identity:
            self._identity[key] = torch.eye(self.num_groups, dtype=dtype, device=groups.device)
        member = self._identity[key].index_select(0, groups)
        return (member if weights is None else member * weights.to(dtype)[:, None]).T

    def _layout(
        self, strict: bool, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Constants the values are read with, built once per (mode, dtype, device).

        ``sums`` and ``counts``: where each measure's per-group sums and counts sit in the
        flat statistics (measure-major, ``[M·G]``). For ``pairs="all"`` also two contrast
        matrices, so that all gaps are one matrix-vector product: ``contrast``
        ``[num_values, M·G]`` over those measure-major means (value ``2k`` is ``+1·mean_a −
        1·mean_b`` of comparison ``k``, value ``2k + 1`` the reverse), and ``by_channel``
        ``[num_values, G·channels]``, the same over the means of every group and channel
        (what :meth:`batch_value` computes). Both are exact: a row has one +1 and one −1,
        every other product is an exact zero.
        """
        key = (strict, dtype, device)
        if key not in self._constants:
            width = self.channels * 2
            measures = range(len(self.measures))
            sums = [
                g * width + 2 * self._channel(m, strict)
                for m in measures
                for g in range(self.num_groups)
            ]
            index = torch.tensor(sums, device=device)
            contrast = by_channel = None
            if self.pairs == "all":
                rows = [
                    (m, first, second)
                    for m in measures
                    for a, b in self.comparisons
                    for first, second in ((a, b), (b, a))
                ]
                contrast = torch.zeros(len(rows), len(sums), dtype=dtype, device=device)
                by_channel = torch.zeros(
                    len(rows), self.num_groups * self.channels, dtype=dtype, device=device
                )
                for row, (m, first, second) in enumerate(rows):
                    channel = self._channel(m, strict)
                    for group, sign in ((first, 1.0), (second, -1.0)):
                        contrast[row, m * self.num_groups + group] = sign
                        by_channel[row, group * self.channels + channel] = sign
            self._constants[key] = (index, index + 1, contrast, by_channel)
        return self._constants[key]

    @abstractmethod
    def _quantities(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-row quantities ``[n, channels]`` and eligibility ``[n, channels]`` (0/1).

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
        """Weighted sums of eligible quantities and weighted counts, both ``[G, channels]``."""
        values, eligible = self._quantities(logits, labels, losses)
        member = self._membership(groups, weights, logits.dtype)
        if eligible is None:
            sums = member @ values
            return sums, member.sum(dim=1, keepdim=True).expand_as(sums)
        return member @ (values * eligible), member @ eligible

    def batch_value(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
        losses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pairwise gaps straight from the group sums: sums, one division, one product.

        The channel each measure reads is folded into the ``by_channel`` contrast, so the
        graph has none of the flat layout's stack, view and gather.
        """
        if self.pairs != "all":
            return super().batch_value(logits, labels, groups, weights, losses)
        sums, counts = self._group_sums(logits, labels, groups, weights, losses)
        by_channel = self._layout(False, logits.dtype, logits.device)[3]
        return torch.mv(by_channel, _mean(sums, counts).view(-1)) - self.bound

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        """Vectorised over groups and measures: a handful of tensor operations whatever ``G``.

        Why it matters: a training step's cost for a small MLP is mostly per-operation
        overhead, forward and backward, so every node this graph saves is saved twice a step.
        Counts are gathered from detached statistics: they never depend on the parameters
        (see ``_quantities``), so their branch needs no backward pass.
        """
        sums_at, counts_at, contrast, _ = self._layout(strict, stats.dtype, stats.device)
        sums = stats.index_select(0, sums_at)
        counts = stats.detach().index_select(0, counts_at)
        means = _mean(sums, counts)
        if contrast is not None:
            return torch.mv(contrast, means) - self.bound
        shape = (len(self.measures), self.num_groups)
        sums, counts, means = sums.view(shape), counts.view(shape), means.view(shape)
        total, rows = sums.sum(dim=1, keepdim=True), counts.sum(dim=1, keepdim=True)
        if self.pairs == "vs_rest":
            others = _mean(total - sums, rows - counts)
        else:
            others = _mean(total, rows)
        gaps = means - others
        return torch.stack([gaps, -gaps], dim=2).view(-1) - self.bound

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

    def _quantities(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if losses is None:
            losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return losses[:, None], None

    def _channel(self, measure: int, strict: bool) -> int:
        return 0


class PositiveRateGap(GroupGap):
    r"""Demographic parity: :math:`|P(\hat y=1 \mid a) - P(\hat y=1 \mid b)| \le b`.

    The hard rate (share of rows with logit > 0) has zero gradient almost everywhere, so
    training follows a sigmoid surrogate :math:`\sigma(z)` of the indicator (the surrogate /
    strict split of Cooper, Gallego-Posada et al.), while ``strict=True`` reports the hard rate
    that feasibility is judged on. Channels: ``[σ(z), 1[z>0]]``.
    """

    kind = "positive_rate_gap"
    channels = 2
    measures = ("positive_rate",)

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
    :math:`y = 0`. As for the positive rate, training follows the sigmoid surrogate and
    ``strict=True`` judges the hard rates. Channels: ``[σ·1[y=1], 1[z>0]·1[y=1], σ·1[y=0],
    1[z>0]·1[y=0]]`` with eligibility the label indicator, so the counts are per-group
    positives and negatives. Values: every TPR comparison first, then every FPR comparison.
    """

    kind = "equalized_odds"
    channels = 4
    measures = ("tpr", "fpr")

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
    references to them, so it always reads the current values.
    """

    kind = "weight_norm"

    def __init__(self, bound: float, model: nn.Module) -> None:
        super().__init__(bound)
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
        rows = _row_weights(logits, weights).sum()
        squares = torch.stack([(w.to(logits.dtype) ** 2).sum() for w in self.weights])
        return torch.cat([rows[None], squares * rows])

    def value(self, stats: torch.Tensor, strict: bool = False) -> torch.Tensor:
        norms = torch.sqrt(stats[1:] / stats[0].clamp_min(torch.finfo(stats.dtype).tiny))
        return norms - self.bound

    def names(self, group_names: Sequence[str]) -> list[str]:
        return [f"weight_norm[layer{i}]<={self.bound:g}" for i in range(self.num_values)]


GAP_CONSTRAINTS: dict[str, type[GroupGap]] = {
    c.kind: c for c in (LossGap, PositiveRateGap, EqualizedOdds)
}
CONSTRAINTS: dict[str, type[Constraint]] = {**GAP_CONSTRAINTS, WeightNorm.kind: WeightNorm}


class ConstrainedProblem:
    """The objective (mean BCE) and a list of constraints, read through one statistics vector.

    Layout of the vector: ``[Σ w ℓ, Σ w, stats of constraint 0, stats of constraint 1, ...]``.
    Its length is fixed, so workers can fuse it into a single collective.
    """

    def __init__(self, constraints: Sequence[Constraint]) -> None:
        self.constraints = list(constraints)
        self.num_constraints = sum(c.num_values for c in self.constraints)
        self._offsets = list(itertools.accumulate([2] + [c.num_statistics for c in constraints]))

    def statistics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        parts = [torch.stack(self._objective(losses, weights))] + [
            c.statistics(logits, labels, groups, weights, losses) for c in self.constraints
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

    def loss_and_values(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``evaluate(statistics(...))`` for one process, where nothing is all-reduced.

        The same numbers, computed without the flat vector: each value reads its own
        statistics, so the loss's gradient no longer flows back through every constraint's
        statistics (and theirs not through the objective's). On a small MLP the backward
        pass is mostly per-node overhead, so that is a tenth of a step saved.
        """
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        total, count = self._objective(losses, weights)
        values = [c.batch_value(logits, labels, groups, weights, losses) for c in self.constraints]
        return _mean(total, count.detach()), self._stack(values, losses)

    @staticmethod
    def _stack(values: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        if len(values) == 1:
            return values[0]
        return torch.cat(values) if values else like.new_zeros(0)

    def evaluate(
        self, stats: torch.Tensor, strict: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and the stacked constraint values (``[num_constraints]``) from statistics.

        The row count ``Σ w`` is detached: it never depends on the parameters, so its branch
        needs no backward pass.
        """
        loss = _mean(stats[0], stats.detach()[1])
        values = [
            c.value(stats[start:end], strict)
            for c, (start, end) in zip(
                self.constraints, itertools.pairwise(self._offsets), strict=True
            )
        ]
        return loss, self._stack(values, stats)

    def names(self, group_names: Sequence[str]) -> list[str]:
        return [name for c in self.constraints for name in c.names(group_names)]


def build_constraints(
    specs: Sequence[Any], num_groups: int, model: nn.Module | None = None
) -> list[Constraint]:
    """The constraints a spec lists (objects with ``kind``, ``bound`` and optionally ``pairs``).

    ``num_groups`` comes from the data; gap kinds need at least two. ``model`` is needed only
    by ``weight_norm``, which bounds its weight matrices.
    """
    built: list[Constraint] = []
    for spec in specs:
        if spec.kind == WeightNorm.kind:
            if model is None:
                raise ValueError("weight_norm needs the model whose weights it bounds")
            built.append(WeightNorm(spec.bound, model))
        else:
            pairs = getattr(spec, "pairs", "all")
            built.append(GAP_CONSTRAINTS[spec.kind](spec.bound, num_groups, pairs))
    return built
