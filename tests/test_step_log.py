"""A step's log (``algorithms.base.StepLog``) is computed when read, yet gives the values of
its own step however many steps later it is read."""

import pytest
import torch

from ctrain_dist.algorithms import Sample, build_algorithm
from ctrain_dist.algorithms.base import StepLog, info
from ctrain_dist.algorithms.multiplier import Multiplier


def _oracle(x: torch.Tensor):
    """loss ‖x − 1‖², constraint values x − 0.5 (both violated at the start)."""

    def estimate() -> Sample:
        c = x - 0.5
        return Sample(((x - 1) ** 2).sum(), c, c.detach(), torch.ones_like(c, dtype=torch.bool))

    return estimate


@pytest.mark.parametrize(
    ("name", "extra"), [("alm", None), ("ialm", "penalty"), ("spbm", "max_penalty")]
)
def test_a_log_read_late_gives_its_own_steps_values(name, extra):
    x = torch.full((2,), 2.0, dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm(name, [x], 2, {"lr": 0.1})
    estimate = _oracle(x)
    algorithm.step(estimate)
    log = algorithm.step(estimate)
    read_now = {key: value.clone() for key, value in log.items()}
    duals_now = algorithm.multipliers()
    for _ in range(5):
        algorithm.step(estimate)
    assert list(log) == list(read_now)
    for key, value in read_now.items():
        assert torch.equal(log[key], value), key
    assert torch.equal(log["max_multiplier"], duals_now.amax())
    assert algorithm.multipliers().amax() != duals_now.amax()  # the state did move on
    if extra is not None:
        assert extra in log


def test_the_log_holds_the_loss_detached_and_the_worst_violation():
    loss = torch.tensor(2.0, requires_grad=True) * 1.5
    decision = torch.tensor([-0.2, 0.3])
    duals = Multiplier((2,), device=torch.device("cpu"), dtype=torch.float32)
    log = info(Sample(loss, decision, decision, torch.tensor([True, True])), duals, extra=loss)
    assert isinstance(log, StepLog)
    assert list(log) == ["loss", "max_violation", "max_multiplier", "extra"]
    assert len(log) == 4
    assert not log["loss"].requires_grad and log["loss"] == 3.0
    assert log["max_violation"] == pytest.approx(0.3)
    assert log["max_multiplier"] == 0.0
    assert not log["extra"].requires_grad
    assert log.computed().keys() == dict(log).keys()


def test_an_equalitys_logged_violation_is_its_distance_from_zero():
    """h = −0.4 is 0.4 from feasible; an inequality at −0.4 is feasible."""
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    algorithm = build_algorithm("alm", [x], 2, {}, equality=[True, False])

    def estimate() -> Sample:
        c = x - 0.4  # both values −0.4 at x = 0
        return Sample((x**2).sum(), c, c.detach(), torch.ones_like(c, dtype=torch.bool))

    log = algorithm.step(estimate)
    assert log["max_violation"] == pytest.approx(0.4)
    inequalities = build_algorithm("alm", [x], 2, {})
    assert inequalities.step(estimate)["max_violation"] == 0.0
