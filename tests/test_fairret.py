"""The fairret baseline: fairret's own losses, reached through the oracle, judged on the spec.

The reference for every value and gradient here is the fairret package itself (``fairret``
on PyPI), called as the Folktables benchmark's training loop calls it:
``loss(logits, one_hot(groups), labels)``. Two workers against one process, with and without
groups missing from batches, is ``tests/test_distributed.py``'s check of every data-parallel
algorithm, fairret among them.
"""

import json
import typing
from pathlib import Path

import pytest
import torch
from fairret.loss import LSELoss, NormLoss
from list_sink import ListSink
from torch.nn import functional

from ctrain_dist.algorithms.fairret_baseline import FairretHyperparameters, FairretStatistic
from ctrain_dist.constraints import CONSTRAINTS, ConstrainedProblem, LossGap
from ctrain_dist.constraints.fairret import STATISTICS, FairretLoss
from ctrain_dist.data.load import load_data
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import load_spec
from ctrain_dist.store.schema import CONSTRAINT_NAMES
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner, trial_sampler
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.packed import PackedLearner

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
LOSSES = {
    "norm1": ("norm", 1.0, lambda s: NormLoss(s)),
    "norm2": ("norm", 2.0, lambda s: NormLoss(s, p=2)),
    "lse": ("lse", 1.0, lambda s: LSELoss(s)),
}


