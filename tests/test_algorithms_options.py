"""The non-default options of ALM, iALM and SPBM keep the algorithm contract.

``test_algorithms`` checks every algorithm at its defaults and with each primal optimiser;
here the options with state or extra oracle calls (dual momentum, restart, the update orders,
iALM's growing penalty, SPBM's penalty rules, inner steps and annealing) resume bitwise from
``state_dict``, keep packed seeds each on the trajectory it takes alone, read nothing on the
host, and refuse settings they would not read. Problem and oracle are ``test_algorithms``'s.
"""

from __future__ import annotations

import copy

import pytest
import torch
from bitwise import assert_bitwise_equal
from pydantic import ValidationError
from test_algorithms import _host_counters, _HostSyncDetector, _problem

from ctrain_dist.algorithms import ALGORITHMS, build_algorithm

OPTIONS = [
    ("alm", {"augmentation": "quadratic", "dual_momentum": 0.5, "restart": True}),
    ("alm", {"augmentation": "none", "order": "dual_primal", "primal": "adam", "lr": 0.01}),
    ("alm", {"order": "primal_dual", "dual_momentum": 0.3}),
    ("alm", {"order": "extragradient"}),
    ("alm", {"order": "extragradient", "primal": "adam", "lr": 0.01, "augmentation": "quadratic"}),
    ("ialm", {"growth": 1.05, "max_penalty": 2.0, "dual_momentum": 0.5}),
    ("spbm", {"penalty_update": "aimd", "penalty_mult": 0.9, "inner_steps": 2}),
    ("spbm", {"penalty_update": "alm", "rho": 3.0, "max_penalty": 10.0, "annealing_period": 3}),
    ("spbm", {"function": "quadratic_reciprocal", "primal": "momentum", "momentum": 0.5}),
    ("switching_subgradient", {"tol": 0.5, "tol_rule": "diminishing", "decide_on": "independent"}),
    ("switching_subgradient", {"tol": 1.5, "output": "random"}),
    ("switching_subgradient", {"tol": 1.5, "output": "average", "step_rule": "diminishing"}),
]
IDS = [f"{name}-{'-'.join(map(str, settings.values()))}" for name, settings in OPTIONS]


@pytest.mark.parametrize("seeds", [None, 3], ids=["one", "packed"])
@pytest.mark.parametrize(("name", "settings"), OPTIONS, ids=IDS)
def test_options_resume_the_same_trajectory_bitwise(name, settings, seeds):
    k = 7
    x, estimate, generator = _problem(start=3.0, sigma=0.1, seeds=seeds)
    algorithm = build_algorithm(name, [x], 1, settings, seeds)
    for _ in range(k):
        algorithm.step(estimate)
    saved_x, saved_state = x.detach().clone(), copy.deepcopy(algorithm.state_dict())
    saved_oracle = generator.get_state()
    for _ in range(k):
        algorithm.step(estimate)

    y, other_estimate, other_generator = _problem(start=50.0, sigma=0.1, seed=9, seeds=seeds)
    with torch.no_grad():
        y.copy_(saved_x)
    other_generator.set_state(saved_oracle)
    resumed = build_algorithm(name, [y], 1, settings, seeds)
    resumed.load_state_dict(saved_state)
    for _ in range(k):
        resumed.step(other_estimate)
    assert torch.equal(y, x)
    assert_bitwise_equal(resumed.state_dict(), algorithm.state_dict())


@pytest.mark.parametrize(("name", "settings"), OPTIONS, ids=IDS)
def test_packed_seeds_each_take_the_steps_they_take_alone(name, settings):
    """Seed i of a pack of 3 starts at 3 + i; alone, the same start and the same noise (the
    pack's noise for seed i is row i of each draw, so the lone runs replay those rows)."""
    generator = torch.Generator().manual_seed(0)
    noise = [0.1 * torch.randn(3, 2, generator=generator, dtype=torch.float64) for _ in range(40)]

    def oracle(x, seed=None):
        """Draw k's rows in turn: all three (packed) or row ``seed`` (alone)."""
        draws = iter(noise)

        def estimate():
            row = next(draws) if seed is None else next(draws)[seed]
            return ((x - 2) ** 2).sum(-1) + row[..., 0] * x.sum(-1), x - 1 + row[..., 1:]

        return estimate

    x = torch.nn.Parameter((3.0 + torch.arange(3, dtype=torch.float64)).reshape(3, 1))
    packed = build_algorithm(name, [x], 1, settings, seeds=3)
    estimate = oracle(x)
    for _ in range(15):
        packed.step(estimate)
    for seed in range(3):
        y = torch.nn.Parameter(torch.tensor([3.0 + seed], dtype=torch.float64))
        alone = build_algorithm(name, [y], 1, settings)
        estimate = oracle(y, seed)
        for _ in range(15):
            alone.step(estimate)
        torch.testing.assert_close(y, x[seed], rtol=0, atol=1e-12)
        torch.testing.assert_close(
            alone.multipliers(), packed.multipliers()[seed], rtol=0, atol=1e-12
        )


