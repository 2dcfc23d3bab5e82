"""Empty groups: a comparison whose group, or (group, label) cell, has no row in the minibatch
contributes no value, gradient or dual update; the others read what a direct computation over
the non-empty groups gives, and a design weight below 1 changes no group mean."""

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from ctrain_dist.algorithms import Sample, build_algorithm
from ctrain_dist.constraints import ConstrainedProblem, Constraint, EqualizedOdds, LossGap
from ctrain_dist.data.coverage import empty_probability, split_strata
from ctrain_dist.data.load import load_data
from ctrain_dist.data.sampler import MinibatchSampler
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import check_sampling, load_spec
from ctrain_dist.trial.loop import train

REPRO = Path(__file__).parents[1] / "sweeps" / "empty-groups-adult.yaml"


def _batch(groups: list[int], labels: list[float], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(groups), generator=generator, dtype=torch.float64)
    return logits, torch.tensor(labels, dtype=torch.float64), torch.tensor(groups)


def _bce(logits, labels):
    return functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")


def _readings(problem: ConstrainedProblem, logits, labels, groups, weights=None):
    """Both ways a step reads a minibatch: from (all-reduced) statistics, and in one process."""
    stats = problem.statistics(logits, labels, groups, weights)
    return [problem.estimate(stats), problem.batch_estimate(logits, labels, groups, weights)]


def test_an_absent_group_leaves_the_other_comparisons_as_computed_directly():
    logits, labels, groups = _batch([0, 0, 1, 1, 1, 0], [1, 0, 1, 0, 0, 1])  # no row of group 2
    losses = _bce(logits, labels)
    gap = losses[groups == 0].mean() - losses[groups == 1].mean()
    problem = ConstrainedProblem([LossGap(0.02, num_groups=3)])  # pairs (0,1), (0,2), (1,2)
    for _, c, decision, defined in _readings(problem, logits, labels, groups):
        assert defined.tolist() == [True, True, False, False, False, False]
        torch.testing.assert_close(c[:2], torch.stack([gap - 0.02, -gap - 0.02]))
        assert c[2:].tolist() == [0.0] * 4  # no spurious violation
        torch.testing.assert_close(decision, c.detach())


def test_an_absent_group_gives_its_comparisons_no_gradient():
    logits, labels, groups = _batch([0, 0, 1, 1], [1, 0, 1, 0])
    logits.requires_grad_(True)
    problem = ConstrainedProblem([LossGap(0.0, num_groups=3, pairs="vs_rest")])
    _, c, _, defined = problem.batch_estimate(logits, labels, groups)
    assert defined.tolist() == [True, True, True, True, False, False]
    (gradient,) = torch.autograd.grad(c[4:].sum(), logits)
    assert gradient.abs().sum() == 0


def test_vs_rest_and_vs_population_skip_only_the_absent_group():
    logits, labels, groups = _batch([0, 0, 1, 1, 0], [1, 0, 1, 0, 1])
    losses = _bce(logits, labels)
    for pairs, other in (("vs_rest", losses[groups == 1]), ("vs_population", losses)):
        problem = ConstrainedProblem([LossGap(0.0, num_groups=3, pairs=pairs)])
        for _, c, _, defined in _readings(problem, logits, labels, groups):
            assert defined.tolist() == [True, True, True, True, False, False], pairs
            torch.testing.assert_close(c[0], losses[groups == 0].mean() - other.mean())


def test_an_empty_group_label_cell_skips_its_true_positive_rate_only():
    # group 1 has no positive: its TPR is undefined, its FPR is not
    logits, labels, groups = _batch([0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 0])
    hard = (logits > 0).double()
    fpr_gap = hard[(groups == 0) & (labels == 0)].mean() - hard[(groups == 1)].mean()
    problem = ConstrainedProblem([EqualizedOdds(0.05, num_groups=2)])
    for _, c, decision, defined in _readings(problem, logits, labels, groups):
        assert defined.tolist() == [False, False, True, True]
        assert c[:2].tolist() == decision[:2].tolist() == [0.0, 0.0]
        torch.testing.assert_close(decision[2:], torch.stack([fpr_gap - 0.05, -fpr_gap - 0.05]))


def test_a_design_weight_below_one_leaves_the_group_mean_unchanged():
    # a 0.5 % group with 4 of 64 rows: design weight 0.005 * 64 / 4 = 0.08, count 0.32 < 1
    groups = [0] * 60 + [1] * 4
    logits, labels, groups = _batch(groups, [float(i % 2) for i in range(64)], seed=3)
    weights = torch.where(groups == 1, 0.08, 0.995 * 64 / 60).double()
    losses = _bce(logits, labels)
    gap = losses[groups == 0].mean() - losses[groups == 1].mean()
    problem = ConstrainedProblem([LossGap(0.0, num_groups=2)])
    for _, c, _, defined in _readings(problem, logits, labels, groups, weights):
        assert bool(defined.all())
        torch.testing.assert_close(c, torch.stack([gap, -gap]))


def _quadratic_oracle(x: torch.Tensor, defined: list[bool]):
    """loss ‖x‖², constraint values 1 − x_i (violated at 0), some of them undefined."""
    mask = torch.tensor(defined)

    def estimate() -> Sample:
        c = torch.where(mask, 1.0 - x, torch.zeros_like(x))
        return Sample((x**2).sum(), c, c.detach(), mask)

    return estimate


