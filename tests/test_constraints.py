"""Constraint statistics against direct computation, and their additivity across shards."""

import torch
from torch.nn import functional

from ctrain_dist.constraints import ConstrainedProblem, LossGap, PositiveRateGap


def _batch(n: int = 200, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=torch.float64)
    labels = (torch.rand(n, generator=generator) < 0.4).double()
    groups = (torch.rand(n, generator=generator) < 0.3).long()
    return logits, labels, groups


def test_loss_gap_matches_direct_group_means():
    logits, labels, groups = _batch()
    losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    gap = losses[groups == 0].mean() - losses[groups == 1].mean()
    constraint = LossGap(bound=0.01)
    values = constraint.value(constraint.statistics(logits, labels, groups))
    torch.testing.assert_close(values, torch.stack([gap - 0.01, -gap - 0.01]))


def test_positive_rate_gap_strict_uses_hard_rates_and_default_the_sigmoid():
    logits, labels, groups = _batch()
    constraint = PositiveRateGap(bound=0.02)
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
    constraint = PositiveRateGap(bound=0.0)
    constraint.value(constraint.statistics(logits, labels, groups))[0].backward()
    assert logits.grad.abs().sum() > 0


def test_statistics_of_shards_sum_to_the_statistics_of_their_union():
    logits, labels, groups = _batch(n=300)
    problem = ConstrainedProblem([LossGap(0.005), PositiveRateGap(0.05)])
    whole = problem.statistics(logits, labels, groups)
    shards = sum(
        problem.statistics(logits[s], labels[s], groups[s]) for s in (slice(0, 50), slice(50, 300))
    )
    torch.testing.assert_close(shards, whole)
    loss, c = problem.evaluate(shards)
    torch.testing.assert_close(loss, functional.binary_cross_entropy_with_logits(logits, labels))
    assert c.shape == (4,)


def test_averaging_per_shard_values_differs_from_the_global_value():
    logits, labels, groups = _batch(n=300)
    problem = ConstrainedProblem([LossGap(0.005)])
    shards = [slice(0, 50), slice(50, 300)]
    per_shard = [
        problem.evaluate(problem.statistics(logits[s], labels[s], groups[s]))[1] for s in shards
    ]
    averaged = sum(per_shard) / 2
    _, exact = problem.evaluate(problem.statistics(logits, labels, groups))
    assert not torch.allclose(averaged, exact)
