"""Each algorithm's single step, its contract (tensors out, no host sync) and exact resume.

Unit problem: minimise (x - 2)^2 subject to x - 1 <= 0; the solution is x* = 1 with multiplier
λ* = 2 (stationarity: 2(x* - 2) + λ* = 0). KKT convergence on richer problems is in
``test_algorithms_kkt.py``.
"""

import copy
from types import SimpleNamespace

import numpy as np
import osqp
import pytest
import torch
from bitwise import assert_bitwise_equal
from pydantic import ValidationError
from torch.utils._python_dispatch import TorchDispatchMode

from ctrain_dist.algorithms import ALGORITHMS, build_algorithm
from ctrain_dist.algorithms.pbm import quadratic_logarithmic, quadratic_reciprocal
from ctrain_dist.algorithms.primal import PrimalHyperparameters

PRIMAL_SETTINGS = {
    "momentum": {"primal": "momentum", "momentum": 0.5},
    "adam": {"primal": "adam", "lr": 0.01, "beta1": 0.8},
    "adamw": {"primal": "adamw", "lr": 0.01, "weight_decay": 0.1},
}
"""A non-default setting of each primal optimiser besides plain SGD."""
CONFIGURATIONS = [(name, {}) for name in sorted(ALGORITHMS)] + [
    (name, settings)
    for name, cls in sorted(ALGORITHMS.items())
    if issubclass(cls.hyperparameters, PrimalHyperparameters)
    for settings in PRIMAL_SETTINGS.values()
]
"""Every algorithm with its defaults, and every one taking a ``primal`` with each other one."""
CONFIGURATION_IDS = [f"{name}-{hp.get('primal', 'default')}" for name, hp in CONFIGURATIONS]


def _problem(start: float = 0.0, sigma: float = 0.0, seed: int = 0, seeds: int | None = None):
    """The unit problem's parameter, oracle and the oracle's generator; with ``seeds``, that
    many packed copies (``x: [K, 1]``) started at ``start, start + 1, ...``."""
    batch = () if seeds is None else (seeds,)
    starts = start + torch.arange(seeds or 1, dtype=torch.float64)
    x = torch.nn.Parameter(starts.reshape(*batch, 1))
    generator = torch.Generator().manual_seed(seed)

    def estimate():
        noise = sigma * torch.randn(*batch, 2, generator=generator, dtype=torch.float64)
        loss = ((x - 2) ** 2).sum(-1) + noise[..., 0] * x.sum(-1)
        return loss, x - 1 + noise[..., 1:]

    return x, estimate, generator


def test_sgd_step_is_a_gradient_step_on_the_objective():
    x, estimate, _ = _problem()
    build_algorithm("sgd", [x], 1, {"lr": 0.1}).step(estimate)
    assert x.item() == pytest.approx(0.0 - 0.1 * 2 * (0.0 - 2))


def test_adam_ignores_the_constraint_and_reaches_the_unconstrained_minimum():
    x, estimate, _ = _problem()
    algorithm = build_algorithm("adam", [x], 1, {"lr": 0.05})
    for _ in range(2000):
        algorithm.step(estimate)
    assert x.item() == pytest.approx(2.0, abs=1e-2)


def test_ssl_alm_keeps_multipliers_within_the_dual_bound():
    x, estimate, _ = _problem(start=50.0)
    algorithm = build_algorithm("ssl_alm", [x], 1, {"dual_lr": 10.0, "dual_bound": 3.0})
    algorithm.step(estimate)
    assert 0.0 <= algorithm.multipliers().item() <= 3.0


def test_alm_dual_step_uses_the_constraint_before_the_primal_step():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm("alm", [x], 1, {"lr": 0.1, "dual_lr": 0.5})
    algorithm.step(estimate)
    assert algorithm.multipliers().item() == pytest.approx(0.5 * (3.0 - 1))


