"""Constraint statistics against direct computation, and their additivity across shards."""

import itertools
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional

from ctrain_dist.constraints import (
    ConstrainedProblem,
    EqualizedOdds,
    LossGap,
    PositiveRateGap,
    WeightNorm,
    build_constraints,
)
from ctrain_dist.trial.model import build_mlp


def _batch(n: int = 200, seed: int = 0, num_groups: int = 2):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=torch.float64)
    labels = (torch.rand(n, generator=generator) < 0.4).double()
    groups = torch.randint(num_groups, (n,), generator=generator)
    return logits, labels, groups


def _losses(logits, labels):
    return functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")


def test_loss_gap_matches_direct_group_means():
    logits, labels, groups = _batch()
    losses = _losses(logits, labels)
    gap = losses[groups == 0].mean() - losses[groups == 1].mean()
    constraint = LossGap(bound=0.01, num_groups=2)
    values = constraint.value(constraint.statistics(logits, labels, groups))
    torch.testing.assert_close(values, torch.stack([gap - 0.01, -gap - 0.01]))


def test_positive_rate_gap_strict_uses_hard_rates_and_default_the_sigmoid():
    logits, labels, groups = _batch()
    constraint = PositiveRateGap(bound=0.02, num_groups=2)
    stats = constraint.statistics(logits, labels, groups)
    hard = (logits > 0).double()
    soft = torch.sigmoid(logits)
    hard_gap = hard[groups == 0].mean() - hard[groups == 1].mean()
    soft_gap = soft[groups == 0].mean() - soft[groups == 1].mean()
    torch.testing.assert_close(constraint.value(stats, strict=True)[0], hard_gap - 0.02)
    torch.testing.assert_close(constraint.value(stats)[0], soft_gap - 0.02)


def test_positive_rate_surrogate_has_a_gradient():
    logits, labels, groups = _batch()
    logits.requires_grad_(True)
    constraint = PositiveRateGap(bound=0.0, num_groups=2)
    constraint.value(constraint.statistics(logits, labels, groups))[0].backward()
    assert logits.grad.abs().sum() > 0


def test_equalized_odds_strict_values_are_the_hard_tpr_and_fpr_gaps():
    logits, labels, groups = _batch()
    constraint = EqualizedOdds(bound=0.03, num_groups=2)
    values = constraint.value(constraint.statistics(logits, labels, groups), strict=True)
    hard = (logits > 0).double()

    def rate(group, label):
        rows = (groups == group) & (labels == label)
        return hard[rows].mean()

    tpr_gap, fpr_gap = rate(0, 1) - rate(1, 1), rate(0, 0) - rate(1, 0)
    expected = torch.stack([tpr_gap - 0.03, -tpr_gap - 0.03, fpr_gap - 0.03, -fpr_gap - 0.03])
    torch.testing.assert_close(values, expected)


def test_equalized_odds_surrogate_uses_the_sigmoid_among_positives():
    logits, labels, groups = _batch()
    constraint = EqualizedOdds(bound=0.0, num_groups=2)
    values = constraint.value(constraint.statistics(logits, labels, groups))
    soft = torch.sigmoid(logits)
    tpr_gap = (
        soft[(groups == 0) & (labels == 1)].mean() - soft[(groups == 1) & (labels == 1)].mean()
    )
    torch.testing.assert_close(values[0], tpr_gap)


def test_all_pairs_compares_every_pair_of_groups():
    logits, labels, groups = _batch(n=400, num_groups=4)
    constraint = LossGap(bound=0.0, num_groups=4, pairs="all")
    values = constraint.value(constraint.statistics(logits, labels, groups))
    means = [_losses(logits, labels)[groups == g].mean() for g in range(4)]
    expected = [means[a] - means[b] for a, b in itertools.combinations(range(4), 2)]
    assert constraint.num_values == 2 * 6
    torch.testing.assert_close(values[0::2], torch.stack(expected))
    torch.testing.assert_close(values[1::2], -torch.stack(expected))


def test_vs_rest_compares_each_group_with_all_other_rows():
    logits, labels, groups = _batch(n=400, num_groups=3)
    constraint = LossGap(bound=0.0, num_groups=3, pairs="vs_rest")
    values = constraint.value(constraint.statistics(logits, labels, groups))
    losses = _losses(logits, labels)
    expected = torch.stack(
        [losses[groups == g].mean() - losses[groups != g].mean() for g in range(3)]
    )
    torch.testing.assert_close(values[0::2], expected)


def test_vs_population_compares_each_group_with_every_row():
    logits, labels, groups = _batch(n=400, num_groups=3)
    constraint = LossGap(bound=0.0, num_groups=3, pairs="vs_population")
    values = constraint.value(constraint.statistics(logits, labels, groups))
    losses = _losses(logits, labels)
    expected = torch.stack([losses[groups == g].mean() - losses.mean() for g in range(3)])
    torch.testing.assert_close(values[0::2], expected)


