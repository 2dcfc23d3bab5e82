"""Proxy constraints: the hard 0/1 rate drives multipliers, switching and feasibility inside
the algorithms; the sigmoid surrogate drives only the primal gradient."""

from types import SimpleNamespace

import torch

from ctrain_dist.algorithms import Sample, build_algorithm
from ctrain_dist.constraints import ConstrainedProblem, LossGap, PositiveRateGap, build_constraints

BOUND = 0.1


def _rate_oracle(shift: torch.Tensor, decide_on: str = "strict"):
    """Group 0's logits all just above 0 (hard rate 1, sigmoid ≈ 0.52); group 1's half at +3,
    half at −3 (hard rate 0.5, sigmoid 0.5): the surrogate gap 0.02 is feasible under
    ``BOUND``, the hard gap 0.5 is not."""
    base = torch.tensor([0.1] * 4 + [3.0, -3.0] * 2, dtype=torch.float64)
    groups = torch.tensor([0] * 4 + [1] * 4)
    labels = torch.zeros(8, dtype=torch.float64)
    problem = ConstrainedProblem([PositiveRateGap(BOUND, num_groups=2, decide_on=decide_on)])

    def estimate() -> Sample:
        return Sample(*problem.batch_estimate(base + shift, labels, groups))

    return estimate


def test_the_surrogate_says_feasible_where_the_hard_rate_violates():
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    sample = _rate_oracle(shift)()
    assert sample.c.max() < 0
    assert sample.decision[0] > 0.3


def test_the_multiplier_rises_with_the_hard_rate_while_the_surrogate_is_feasible():
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm("alm", [shift], 2, {"lr": 1e-4, "dual_lr": 0.1, "rho": 0.0})
    duals = []
    for _ in range(5):
        algorithm.step(_rate_oracle(shift))
        duals.append(float(algorithm.multipliers()[0]))
    assert duals == sorted(duals) and duals[0] > 0
    assert float(algorithm.multipliers()[1]) == 0.0  # the reverse gap is satisfied


def test_deciding_on_the_surrogate_leaves_the_multiplier_at_zero_there():
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm("alm", [shift], 2, {"lr": 1e-4, "dual_lr": 0.1, "rho": 0.0})
    for _ in range(5):
        algorithm.step(_rate_oracle(shift, decide_on="surrogate"))
    assert algorithm.multipliers().tolist() == [0.0, 0.0]


def test_the_switching_method_takes_a_constraint_step_on_the_hard_violation():
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm("switching_subgradient", [shift], 2, {"lr": 0.1})
    info = algorithm.step(_rate_oracle(shift))
    assert info["objective_step_share"] == 0.0
    assert info["max_violation"] > 0.3


def test_the_primal_gradient_follows_the_surrogate():
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    sample = _rate_oracle(shift)()
    (gradient,) = torch.autograd.grad(sample.c[0], shift)
    assert gradient != 0  # the hard rate alone would give none


def test_a_loss_gap_decides_on_its_own_value():
    logits = torch.randn(10, dtype=torch.float64)
    labels, groups = (logits > 0).double(), torch.arange(10) % 2
    _, c, decision, _ = ConstrainedProblem([LossGap(0.01, 2)]).batch_estimate(
        logits, labels, groups
    )
    assert torch.equal(c, decision)


def test_rate_constraints_decide_on_the_strict_value_by_default():
    (built,) = build_constraints(
        [SimpleNamespace(kind="positive_rate_gap", bound=0.1, pairs="all")], num_groups=2
    )
    assert built.decide_on == "strict"
