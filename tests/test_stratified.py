"""The group-stratified sampler: minimum counts, unbiased objective, exact resume."""

import copy

import pytest
import torch

from ctrain_dist.constraints import ConstrainedProblem
from ctrain_dist.data.sampler import MinibatchSampler
from ctrain_dist.data.stratified import (
    StratifiedSampler,
    balanced_quotas,
    build_sampler,
    design_weights,
    quotas,
    sampler_quotas,
)


def _groups(n: int = 1000, minority: float = 0.05, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=generator) < minority).long()


def _stratified(groups: torch.Tensor, batch_size: int, minimum: int, seed: int):
    sampler = build_sampler(
        torch.arange(len(groups)), groups, 2, batch_size, seed, min_group_count=minimum
    )
    assert isinstance(sampler, StratifiedSampler)
    return sampler


def test_quotas_respect_the_minimum_and_fill_the_batch():
    assert quotas([22000, 10000], 64, 24) == [40, 24]
    assert quotas([900, 50, 50], 64, 8) == [48, 8, 8]


def test_quotas_are_proportional_when_the_minimum_does_not_bind():
    assert quotas([22000, 10000], 64, 1) == [44, 20]


def test_quotas_refuse_minimums_that_do_not_fit_the_batch():
    with pytest.raises(ValueError, match="exceeds batch_size"):
        quotas([100, 100, 100], 10, 4)


def test_every_batch_holds_the_minimum_of_every_group():
    groups = _groups()
    sampler = _stratified(groups, 64, 16, seed=0)
    for _ in range(50):
        batch = sampler.next()
        assert batch.numel() == 64
        assert int((groups[batch] == 1).sum()) >= 16


def test_design_weights_make_the_weighted_objective_unbiased():
    # per-row "losses" that differ strongly by group; the uniform population mean is the target
    groups = _groups(minority=0.1)
    values = torch.where(groups == 1, 5.0, 1.0).double() + torch.linspace(0, 1, 1000).double()
    sampler = _stratified(groups, 40, 15, seed=1)
    weights = design_weights(sampler)
    estimates = []
    for _ in range(2000):
        batch = sampler.next()
        estimates.append((weights * values[batch]).sum() / weights.sum())
    mean = torch.stack(estimates).mean()
    # standard error of the mean of 2000 batch means is below 0.003; 0.02 is ~7 of them
    assert mean.item() == pytest.approx(values.mean().item(), abs=0.02)


def test_unweighted_stratified_mean_would_be_biased():
    groups = _groups(minority=0.1)
    values = torch.where(groups == 1, 5.0, 1.0).double()
    sampler = _stratified(groups, 40, 15, seed=1)
    batch_mean = values[sampler.next()].mean()
    assert batch_mean.item() > values.mean().item() + 0.5


def test_weighted_problem_statistics_use_the_design_weights():
    groups = _groups(minority=0.1)
    sampler = _stratified(groups, 40, 15, seed=1)
    batch = sampler.next()
    logits = torch.zeros(40, dtype=torch.float64)
    labels = torch.ones(40, dtype=torch.float64)
    stats = ConstrainedProblem([]).statistics(logits, labels, groups[batch], sampler.weights)
    assert stats[1].item() == pytest.approx(40.0)


def test_state_dict_resumes_the_same_batches():
    groups = _groups()
    sampler = _stratified(groups, 64, 16, seed=3)
    for _ in range(20):
        sampler.next()
    state = copy.deepcopy(sampler.state_dict())
    expected = [sampler.next() for _ in range(30)]
    resumed = _stratified(groups, 64, 16, seed=99)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next()) for a in expected)
    assert resumed.samples_drawn == sampler.samples_drawn


def test_build_sampler_is_plain_without_a_minimum():
    sampler = build_sampler(torch.arange(100), _groups(100), 2, 10, seed=0)
    assert isinstance(sampler, MinibatchSampler)
    assert design_weights(sampler) is None


def test_rows_per_group_gives_every_group_the_same_rows_each_batch():
    groups = _groups(minority=0.05)
    sampler = build_sampler(torch.arange(1000), groups, 2, 16, seed=0, rows_per_group=8)
    for _ in range(20):
        batch = sampler.next()
        assert torch.bincount(groups[batch], minlength=2).tolist() == [8, 8]


def test_balanced_design_weights_keep_the_objective_unbiased_where_a_weight_is_below_one():
    groups = _groups(minority=0.05)
    values = torch.where(groups == 1, 5.0, 1.0).double() + torch.linspace(0, 1, 1000).double()
    sampler = build_sampler(torch.arange(1000), groups, 2, 16, seed=2, rows_per_group=8)
    weights = design_weights(sampler)
    assert weights.min().item() < 1.0
    estimates = [(weights * values[sampler.next()]).sum() / weights.sum() for _ in range(4000)]
    assert torch.stack(estimates).mean().item() == pytest.approx(values.mean().item(), abs=0.02)


def test_balanced_quotas_refuse_a_batch_that_is_not_rows_times_groups():
    with pytest.raises(ValueError, match="set batch_size to 16"):
        balanced_quotas([900, 100], 20, 8)


def test_balanced_quotas_refuse_a_group_smaller_than_its_quota():
    with pytest.raises(ValueError, match="only 5 training rows"):
        balanced_quotas([900, 5], 16, 8)


def test_sampler_quotas_are_none_without_a_quota_option():
    assert sampler_quotas([900, 100], 16) is None
    assert sampler_quotas([900, 100], 16, rows_per_group=8) == [8, 8]
    assert sampler_quotas([900, 100], 16, min_group_count=4) == [12, 4]