def test_names_say_which_groups_are_compared():
    constraint = LossGap(bound=0.05, num_groups=3, pairs="vs_rest")
    names = constraint.names(["a", "b", "c"])
    assert names[:2] == ["loss_gap[a-rest]<=0.05", "loss_gap[rest-a]<=0.05"]
    assert len(names) == constraint.num_values


def test_weight_norm_is_each_layers_frobenius_norm_minus_the_bound():
    model = build_mlp(5, [4], torch.float64)
    constraint = WeightNorm(bound=1.0, model=model)
    logits = model(torch.randn(7, 5, dtype=torch.float64)).squeeze(-1)
    values = constraint.value(constraint.statistics(logits, torch.zeros(7), torch.zeros(7).long()))
    expected = torch.stack([model[0].weight.norm(), model[2].weight.norm()]) - 1.0
    torch.testing.assert_close(values, expected)


def test_weight_norm_is_exact_after_summing_shards_of_any_size():
    model = build_mlp(5, [4], torch.float64)
    constraint = WeightNorm(bound=0.0, model=model)
    zeros = torch.zeros(3).long()
    shards = [
        constraint.statistics(torch.zeros(n, dtype=torch.float64), zeros[:n], zeros[:n])
        for n in (1, 3)
    ]
    values = constraint.value(sum(shards))
    torch.testing.assert_close(values[0], model[0].weight.norm())


def test_weight_norm_gradient_reaches_the_weights():
    model = build_mlp(5, [4], torch.float64)
    constraint = WeightNorm(bound=0.0, model=model)
    stats = constraint.statistics(
        torch.zeros(2, dtype=torch.float64), torch.zeros(2), torch.zeros(2).long()
    )
    constraint.value(stats)[0].backward()
    torch.testing.assert_close(model[0].weight.grad, model[0].weight / model[0].weight.norm())


def test_statistics_of_shards_sum_to_the_statistics_of_their_union():
    logits, labels, groups = _batch(n=300)
    problem = ConstrainedProblem(
        [LossGap(0.005, 2), PositiveRateGap(0.05, 2), EqualizedOdds(0.05, 2)]
    )
    whole = problem.statistics(logits, labels, groups)
    shards = sum(
        problem.statistics(logits[s], labels[s], groups[s]) for s in (slice(0, 50), slice(50, 300))
    )
    torch.testing.assert_close(shards, whole)
    loss, c = problem.evaluate(shards)
    torch.testing.assert_close(loss, functional.binary_cross_entropy_with_logits(logits, labels))
    assert c.shape == (8,)


def test_averaging_per_shard_values_differs_from_the_global_value():
    logits, labels, groups = _batch(n=300)
    problem = ConstrainedProblem([LossGap(0.005, 2)])
    shards = [slice(0, 50), slice(50, 300)]
    per_shard = [
        problem.evaluate(problem.statistics(logits[s], labels[s], groups[s]))[1] for s in shards
    ]
    averaged = sum(per_shard) / 2
    _, exact = problem.evaluate(problem.statistics(logits, labels, groups))
    assert not torch.allclose(averaged, exact)


def test_row_weights_constant_within_groups_leave_group_means_unchanged():
    logits, labels, groups = _batch()
    weights = torch.where(groups == 0, 0.3, 2.5).double()
    constraint = LossGap(0.0, 2)
    plain = constraint.value(constraint.statistics(logits, labels, groups))
    weighted = constraint.value(constraint.statistics(logits, labels, groups, weights))
    torch.testing.assert_close(weighted, plain)


def test_row_weights_reweight_the_objective():
    logits, labels, groups = _batch()
    weights = torch.where(groups == 0, 0.3, 2.5).double()
    problem = ConstrainedProblem([])
    loss, _ = problem.evaluate(problem.statistics(logits, labels, groups, weights))
    losses = _losses(logits, labels)
    torch.testing.assert_close(loss, (weights * losses).sum() / weights.sum())


def test_build_constraints_reads_kind_bound_and_pairs():
    specs = [
        SimpleNamespace(kind="loss_gap", bound=0.05, pairs="vs_rest"),
        SimpleNamespace(kind="equalized_odds", bound=0.1, pairs="all"),
    ]
    built = build_constraints(specs, num_groups=3)
    assert [c.num_values for c in built] == [6, 12]


def test_build_constraints_refuses_weight_norm_without_a_model():
    with pytest.raises(ValueError, match="weight_norm"):
        build_constraints([SimpleNamespace(kind="weight_norm", bound=1.0)], num_groups=2)


def test_gap_constraints_need_two_groups():
    with pytest.raises(ValueError, match="two groups"):
        LossGap(0.1, num_groups=1)