DUAL_METHODS = {
    "alm": ("alm", {}),
    "alm_momentum": ("alm", {"dual_momentum": 0.5}),
    "alm_dual_primal": ("alm", {"order": "dual_primal"}),
    "ssl_alm": ("ssl_alm", {}),
    "ialm": ("ialm", {}),
    "nupi": ("nupi", {}),
    "classical_pbm": ("classical_pbm", {"inner_steps": 1, "init_multiplier": 1.0}),
}
"""Label: (algorithm, options), settings whose dual steps read the ``defined`` mask in
different ways: as a mask, or through a direction that is 0 where undefined."""


@pytest.mark.parametrize("label", sorted(DUAL_METHODS))
def test_an_undefined_value_keeps_its_multiplier_while_a_defined_one_moves(label):
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    name, options = DUAL_METHODS[label]
    algorithm = build_algorithm(name, [x], 2, options)
    before = algorithm.multipliers()
    for _ in range(3):
        algorithm.step(_quadratic_oracle(x, [True, False]))
    after = algorithm.multipliers()
    assert after[1] == before[1]
    assert after[0] != before[0]


class _CarelessGap(Constraint):
    """A user's constraint that marks its second value undefined yet reads 1 there, against
    the contract (an undefined value reads 0)."""

    kind, num_values, num_statistics = "careless", 2, 1

    def statistics(self, logits, labels, groups, weights=None, losses=None):
        return logits.sum().reshape(1)

    def value(self, stats, strict=False):
        return torch.cat([stats - 1.0, stats.detach() * 0 + 1.0])

    def estimate(self, stats):
        values = self.value(stats)
        return values, values.detach(), torch.tensor([True, False])

    def names(self, group_names):
        return ["careless[0]", "careless[1]"]


def test_a_user_constraint_is_held_to_undefined_values_reading_zero():
    logits, labels, groups = _batch([0, 1, 0, 1], [1, 0, 1, 0])
    problem = ConstrainedProblem([_CarelessGap(0.0)])
    for _, c, decision, defined in _readings(problem, logits, labels, groups):
        assert defined.tolist() == [True, False]
        assert c[1] == 0 and decision[1] == 0
        torch.testing.assert_close(c[0], logits.sum() - 1.0)
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm("alm", [x], 2, {})

    def estimate() -> Sample:
        stats = problem.statistics(x, labels[:2], groups[:2])
        return Sample((x**2).sum(), *problem.estimate(stats)[1:])

    for _ in range(3):
        algorithm.step(estimate)
    assert algorithm.multipliers()[1] == 0


def test_the_switching_method_takes_an_objective_step_when_only_undefined_values_violate():
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm("switching_subgradient", [x], 2, {"lr": 0.1})
    info = algorithm.step(_quadratic_oracle(x, [False, False]))
    assert info["objective_step_share"] == 1.0
    assert info["max_violation"] == 0.0


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def evals(self, rows):
        self.rows.extend(rows)

    def finish(self, row):
        self.trial = row


def _adult_race(*overrides: str):
    """Issue #14's run with plain batches serving objective and constraints (the spec's own
    separate constraint draw turned off: ``tests/test_constraint_batches.py`` covers it)."""
    plain = ["algorithms=[{name: alm}]", "training.constraint_rows_per_group=null"]
    return load_spec(REPRO, [*plain, *overrides])


def test_the_trainer_counts_the_estimates_whose_minibatch_lacks_a_group():
    spec = _adult_race("training.budget.steps=60", "training.eval_every=60")
    (trial,) = spec.trials()

    sink = _Rows()
    train([trial], sink)
    data = load_data(trial.data, trial.split)
    sampler = MinibatchSampler(data.splits["train"], 8, trial.seed)
    batches = [data.groups[sampler.next()] for _ in range(60)]
    lacking = sum(int(len(set(b.tolist())) < 2) for b in batches)
    last = [row for row in sink.rows if row["step"] == 60]
    assert lacking > 0
    for row in last:
        assert row["estimates"] == 60
        assert row["empty_group_estimates_0"] == row["empty_group_estimates_1"] == lacking


def test_group_balanced_batches_leave_no_estimate_without_a_group():
    spec = _adult_race(
        "training.budget.steps=40", "training.eval_every=40", "training.rows_per_group=4"
    )
    assert check_sampling(spec) == []


def test_the_warning_names_the_batch_size_and_gives_the_exact_share_of_batches():
    (warning,) = check_sampling(_adult_race())
    assert warning.startswith("training.batch_size: ")
    data = load_data(_adult_race().data, _adult_race().split)
    train_groups = data.groups[data.splits["train"]]
    rows, minority = train_groups.numel(), int((train_groups == 0).sum())
    exact = math.comb(rows - minority, 8) / math.comb(rows, 8)
    assert f"{exact:.1%} of minibatches" in warning
    assert "rows_per_group" in warning


def test_the_share_of_batches_with_an_empty_cell_is_the_hypergeometric_union():
    data = load_data(_adult_race().data, _adult_race().split)
    strata = split_strata(data, "train", 64, None, by_label=True)
    (stratum,) = strata
    sizes = [cell.rows for cell in stratum.cells]
    total = stratum.rows
    exact = sum(
        (-1) ** (len(s) + 1) * math.comb(total - sum(s), 64) / math.comb(total, 64)
        for k in range(1, len(sizes) + 1)
        for s in itertools.combinations(sizes, k)
    )
    assert empty_probability(strata) == pytest.approx(exact, rel=1e-9)


def test_a_quota_the_training_split_cannot_meet_is_refused_naming_the_field():
    with pytest.raises(SpecError) as caught:
        check_sampling(_adult_race("training.rows_per_group=3"))
    assert caught.value.field == "training.rows_per_group"
    with pytest.raises(SpecError) as caught:
        check_sampling(_adult_race("training.batch_size=20000", "training.rows_per_group=10000"))
    assert caught.value.field == "training.rows_per_group"
