"""Our algorithms take the steps of the reference implementations on the same problem.

References: humancompatible.train 0.4.2 (``dual_optim.ALM`` with ``MoreauEnvelope``: its
SSL-ALM) and Cooper 1.0.1 (``SimultaneousOptimizer`` on a ``Lagrangian`` formulation, with
``torch.optim.SGD`` or Cooper's ``nuPI`` as the dual optimiser). Each run feeds both sides the
same fixed sequence of minibatch estimates in float64 and compares the iterates and
multipliers after every step.

Problem (``test_algorithms_kkt``'s): x ∈ R², f(x) = ½[(x₁ − 2)² + 2(x₂ − 1)²], constraints
x₁ + x₂ − 1 ≤ 0 (active at the solution, λ* = 4/3) and x₁ − x₂ − 3 ≤ 0 (inactive), started
at the unconstrained minimum (2, 1), where the first is violated. Minibatch k perturbs the
objective by σ ξₖᵀx and the constraints by σ(Ξₖx + ζₖ), σ = 0.1, drawn once per step from a
seeded generator: every oracle call within step k (SSL-ALM makes two) returns batch k, so
the references, which draw once a step, see what we see.

Tolerance: 1e-12 absolute on x and λ over 200 steps, for arithmetic that is equivalent but
not always the same: ``clamp(λ + ηc)`` against ``λ + η(clamp(λ + ρc) − λ)/ρ``, or the order
of νPI's terms. The runs agree bitwise except νPI's (within 7e-16 when written).
"""

from __future__ import annotations

from collections.abc import Callable

import cooper
import pytest
import torch
from humancompatible.train.dual_optim import ALM, MoreauEnvelope

from ctrain_dist.algorithms import Algorithm, build_algorithm

Q = torch.tensor([1.0, 2.0], dtype=torch.float64)
CENTRE = torch.tensor([2.0, 1.0], dtype=torch.float64)
A = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
B = torch.tensor([1.0, 3.0], dtype=torch.float64)
SIGMA = 0.1
STEPS = 200
TOLERANCE = 1e-12
PRIMAL = {
    "sgd": ({"lr": 0.1}, lambda params: torch.optim.SGD(params, lr=0.1)),
    "adam": (
        {"primal": "adam", "lr": 0.01, "beta1": 0.8},
        lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.999)),
    ),
}
"""Our primal settings and the same torch optimiser for the reference side."""


class Batches:
    """The fixed minibatch sequence: ``oracle(x)`` estimates ``(f, c)`` at ``x`` on batch
    ``step``, which the caller advances once per algorithm step."""

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.noise = [
            tuple(
                SIGMA * torch.randn(*shape, generator=generator, dtype=torch.float64)
                for shape in ((2,), (2, 2), (2,))
            )
            for _ in range(STEPS)
        ]
        self.step = 0

    def oracle(self, x: torch.Tensor) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def estimate() -> tuple[torch.Tensor, torch.Tensor]:
            xi, big_xi, zeta = self.noise[self.step]
            f = 0.5 * (Q * (x - CENTRE) ** 2).sum() + xi @ x
            return f, A @ x - B + big_xi @ x + zeta

        return estimate


def _start() -> torch.nn.Parameter:
    return torch.nn.Parameter(CENTRE.clone())


def _assert_same_step(ours: torch.Tensor, theirs: torch.Tensor, what: str, step: int) -> None:
    torch.testing.assert_close(
        ours, theirs, rtol=0, atol=TOLERANCE, msg=lambda m: f"{what} at step {step}: {m}"
    )


# --- SSL-ALM and ALM against humancompatible.train ---------------------------------------------


def _reference_alm(rho: float, dual_lr: float) -> ALM:
    return ALM(
        m=2,
        lr=dual_lr,
        penalty=rho,
        augmentation="hpr",
        is_ineq=True,
        dual_range=(0.0, 100.0),
        init_duals=torch.zeros(2, dtype=torch.float64),
    )


