"""The dual variable: its ascent step, its projection, packed rows, state and placement."""

import pytest
import torch

from ctrain_dist.algorithms import ALGORITHMS, Multiplier, build_algorithm

PRIMAL_DUAL = {"alm", "ssl_alm", "ialm", "nupi", "classical_pbm", "spbm"}
"""The registered algorithms that keep multipliers."""


def _multiplier(shape=(3,), dtype=torch.float64, **box) -> Multiplier:
    return Multiplier(shape, device=torch.device("cpu"), dtype=dtype, **box)


def _tensor(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_ascent_adds_the_step_size_times_the_direction():
    duals = _multiplier(init=1.0)
    duals.ascend(0.5, _tensor(2.0, 0.0, 1.0))
    assert torch.equal(duals.value, _tensor(2.0, 1.0, 1.5))


def test_ascent_projects_onto_the_nonnegative_orthant_without_an_upper_bound():
    duals = _multiplier(init=1.0)
    duals.ascend(1.0, _tensor(-5.0, 1e6, -1.0))
    assert torch.equal(duals.value, _tensor(0.0, 1.0 + 1e6, 0.0))


def test_ascent_projects_onto_a_box():
    duals = _multiplier(upper=3.0)
    duals.ascend(1.0, _tensor(-1.0, 2.0, 10.0))
    assert torch.equal(duals.value, _tensor(0.0, 2.0, 3.0))


def test_update_projects_a_value_computed_by_the_caller_onto_a_box_above_zero():
    duals = _multiplier(init=1.0, lower=0.5, upper=2.0)
    duals.update(duals.value * _tensor(0.1, 1.5, 4.0))
    assert torch.equal(duals.value, _tensor(0.5, 1.5, 2.0))


@pytest.mark.parametrize("box", [{"init": -1.0}, {"init": 4.0, "upper": 3.0}])
def test_an_initial_value_outside_the_box_is_refused(box):
    with pytest.raises(ValueError, match="outside"):
        _multiplier(**box)


def test_a_packed_multiplier_moves_each_seed_on_its_own_row():
    duals = _multiplier(shape=(2, 3), upper=1.5)
    duals.ascend(1.0, torch.tensor([[1.0, -1.0, 2.0], [0.5, 3.0, -2.0]], dtype=torch.float64))
    expected = torch.tensor([[1.0, 0.0, 1.5], [0.5, 1.5, 0.0]], dtype=torch.float64)
    assert torch.equal(duals.value, expected)


def test_the_multipliers_never_join_the_autograd_graph():
    c = _tensor(1.0, 2.0, 3.0).requires_grad_()
    duals = _multiplier()
    duals.ascend(0.1, c * 2)
    assert not duals.value.requires_grad


def test_the_direction_is_cast_to_the_multipliers_dtype():
    duals = _multiplier(dtype=torch.float32)
    duals.ascend(0.1, _tensor(1.0, 2.0, 3.0))
    assert duals.value.dtype == torch.float32


def test_state_dict_round_trips_the_value_as_a_copy():
    duals = _multiplier(init=0.25)
    duals.ascend(1.0, _tensor(1.0, 2.0, 3.0))
    state = duals.state_dict()
    duals.ascend(1.0, _tensor(1.0, 1.0, 1.0))
    fresh = _multiplier()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.value, _tensor(1.25, 2.25, 3.25))


def test_load_state_dict_keeps_the_multipliers_dtype():
    duals = _multiplier(dtype=torch.float32)
    duals.load_state_dict({"value": _tensor(1.0, 2.0, 3.0)})
    assert duals.value.dtype == torch.float32


def test_load_state_dict_refuses_multipliers_of_another_shape():
    packed = _multiplier(shape=(2, 3))
    with pytest.raises(ValueError, match="shape"):
        packed.load_state_dict(_multiplier().state_dict())


@pytest.mark.parametrize("seeds", [None, 2], ids=["one", "packed"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_an_algorithms_multipliers_follow_its_parameters_device_dtype_and_seeds(name, seeds):
    if seeds is not None and not ALGORITHMS[name].batchable:
        pytest.skip(f"{name} trains one seed at a time")
    shape = (3,) if seeds is None else (seeds, 3)
    x = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float32, device="meta"))
    duals = build_algorithm(name, [x], 2, {}, seeds).multipliers()
    assert duals.device == x.device
    assert duals.dtype == torch.float32
    m = 2 if name in PRIMAL_DUAL else 0
    assert duals.shape == (*shape[:-1], m)


def test_an_algorithms_multipliers_are_a_copy():
    x = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    algorithm = build_algorithm("alm", [x], 1, {})
    algorithm.multipliers().add_(1.0)
    assert torch.equal(algorithm.multipliers(), torch.zeros(1, dtype=torch.float64))