def test_switching_subgradient_takes_a_constraint_step_when_infeasible():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm("switching_subgradient", [x], 1, {"lr": 0.1, "lr_constraint": 0.5})
    algorithm.step(estimate)
    assert x.item() == pytest.approx(3.0 - 0.5 * 1.0)


def test_switching_subgradient_takes_an_objective_step_when_feasible():
    x, estimate, _ = _problem(start=0.0)
    algorithm = build_algorithm("switching_subgradient", [x], 1, {"lr": 0.1})
    algorithm.step(estimate)
    assert x.item() == pytest.approx(0.0 - 0.1 * 2 * (0.0 - 2))


def test_switching_subgradient_objective_step_within_the_tolerance():
    x, estimate, _ = _problem(start=1.05)
    algorithm = build_algorithm("switching_subgradient", [x], 1, {"lr": 0.1, "tol": 0.1})
    algorithm.step(estimate)
    assert x.item() == pytest.approx(1.05 - 0.1 * 2 * (1.05 - 2))


def test_switching_subgradient_adaptive_step_is_polyak_on_the_constraint():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm(
        "switching_subgradient", [x], 1, {"step_rule": "adaptive", "lr_constraint": 10.0}
    )
    algorithm.step(estimate)
    # ĝ / ‖∇c‖² = 2 / 1: one step lands exactly on the linear constraint's boundary.
    assert x.item() == pytest.approx(1.0)


def test_switching_subgradient_adaptive_step_is_capped():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm(
        "switching_subgradient", [x], 1, {"step_rule": "adaptive", "lr_constraint": 0.5}
    )
    algorithm.step(estimate)
    assert x.item() == pytest.approx(3.0 - 0.5)


def test_penalty_ignores_a_satisfied_constraint():
    x, estimate, _ = _problem(start=0.0)
    build_algorithm("penalty", [x], 1, {"lr": 0.1, "weight": 5.0}).step(estimate)
    assert x.item() == pytest.approx(0.0 - 0.1 * 2 * (0.0 - 2))


def test_nupi_first_dual_step_is_gradient_ascent():
    x, estimate, _ = _problem(start=3.0)
    algorithm = build_algorithm("nupi", [x], 1, {"dual_lr": 0.5, "kappa_p": 4.0})
    algorithm.step(estimate)
    assert algorithm.multipliers().item() == pytest.approx(0.5 * (3.0 - 1))


def test_nupi_proportional_term_reacts_to_the_change_of_violation():
    x, estimate, _ = _problem(start=3.0)
    plain = build_algorithm("nupi", [x], 1, {"lr": 0.1, "kappa_p": 0.0})
    y, other, _ = _problem(start=3.0)
    damped = build_algorithm("nupi", [y], 1, {"lr": 0.1, "kappa_p": 4.0})
    for _ in range(2):
        plain.step(estimate)
        damped.step(other)
    # the violation shrank between the steps, so κ_P > 0 lowers the multiplier
    assert damped.multipliers().item() < plain.multipliers().item()


@pytest.mark.parametrize("phi", [quadratic_logarithmic, quadratic_reciprocal])
def test_penalty_barrier_functions_are_twice_continuous_at_one_half(phi):
    t = torch.tensor([0.5 - 1e-6, 0.5 + 1e-6], dtype=torch.float64, requires_grad=True)
    values = phi(t)
    (first,) = torch.autograd.grad(values.sum(), t, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), t)
    assert values[0].item() == pytest.approx(values[1].item(), abs=1e-5)
    assert first[0].item() == pytest.approx(first[1].item(), abs=1e-4)
    assert second[0].item() == pytest.approx(second[1].item(), rel=1e-3)


@pytest.mark.parametrize("phi", [quadratic_logarithmic, quadratic_reciprocal])
def test_penalty_barrier_functions_vanish_with_unit_slope_at_zero(phi):
    t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    value = phi(t)
    (slope,) = torch.autograd.grad(value.sum(), t)
    assert value.item() == 0.0
    assert slope.item() == pytest.approx(1.0)