@pytest.mark.parametrize(
    ("primal", "rho", "dual_lr"),
    [("sgd", 0.5, 0.5), ("adam", 0.5, 0.5), ("sgd", 1.0, 0.2)],
    ids=["sgd-eta=rho", "adam-eta=rho", "sgd-eta<rho"],
)
def test_ssl_alm_without_smoothing_takes_the_reference_alms_steps(primal, rho, dual_lr):
    """SSL-ALM with μ = 0 is humancompatible.train's ``ALM`` ("hpr" augmentation) driven by
    ``forward_update`` (dual step first, then the primal step with the new multipliers).

    By design the reference's dual step ascends the augmented Lagrangian,
    λ ← λ + η([λ + ρc]₊ − λ)/ρ, and ours ascends c (the paper's step): the two agree wherever
    λ + ρc ≥ 0 or λ = 0, and everywhere when η = ρ (both are then [λ + ρc]₊). With η < ρ the test
    checks that the trajectory stays where they agree, so the comparison means something (with
    Adam's larger early steps it leaves that region, at step 169 with these settings, so the
    Adam primal is compared at η = ρ).
    """
    ours_hp, make_optimizer = PRIMAL[primal]
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm(
        "ssl_alm", [x], 2, {**ours_hp, "rho": rho, "dual_lr": dual_lr, "mu": 0.0}
    )
    optimizer, duals = make_optimizer([y]), _reference_alm(rho, dual_lr)
    for step in range(STEPS):
        before = duals.duals.clone()
        ours.step(batches.oracle(x))
        optimizer.zero_grad()
        f, c = batches.oracle(y)()
        if dual_lr != rho:
            agree = (before + rho * c.detach() >= 0) | (before == 0)
            assert agree.all(), f"λ > 0 > λ + ρc at step {step}"
        duals.forward_update(f, c).backward()
        optimizer.step()
        batches.step += 1
        _assert_same_step(x, y, "x", step)
        _assert_same_step(ours.multipliers(), duals.duals, "λ", step)


@pytest.mark.parametrize("primal", sorted(PRIMAL))
def test_alm_takes_the_reference_alms_steps_in_primal_first_order(primal):
    """Our ``alm`` is the reference's ``ALM`` ("hpr", η = ρ, see above) driven primal first:
    ``forward`` (the surrogate at λᵏ), backward, the primal step, then ``update`` on the
    constraint values at xᵏ. (It is not the reference's SSL-ALM with μ = 0, whose
    ``forward_update`` takes the dual step first.)"""
    ours_hp, make_optimizer = PRIMAL[primal]
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm("alm", [x], 2, {**ours_hp, "rho": 0.5, "dual_lr": 0.5})
    optimizer, duals = make_optimizer([y]), _reference_alm(0.5, 0.5)
    for step in range(STEPS):
        ours.step(batches.oracle(x))
        optimizer.zero_grad()
        f, c = batches.oracle(y)()
        duals.forward(f, c).backward()
        optimizer.step()
        duals.update(c.detach())
        batches.step += 1
        _assert_same_step(x, y, "x", step)
        _assert_same_step(ours.multipliers(), duals.duals, "λ", step)


def test_ssl_alm_smoothing_matches_the_reference_moreau_envelope_on_its_first_step():
    """With μ > 0 the first step agrees (the centre starts at x⁰, so the smoothing term is
    zero), and the next ones differ by design: the reference's ``MoreauEnvelope`` moves the
    centre towards xᵏ before the primal step, ours towards xᵏ⁺¹ after it (the paper's
    zᵏ⁺¹ = zᵏ + β(xᵏ⁺¹ − zᵏ)), which the two centres after that step show."""
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm("ssl_alm", [x], 2, {"lr": 0.1, "rho": 0.5, "dual_lr": 0.5})
    optimizer = MoreauEnvelope(torch.optim.SGD([y], lr=0.1), mu=2.0, beta=0.5)
    duals = _reference_alm(0.5, 0.5)
    previous = x.detach().clone()
    ours.step(batches.oracle(x))
    optimizer.zero_grad()
    f, c = batches.oracle(y)()
    duals.forward_update(f, c).backward()
    optimizer.step()
    _assert_same_step(x, y, "x", 0)
    _assert_same_step(ours.multipliers(), duals.duals, "λ", 0)
    (their_centre,) = optimizer.smoothing_buffer[0]["params"]
    _assert_same_step(their_centre, previous, "reference centre (towards x⁰)", 0)
    _assert_same_step(ours.centres[0], previous.lerp(x.detach(), 0.5), "our centre (x¹)", 0)