def _batch(n: int = 48, groups: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = (torch.rand(n, generator=generator) < 0.4).double()
    group = torch.arange(n) % groups  # every group present
    return logits, labels, group[torch.randperm(n, generator=generator)]


def _fairrets_own(statistic: str, loss: str, logits, labels, groups, num_groups: int):
    """fairret's loss of the batch, as the reference's training loop computes it."""
    cls, reads_labels = STATISTICS[statistic]
    reference = LOSSES[loss][2](cls())
    sens = functional.one_hot(groups, num_groups).to(logits.dtype)
    args = (labels[:, None],) if reads_labels else ()
    return reference(logits[:, None], sens, *args)


def _ours(statistic: str, loss: str, num_groups: int) -> FairretLoss:
    name, p, _ = LOSSES[loss]
    return FairretLoss(0.0, num_groups, statistic=statistic, loss=name, p=p)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("statistic", sorted(STATISTICS))
@pytest.mark.parametrize("num_groups", [2, 3])
def test_the_term_equals_fairrets_own_loss_and_gradient_on_a_batch(statistic, loss, num_groups):
    logits, labels, groups = _batch(groups=num_groups)
    ours = _ours(statistic, loss, num_groups).batch_estimate(logits, labels, groups)[0]
    theirs = _fairrets_own(statistic, loss, logits, labels, groups, num_groups)
    assert ours.shape == (1,)
    torch.testing.assert_close(ours[0], theirs, rtol=1e-12, atol=1e-15)
    (ours_grad,) = torch.autograd.grad(ours.sum(), logits)
    (their_grad,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(ours_grad, their_grad, rtol=1e-10, atol=1e-14)
    assert their_grad.abs().max() > 0  # a batch that tests the gradient at all


def test_the_algorithm_offers_exactly_the_statistics_the_term_computes():
    assert set(typing.get_args(FairretStatistic)) == set(STATISTICS)
    assert CONSTRAINTS["fairret"] is FairretLoss


def test_the_statistics_add_over_shards_so_the_loss_is_exact_under_data_parallelism():
    logits, labels, groups = _batch(n=40, groups=3)
    term = _ours("accuracy", "norm1", 3)
    halves = [slice(0, 13), slice(13, 40)]
    summed = sum(term.statistics(logits[h], labels[h], groups[h]) for h in halves)
    whole = term.statistics(logits, labels, groups)
    torch.testing.assert_close(summed, whole, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(term.value(summed), term.value(whole))
    per_shard = sum(term.value(term.statistics(logits[h], labels[h], groups[h])) for h in halves)
    assert (per_shard / 2 - term.value(whole)).abs().item() > 1e-4  # why sums, not values


def test_an_empty_group_adds_no_violation_where_fairret_would_count_one():
    logits, labels, groups = _batch(n=30, groups=2)
    groups = torch.where(groups == 2, 0, groups)  # three groups, the third empty
    value = _ours("positive_rate", "norm1", 3).batch_estimate(logits, labels, groups)
    on_two = _fairrets_own("positive_rate", "norm1", logits, labels, groups, 2)
    torch.testing.assert_close(value[0][0], on_two)
    assert bool(value[2].all())
    with_empty = _fairrets_own("positive_rate", "norm1", logits, labels, groups, 3)
    torch.testing.assert_close(with_empty, on_two + 1)  # fairret's safe_div: violation 1


def test_the_term_reads_the_constraint_draw_and_the_objective_its_own_rows():
    logits, labels, groups = _batch(n=40)
    objective_rows, constraint_rows = slice(0, 16), slice(16, 40)
    weights, for_constraints = torch.zeros(40), torch.zeros(40)
    weights[objective_rows], for_constraints[constraint_rows] = 1.0, 1.0
    problem = ConstrainedProblem([LossGap(0.05, 2)], [_ours("accuracy", "norm1", 2)])
    loss, c, _, _, terms = problem.batch_estimate(logits, labels, groups, weights, for_constraints)
    rows = constraint_rows
    theirs = _fairrets_own("accuracy", "norm1", logits[rows], labels[rows], groups[rows], 2)
    torch.testing.assert_close(terms[0], theirs)
    bce = functional.binary_cross_entropy_with_logits(logits[objective_rows], labels[:16])
    torch.testing.assert_close(loss, bce)
    assert c.shape == (2,)  # the constraints stay the spec's, the term is apart
    stats = problem.statistics(logits, labels, groups, weights, for_constraints)
    assert problem.evaluate(stats)[1].shape == (2,)
    torch.testing.assert_close(problem.estimate(stats)[4], terms)


def _trials(*overrides: str):
    return load_spec(
        QUICKSTART,
        [
            "seeds=[3, 5]",
            "algorithms=[{name: fairret, params: {lr: 0.05, weight: 0.5}}]",
            "training.budget.steps=30",
            "training.eval_every=15",
            "training.dtype=float64",
            *overrides,
        ],
    ).trials()


def test_the_trainers_step_is_the_reference_loops_sgd_step_on_bce_plus_weighted_fairret():
    """The Folktables benchmark's loop: ``loss_bce + mult * loss_fr``, ``SGD(lr=0.05)``."""
    trial = _trials()[0]
    data = load_data(trial.data, trial.split).to(dtype=torch.float64)
    learner = ModelLearner(trial, data, Workers(), torch.device("cpu"))
    reference = ModelLearner(trial, data, Workers(), torch.device("cpu")).model
    rows = trial_sampler(trial, data)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    for _ in range(20):
        learner.algorithm.step(learner.estimate)
        batch = rows.next()
        logits = reference(data.features[batch]).squeeze(-1)
        labels, groups = data.labels[batch], data.groups[batch]
        fairness = _fairrets_own("accuracy", "norm1", logits, labels, groups, data.num_groups)
        optimizer.zero_grad()
        (functional.binary_cross_entropy_with_logits(logits, labels) + 0.5 * fairness).backward()
        optimizer.step()
    for ours, theirs in zip(learner.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_packed_seeds_read_the_term_each_seed_reads_alone():
    trials = _trials("training.rows_per_group=8", "training.batch_size=16")
    data = load_data(trials[0].data, trials[0].split).to(dtype=torch.float64)
    pack = PackedLearner(trials, data, torch.device("cpu")).estimate()
    for seed, trial in enumerate(trials):
        alone = ModelLearner(trial, data, Workers(), torch.device("cpu")).estimate()
        torch.testing.assert_close(pack.terms[seed], alone.terms, rtol=1e-12, atol=1e-14)
        assert alone.terms.item() > 0
    assert pack.terms.shape == (2, 1)


def test_a_trial_is_judged_on_the_specs_constraints_not_on_its_regulariser():
    trial = _trials("training.constraint_rows_per_group=8")[0]
    (row,) = train([trial], ListSink())
    assert row["status"] == "finished"
    names = json.loads(row[CONSTRAINT_NAMES])
    assert len(names) == 2 and all(name.startswith("loss_gap") for name in names)


def test_fairrets_projection_losses_are_refused_in_one_line_naming_the_field():
    with pytest.raises(SpecError) as caught:
        load_spec(QUICKSTART, ["algorithms=[{name: fairret, params: {loss: kl_projection}}]"])
    assert caught.value.field == "algorithms.0.params.loss"
    assert "cvxpy" in str(caught.value) and "\n" not in str(caught.value)


def test_a_norm_order_with_the_lse_loss_is_refused_rather_than_ignored():
    with pytest.raises(SpecError, match="p is read by loss: norm only") as caught:
        load_spec(QUICKSTART, ["algorithms=[{name: fairret, params: {loss: lse, p: 2}}]"])
    assert caught.value.field == "algorithms.0.params.p"


def test_the_defaults_are_the_papers_settings():
    hp = FairretHyperparameters()
    assert (hp.statistic, hp.loss, hp.p, hp.weight, hp.lr, hp.primal) == (
        "accuracy",
        "norm",
        1.0,
        0.5,
        0.05,
        "sgd",
    )