def test_pbm_anneals_the_penalty_after_each_outer_iteration():
    x, estimate, _ = _problem()
    algorithm = build_algorithm(
        "classical_pbm",
        [x],
        1,
        {"inner_steps": 2, "penalty": 1.0, "anneal": 0.5, "min_penalty": 0.3},
    )
    penalties = [float(algorithm.step(estimate)["penalty"]) for _ in range(6)]
    assert penalties == [1.0, 0.5, 0.5, 0.3, 0.3, 0.3]


def test_ghost_sample_size_never_exceeds_its_bound():
    x, estimate, _ = _problem(sigma=0.1)
    calls = []

    def counted():
        calls.append(1)
        return estimate()

    algorithm = build_algorithm("ghost", [x], 1, {"max_level": 2, "level_probability": 0.2})
    for _ in range(30):
        before = len(calls)
        algorithm.step(counted)
        assert len(calls) - before <= 1 + 2 ** (2 + 1)
    assert len(calls) > 30 * 3  # with q = 0.2 the upper levels were drawn


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_step_returns_detached_zero_dim_tensors_with_the_loss(name):
    x, estimate, _ = _problem(start=3.0)
    info = build_algorithm(name, [x], 1, {}).step(estimate)
    assert "loss" in info
    for value in info.values():
        assert isinstance(value, torch.Tensor)
        assert value.ndim == 0
        assert not value.requires_grad


class _HostSyncDetector(TorchDispatchMode):
    """Records every op that copies a tensor's value to Python (``.item()``, ``float(t)``,
    ``bool(t)``, ``if t:``): on a GPU each one waits for the whole queue."""

    def __init__(self, host_counters: list[torch.Tensor]) -> None:
        super().__init__()
        self.host_counters = host_counters
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        reads = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)
        if func in reads and not any(args[0] is t for t in self.host_counters):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def _host_counters(algorithm) -> list[torch.Tensor]:
    """torch.optim's step counters, which it keeps on the CPU by design (reading them costs
    no device sync even when the parameters are on a GPU)."""
    optimizer = getattr(algorithm, "optimizer", None)
    if optimizer is None:
        return []
    return [state["step"] for state in optimizer.state.values() if "step" in state]


@pytest.mark.parametrize(
    ("name", "settings"),
    [(name, hp) for name, hp in CONFIGURATIONS if name != "ghost"],
    ids=[id_ for id_ in CONFIGURATION_IDS if not id_.startswith("ghost")],
)
@pytest.mark.parametrize("start", [0.0, 3.0], ids=["feasible", "infeasible"])
def test_step_never_reads_a_tensor_value_on_the_host(name, settings, start):
    x, estimate, _ = _problem(start=start)
    hp = {"inner_steps": 1, **settings} if name == "classical_pbm" else settings
    algorithm = build_algorithm(name, [x], 1, hp)
    algorithm.step(estimate)  # torch.optim initialises lazily; watch the steady state
    with _HostSyncDetector(_host_counters(algorithm)) as detector:
        for _ in range(3):
            algorithm.step(estimate)
    assert detector.syncs == []