@pytest.mark.parametrize(("name", "settings"), OPTIONS, ids=IDS)
def test_options_never_read_a_tensor_value_on_the_host(name, settings):
    x, estimate, _ = _problem(start=3.0, sigma=0.1)
    algorithm = build_algorithm(name, [x], 1, settings)
    algorithm.step(estimate)
    with _HostSyncDetector(_host_counters(algorithm)) as detector:
        for _ in range(4):
            algorithm.step(estimate)
    assert detector.syncs == []


@pytest.mark.parametrize(
    ("name", "settings", "refused"),
    [
        ("alm", {"augmentation": "none", "rho": 2.0}, "rho is read by augmentation"),
        ("alm", {"order": "extragradient", "restart": True}, "no dual_momentum or restart"),
        ("spbm", {"rho": 2.0}, "rho is read by penalty_update alm"),
        ("spbm", {"anneal_penalty_mult": False}, "only with an annealing_period"),
        ("spbm", {"init_penalty": 5.0}, "init_penalty must lie within"),
        ("ialm", {"growth": 0.9}, "greater than or equal to 1"),
    ],
)
def test_a_setting_that_would_not_be_read_or_is_out_of_range_is_refused(name, settings, refused):
    with pytest.raises(ValidationError, match=refused):
        ALGORITHMS[name].hyperparameters(**settings)


def test_ialm_dual_step_is_capped_by_the_penalty_and_by_gamma_over_the_norm():
    for penalty, bound, expected in ((0.5, 10.0, 0.5 * 2.0), (5.0, 1.0, 1.0)):
        x = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
        settings = {"penalty": penalty, "dual_step_bound": bound}
        algorithm = build_algorithm("ialm", [x], 1, settings)
        algorithm.step(lambda x=x: (((x - 2) ** 2).sum(), x - 1))  # c = 2, ‖c‖ = 2
        assert algorithm.multipliers().item() == pytest.approx(expected)


def test_ialm_penalty_grows_geometrically_up_to_its_cap():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm("ialm", [x], 1, {"growth": 2.0, "max_penalty": 5.0})
    penalties = [algorithm.step(estimate)["penalty"].item() for _ in range(5)]
    assert penalties == [2.0, 4.0, 5.0, 5.0, 5.0]


def test_switching_subgradient_decides_on_the_independent_sample():
    """The first draw is feasible, the second not: ``same`` takes the objective step on the
    first, ``independent`` the constraint step that the second calls for, along the first's
    gradient (which is the same here)."""
    for decide_on, expected in (("same", 0.0 - 0.1 * 2 * (0.0 - 2)), ("independent", -0.1)):
        x = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
        offsets = iter([0.0, 5.0])

        def estimate(x=x, offsets=offsets):
            return ((x - 2) ** 2).sum(), x - 1 + next(offsets)

        settings = {"lr": 0.1, "decide_on": decide_on}
        algorithm = build_algorithm("switching_subgradient", [x], 1, settings)
        algorithm.step(estimate)
        assert x.item() == pytest.approx(expected)


def test_switching_subgradient_tolerance_diminishes_as_one_over_root_k():
    """c = 0.3 at every step, ε = 0.5: within ε/√(k+1) for k ≤ 1 (0.5, 0.354), beyond it
    from k = 2 (0.289): two objective steps, then constraint steps."""
    x = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    settings = {"tol": 0.5, "tol_rule": "diminishing"}
    algorithm = build_algorithm("switching_subgradient", [x], 1, settings)

    def estimate():
        return ((x - 2) ** 2).sum(), 0.3 + 0 * x

    shares = [algorithm.step(estimate)["objective_step_share"].item() for _ in range(4)]
    assert shares == pytest.approx([1.0, 1.0, 2 / 3, 0.5])


def test_an_alm_checkpoint_from_before_dual_momentum_resumes_on_the_same_trajectory():
    """A state_dict shaped as the older ``alm``'s (duals and optimizer, no ``direction``)
    loads, and the run goes on as the uninterrupted one: without dual momentum the buffer is
    unread, and its fresh value (zero) is what a first momentum step would start from."""
    x, estimate, generator = _problem(start=3.0, sigma=0.1)
    algorithm = build_algorithm("alm", [x], 1, {"primal": "adam", "lr": 0.01})
    for _ in range(5):
        algorithm.step(estimate)
    old = {k: v for k, v in copy.deepcopy(algorithm.state_dict()).items() if k != "direction"}
    assert set(old) == {"iteration", "duals", "optimizer"}
    saved_x, saved_oracle = x.detach().clone(), generator.get_state()
    for _ in range(5):
        algorithm.step(estimate)

    y, other_estimate, other_generator = _problem(start=50.0, sigma=0.1, seed=9)
    with torch.no_grad():
        y.copy_(saved_x)
    other_generator.set_state(saved_oracle)
    resumed = build_algorithm("alm", [y], 1, {"primal": "adam", "lr": 0.01})
    resumed.load_state_dict(old)
    for _ in range(5):
        resumed.step(other_estimate)
    assert torch.equal(y, x)
    assert_bitwise_equal(resumed.state_dict(), algorithm.state_dict())


def test_a_state_dict_missing_a_state_attribute_that_was_always_there_is_refused():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm("alm", [x], 1, {})
    algorithm.step(estimate)
    state = {k: v for k, v in algorithm.state_dict().items() if k != "duals"}
    with pytest.raises(KeyError, match="duals"):
        build_algorithm("alm", [x], 1, {}).load_state_dict(state)