# --- Lagrangian GDA and νPI against Cooper -----------------------------------------------------


class _CooperProblem(cooper.ConstrainedMinimizationProblem):
    def __init__(self, estimate: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.estimate = estimate
        multiplier = cooper.multipliers.DenseMultiplier(num_constraints=2, dtype=torch.float64)
        self.constraint = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.Lagrangian,
            multiplier=multiplier,
        )

    def compute_cmp_state(self) -> cooper.CMPState:
        loss, c = self.estimate()
        return cooper.CMPState(
            loss=loss, observed_constraints={self.constraint: cooper.ConstraintState(violation=c)}
        )


def _cooper_run(
    ours_hp: dict,
    make_primal: Callable,
    make_dual: Callable[[list], torch.optim.Optimizer],
    after_first_step: Callable[[Algorithm], None] = lambda _: None,
) -> None:
    """Train our ``nupi`` with ``ours_hp`` and Cooper's simultaneous GDA side by side;
    ``after_first_step`` may adjust our state once, where Cooper's differs by design."""
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm("nupi", [x], 2, ours_hp)
    cmp = _CooperProblem(batches.oracle(y))
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=cmp,
        primal_optimizers=make_primal([y]),
        dual_optimizers=make_dual(list(cmp.dual_parameters())),
    )
    for step in range(STEPS):
        ours.step(batches.oracle(x))
        if step == 0:
            after_first_step(ours)
        optimizer.roll()
        batches.step += 1
        _assert_same_step(x, y, "x", step)
        _assert_same_step(ours.multipliers(), cmp.constraint.multiplier().detach(), "λ", step)


@pytest.mark.parametrize("primal", sorted(PRIMAL))
def test_lagrangian_gda_takes_coopers_simultaneous_steps(primal):
    """νPI with κ_P = 0, κ_I = 1 is gradient descent-ascent on f + λᵀc with the primal step at
    λᵏ and the dual step on c(xᵏ): Cooper's ``SimultaneousOptimizer`` with ``SGD(maximize)``
    as the dual optimiser. Cooper projects onto λ ≥ 0 only; our bound Λ = 100 never binds."""
    ours_hp, make_primal = PRIMAL[primal]
    _cooper_run(
        {**ours_hp, "dual_lr": 0.5, "kappa_p": 0.0, "kappa_i": 1.0},
        make_primal,
        lambda duals: torch.optim.SGD(duals, lr=0.5, maximize=True),
    )


def test_nupi_takes_coopers_nupi_steps_once_its_filter_memory_is_aligned():
    """νPI (κ_P = 2, κ_I = 1, ν = 0.3) against Cooper's ``nuPI`` optimiser with its "SGD"
    initialisation: both take gradient ascent as the first dual step (ξ₋₁ = e₀).

    They differ by design in the filter memory that step leaves: ours is ξ₀ = νe₀ + (1 − ν)e₀
    = e₀ (the paper's recursion, and Cooper's own docstring), Cooper 1.0.1's code stores
    ξ₀ = 0 (``_nupi_sgd_init``), so its second proportional term is κ_P(1 − ν)e₁ where ours is
    κ_P(1 − ν)(e₁ − e₀). Setting our memory to Cooper's after the first step makes every later
    step agree, which pins the difference to exactly that value."""
    ours_hp, make_primal = PRIMAL["sgd"]
    _cooper_run(
        {**ours_hp, "dual_lr": 0.2, "kappa_p": 2.0, "kappa_i": 1.0, "nu": 0.3},
        make_primal,
        lambda duals: cooper.optim.nuPI(duals, lr=0.2, Kp=2.0, Ki=1.0, ema_nu=0.3, maximize=True),
        after_first_step=lambda ours: ours.smoothed_error.zero_(),
    )
