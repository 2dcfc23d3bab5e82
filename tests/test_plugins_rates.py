"""The built-in safety kind ``rate_bound``: an absolute rate of one group, or of every row, on
one side of a bound (not a gap between groups), in the additive-statistics contract."""

from __future__ import annotations

import pytest
import torch

from ctrain_dist.constraints import RateBound, build_constraints
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import ConstraintSpec

LOGITS = torch.tensor([2.0, -1.0, 3.0, -2.0, 1.0, -3.0], dtype=torch.float64)
LABELS = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
GROUPS = torch.tensor([0, 0, 1, 1, 1, 1])


def strict_value(constraint: RateBound) -> float:
    return float(constraint.value(constraint.statistics(LOGITS, LABELS, GROUPS), strict=True))


def test_a_false_negative_rate_of_one_group_is_bounded_from_above():
    # group 1 positives: logits 3 (caught) and -3 (missed): FNR 1/2
    fnr = RateBound(0.1, num_groups=2, rate="fnr", group=1)
    assert strict_value(fnr) == pytest.approx(0.5 - 0.1)


def test_a_positive_rate_of_every_row_is_bounded_from_below():
    # 3 of 6 rows predicted positive: rate 1/2, required at least 0.8
    rate = RateBound(0.8, num_groups=2, rate="positive_rate", at_least=True)
    assert strict_value(rate) == pytest.approx(0.8 - 0.5)


def test_the_surrogate_is_the_sigmoid_rate_and_carries_a_gradient():
    logits = LOGITS.clone().requires_grad_()
    rate = RateBound(0.0, num_groups=2, rate="tpr")
    values, decision, defined = rate.estimate(rate.statistics(logits, LABELS, GROUPS))
    positives = LABELS > 0.5
    assert float(values.detach()) == pytest.approx(float(torch.sigmoid(LOGITS[positives]).mean()))
    assert float(decision) == pytest.approx(2 / 4)  # the hard rate decides
    assert bool(defined)
    values.sum().backward()
    assert logits.grad[positives].abs().min() > 0 and logits.grad[~positives].eq(0).all()


def test_a_minibatch_without_eligible_rows_leaves_the_value_undefined():
    fpr = RateBound(0.1, num_groups=2, rate="fpr", group=0)  # group 0 has no negatives
    values, _, defined = fpr.estimate(fpr.statistics(LOGITS, LABELS, GROUPS))
    assert not bool(defined) and float(values) == 0.0


def test_statistics_add_across_shards():
    rate = RateBound(0.1, num_groups=2, rate="fnr")
    whole = rate.statistics(LOGITS, LABELS, GROUPS)
    halves = [rate.statistics(LOGITS[s], LABELS[s], GROUPS[s]) for s in (slice(3), slice(3, 6))]
    assert torch.allclose(halves[0] + halves[1], whole)


def test_a_spec_builds_it_from_its_options():
    spec = ConstraintSpec(kind="rate_bound", bound=0.2, options={"rate": "fnr", "group": 1})
    (built,) = build_constraints([spec], num_groups=2)
    assert built.names(["women", "men"]) == ["rate_bound.fnr[men]<=0.2"]


def test_a_gap_kind_refuses_options():
    from ctrain_dist.spec import validate_model

    with pytest.raises(SpecError, match="loss_gap takes no options"):
        validate_model(
            ConstraintSpec, {"kind": "loss_gap", "bound": 0.1, "options": {"x": 1}}, str, ""
        )