@pytest.mark.parametrize("seeds", [None, 3], ids=["one", "packed"])
@pytest.mark.parametrize(("name", "settings"), CONFIGURATIONS, ids=CONFIGURATION_IDS)
def test_state_dict_resumes_the_same_trajectory_bitwise(name, settings, seeds):
    if seeds is not None and not ALGORITHMS[name].batchable:
        pytest.skip(f"{name} trains one seed at a time")
    k = 6
    x, estimate, generator = _problem(sigma=0.1, seeds=seeds)
    # PBM: the resumed steps cross outer iterations
    hp = {"inner_steps": 4, **settings} if name == "classical_pbm" else settings
    algorithm = build_algorithm(name, [x], 1, hp, seeds)
    for _ in range(k):
        algorithm.step(estimate)
    saved_x = x.detach().clone()
    saved_state = copy.deepcopy(algorithm.state_dict())
    saved_oracle = generator.get_state()
    for _ in range(k):
        algorithm.step(estimate)

    y, other_estimate, other_generator = _problem(start=123.0, sigma=0.1, seed=99, seeds=seeds)
    with torch.no_grad():
        y.copy_(saved_x)
    other_generator.set_state(saved_oracle)
    resumed = build_algorithm(name, [y], 1, hp, seeds)
    resumed.load_state_dict(saved_state)
    assert_bitwise_equal(resumed.state_dict(), saved_state, "loaded")
    for _ in range(k):
        resumed.step(other_estimate)
    assert torch.equal(y, x)
    assert torch.equal(resumed.multipliers(), algorithm.multipliers())
    assert_bitwise_equal(resumed.state_dict(), algorithm.state_dict())


def test_penalty_with_primal_adam_takes_adams_step_on_the_penalised_objective():
    x, estimate, _ = _problem(start=0.0)  # feasible: the hinge adds nothing
    y, same, _ = _problem(start=0.0)
    penalty = build_algorithm("penalty", [x], 1, {"primal": "adam", "lr": 0.1})
    adam = build_algorithm("adam", [y], 1, {"lr": 0.1})
    for _ in range(3):
        penalty.step(estimate)
        adam.step(same)
    assert torch.equal(x, y)


def test_primal_momentum_keeps_a_heavy_ball_buffer():
    x, estimate, _ = _problem(start=0.0)
    algorithm = build_algorithm("penalty", [x], 1, {"primal": "momentum", "momentum": 0.5})
    algorithm.step(estimate)
    algorithm.step(estimate)
    # v¹ = g⁰ = −4, x¹ = 0.2; g¹ = 2(0.2 − 2) = −3.6, v² = 0.5·(−4) − 3.6 = −5.6
    assert x.item() == pytest.approx(0.2 + 0.05 * 5.6)


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"primal": "adam", "momentum": 0.5}, "momentum is read by primal momentum"),
        ({"primal": "sgd", "beta1": 0.5}, "beta1 is read by primal adam or adamw"),
        ({"momentum": 0.5}, "not by sgd"),
    ],
)
def test_a_setting_the_chosen_primal_does_not_read_is_refused(settings, refused):
    with pytest.raises(ValidationError, match=refused):
        ALGORITHMS["alm"].hyperparameters(**settings)


def test_ghost_default_steps_are_square_summable_but_not_summable():
    zeta = ALGORITHMS["ghost"].hyperparameters().lr_decay
    assert 0.5 < zeta <= 1


class _UnfinishedQP:
    """An OSQP stand-in that stops at its iteration limit, as a hard QP can."""

    def setup(self, **problem):
        self.size = problem["q"].size

    def solve(self, raise_error):
        status = SimpleNamespace(
            status_val=osqp.SolverStatus.OSQP_MAX_ITER_REACHED, status="maximum iterations reached"
        )
        return SimpleNamespace(x=np.zeros(self.size), info=status)


def test_ghost_refuses_a_qp_solution_that_hit_the_iteration_limit(monkeypatch):
    x, estimate, _ = _problem(start=3.0)
    # A trust region β = 0.5 below the unconstrained step's size 2 binds, so the QP goes to
    # OSQP (``ghost_subproblems`` solves it exactly only when the box is inactive).
    algorithm = build_algorithm("ghost", [x], 1, {"beta": 0.5, "rho": 0.4})
    monkeypatch.setattr(osqp, "OSQP", _UnfinishedQP)
    with pytest.raises(RuntimeError, match="maximum iterations reached"):
        algorithm.step(estimate)


def test_host_sync_detector_sees_item_and_python_branching():
    t = torch.ones(())
    with _HostSyncDetector([]) as detector:
        t.item()
        if t > 0:
            pass
    assert len(detector.syncs) == 2
