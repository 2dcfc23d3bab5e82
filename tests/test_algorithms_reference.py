"""The toolkit's methods and Cooper's update schemes, step for step against the references.

humancompatible.train 0.4.2: ``iALM`` (ours ``ialm``), ``PBM`` (ours ``spbm``), ``ALM`` with
its ``quadratic`` / ``hpr`` / no augmentation, dual momentum and restart (ours ``alm``), and
``SSG`` (ours ``switching_subgradient``). Cooper 1.0.1: the ``AugmentedLagrangian`` formulation
under ``SimultaneousOptimizer``, both alternating optimisers and extragradient (``ExtraSGD``,
``ExtraAdam``), against ``alm``'s ``order``. Problem, minibatch sequence and helpers are
``test_reference_crosscheck``'s: every oracle call within step k returns batch k, as the
references (which call once, or recompute on the same batch) see it.

Tolerance: 1e-8 relative on x, λ (and SPBM's penalties) after each of 100 float64 steps, the
project's cross-check criterion. Most runs agree to rounding (1e-15); SPBM's with the
default ``dimin_adapt`` rule drifts to 6e-10, because a penalty at its floor 0.1 amplifies
the last-bit differences of the fused ``add_(alpha=…)`` in the multiplier step.

One alignment on the reference side, which is not a difference of method: the toolkit builds
``iALM``'s β, σ, γ and ``PBM``'s multipliers and penalties with ``torch.tensor(float)``, in
torch's default dtype, float32 unless told otherwise; the references are built here under
float64 as the default, so that both sides compute in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import cooper
import pytest
import torch
from humancompatible.train.dual_optim import ALM, PBM, SSG, iALM
from test_reference_crosscheck import Batches, _start

from ctrain_dist.algorithms import build_algorithm

STEPS = 100
RELATIVE = 1e-8
ADAM = {"primal": "adam", "lr": 0.01, "beta1": 0.8}


def _primal(settings: dict) -> Callable[[list], torch.optim.Optimizer]:
    if settings.get("primal") == "adam":
        return lambda p: torch.optim.Adam(p, lr=settings["lr"], betas=(settings["beta1"], 0.999))
    return lambda p: torch.optim.SGD(p, lr=settings["lr"])


def _float64(build: Callable[[], object]) -> object:
    """``build()`` with float64 as torch's default dtype (module docstring)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return build()
    finally:
        torch.set_default_dtype(previous)


def _close(ours: torch.Tensor, theirs: torch.Tensor, what: str, step: int) -> None:
    torch.testing.assert_close(
        ours, theirs, rtol=RELATIVE, atol=0, msg=lambda m: f"{what} at step {step}: {m}"
    )


def _against_toolkit(name, settings, reference, drive, extra=lambda ours, ref, step: None):
    """Train ours and the toolkit's dual optimiser ``reference`` side by side; ``drive(ref,
    f, c)`` runs the reference's part of one step around its primal optimiser's."""
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm(name, [x], 2, settings)
    optimizer = _primal(settings)([y])
    for step in range(STEPS):
        ours.step(batches.oracle(x))
        optimizer.zero_grad()
        f, c = batches.oracle(y)()
        drive(reference, f, c, optimizer)
        batches.step += 1
        _close(x, y, "x", step)
        if ours.multipliers().numel():  # SSG's reference keeps zeros it never moves
            _close(ours.multipliers(), reference.duals, "λ", step)
        extra(ours, reference, step)


def _dual_first(reference, f, c, optimizer) -> None:
    reference.forward_update(f, c).backward()
    optimizer.step()


def _primal_first(reference, f, c, optimizer) -> None:
    reference.forward(f, c).backward()
    optimizer.step()
    reference.update(c.detach())


# --- iALM ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"lr": 0.1, "penalty": 0.5, "growth": 1.01, "dual_step_bound": 0.3},
        {**ADAM, "penalty": 0.5, "growth": 1.01, "dual_step_bound": 0.3},
        {"lr": 0.1, "penalty": 0.2, "growth": 1.02, "dual_step_bound": 1.0, "dual_momentum": 0.5},
    ],
    ids=["sgd", "adam", "sgd-dual-momentum"],
)
def test_ialm_takes_the_reference_ialms_steps(settings):
    """Dual step min(β, γ/‖c‖)·c first, then the primal step on f + λᵀc + β/2‖[c]₊‖² with
    the new multipliers and the pre-growth β: the reference's ``forward_update``."""
    reference = _float64(
        lambda: iALM(
            m=2,
            beta=settings["penalty"],
            sigma=settings["growth"],
            gamma=settings["dual_step_bound"],
            momentum=settings.get("dual_momentum", 0.0),
            is_ineq=True,
            dual_range=(0.0, 100.0),
        )
    )
    _against_toolkit("ialm", settings, reference, _dual_first)


# --- ALM's augmentations, dual momentum and restart ----------------------------------------


@pytest.mark.parametrize(
    ("settings", "reference"),
    [
        (
            {"augmentation": "quadratic", "rho": 0.5, "dual_lr": 0.2},
            {"penalty": 0.5, "augmentation": "quadratic", "lr": 0.2},
        ),
        (
            {**ADAM, "augmentation": "quadratic", "rho": 0.5, "dual_lr": 0.2},
            {"penalty": 0.5, "augmentation": "quadratic", "lr": 0.2},
        ),
        (
            {"augmentation": "hpr", "rho": 0.5, "dual_lr": 0.5},
            {"penalty": 0.5, "augmentation": "hpr", "lr": 0.5},
        ),
        ({"augmentation": "none", "dual_lr": 0.2}, {"penalty": 0.0, "lr": 0.2}),
        (
            {"augmentation": "quadratic", "rho": 0.5, "dual_lr": 0.2, "dual_momentum": 0.5},
            {"penalty": 0.5, "augmentation": "quadratic", "lr": 0.2, "momentum": 0.5},
        ),
        (
            {"augmentation": "quadratic", "rho": 0.5, "dual_lr": 0.2, "restart": True},
            {"penalty": 0.5, "augmentation": "quadratic", "lr": 0.2, "restart": True},
        ),
        (
            {"augmentation": "hpr", "rho": 0.5, "dual_lr": 0.5, "restart": True},
            {"penalty": 0.5, "augmentation": "hpr", "lr": 0.5, "restart": True},
        ),
    ],
    ids=["quadratic", "quadratic-adam", "hpr", "none", "dual-momentum", "restart", "hpr-restart"],
)
def test_alm_options_take_the_reference_alms_steps(settings, reference):
    """Primal first (``forward``, the primal step, ``update``). HPR at η = ρ, where the
    reference's ascent on the augmented Lagrangian's gradient is our ascent on c (``alm``'s
    docstring); quadratic and none at any η, where both ascend c."""
    duals = ALM(
        m=2, is_ineq=True, dual_range=(0.0, 100.0), init_duals=torch.zeros(2).double(), **reference
    )
    _against_toolkit("alm", {"lr": 0.1, **settings}, duals, _primal_first)


def test_alm_restart_zeroes_the_multipliers_of_satisfied_values():
    for restart, expected in ((False, [1.5, 1.0]), (True, [1.5, 0.0])):
        x = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
        algorithm = build_algorithm("alm", [x], 2, {"restart": restart, "dual_lr": 1.0})
        algorithm.duals.value = torch.tensor([0.5, 2.0], dtype=torch.float64)
        algorithm.step(lambda x=x: ((x**2).sum(), torch.stack([x[0] + 1, x[0] - 1])))
        assert algorithm.multipliers().tolist() == expected  # λ + c, and 0 where c < 0


# --- SPBM -------------------------------------------------------------------------------------

_NO_ANNEALING = {"gamma_annealing": False, "penalty_annealing": False}


@pytest.mark.parametrize(
    ("settings", "reference"),
    [
        ({}, _NO_ANNEALING),
        ({**ADAM}, _NO_ANNEALING),
        *[
            (
                {"penalty_update": rule, "penalty_mult": 0.9, "dual_smoothing": 0.5},
                {"penalty_update": rule, "penalty_mult": 0.9, "gamma": 0.5, **_NO_ANNEALING},
            )
            for rule in ("const", "dimin", "dimin_dual", "aimd")
        ],
        (
            {"penalty_update": "alm", "rho": 2.0, "max_penalty": 50.0},
            {"penalty_update": "alm", "rho": 2.0, "penalty_range": (0.1, 50.0), **_NO_ANNEALING},
        ),
        (
            {"function": "quadratic_reciprocal", "delta": 2.0, "inner_steps": 3},
            {"pbf": "quadratic_reciprocal", "delta": 2.0, "primal_update_process_length": 3}
            | {"epoch_length": 10},
        ),
    ],
    ids=["dimin_adapt", "adam", "const", "dimin", "dimin_dual", "aimd", "alm", "qrec-annealed"],
)
def test_spbm_takes_the_reference_pbms_steps(settings, reference):
    """The surrogate with the multipliers and penalties from before the step's dual update,
    then the exponentially averaged multiplier step and the penalty rule; the last case
    anneals γ and K every 10 steps and updates every third step."""
    if "epoch_length" in reference:
        settings = {**settings, "annealing_period": reference["epoch_length"]}
    duals = _float64(lambda: PBM(m=2, init_duals=0.5, **reference))

    def penalties(ours, ref, step):
        _close(ours.penalties, ref.penalties, "p", step)

    _against_toolkit(
        "spbm", {"lr": 0.1, "init_multiplier": 0.5, **settings}, duals, _dual_first, penalties
    )


def test_spbm_penalty_functions_have_unit_slope_at_zero_and_the_toolkits_tails():
    from ctrain_dist.algorithms.spbm import FUNCTIONS

    t = torch.tensor([-3.0, -1.0, -0.4, 0.0, 0.7], dtype=torch.float64)
    for name, (phi, derivative) in FUNCTIONS.items():
        assert phi(torch.zeros(1, dtype=torch.float64)).item() == 0.0
        assert derivative(torch.zeros(1, dtype=torch.float64)).item() == 1.0
        gradient = torch.func.vmap(torch.func.grad(phi))(t)
        torch.testing.assert_close(gradient, derivative(t), rtol=1e-12, atol=0, msg=name)
    assert FUNCTIONS["quadratic_logarithmic"][1](torch.tensor(-1.0)).item() == 0.25


# --- the switching subgradient against SSG ----------------------------------------------------


@pytest.mark.parametrize("tol", [0.0, 0.05])
def test_switching_subgradient_takes_the_reference_ssgs_steps(tol):
    """Constant steps, the constraint branch's η' = 2η through SSG's ``constraint_scale``
    (exact for SGD, its docstring says)."""
    reference = SSG(m=2, constraint_tol=tol, constraint_scale=2.0)
    settings = {"lr": 0.1, "lr_constraint": 0.2, "tol": tol}
    _against_toolkit("switching_subgradient", settings, reference, _dual_first)


# --- Cooper: the augmented Lagrangian and the update schemes ---------------------------------


class _CooperProblem(cooper.ConstrainedMinimizationProblem):
    def __init__(self, estimate, formulation, rho: float) -> None:
        super().__init__()
        self.estimate = estimate
        extra = {}
        if formulation is cooper.formulations.AugmentedLagrangian:
            extra["penalty_coefficient"] = cooper.penalty_coefficients.DensePenaltyCoefficient(
                init=torch.full((2,), rho, dtype=torch.float64)
            )
        self.constraint = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            formulation_type=formulation,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=2, dtype=torch.float64),
            **extra,
        )

    def compute_cmp_state(self) -> cooper.CMPState:
        loss, c = self.estimate()
        state = cooper.ConstraintState(violation=c)
        return cooper.CMPState(loss=loss, observed_constraints={self.constraint: state})


_AL = cooper.formulations.AugmentedLagrangian
_SCHEMES = {
    "simultaneous": (cooper.optim.SimultaneousOptimizer, torch.optim.SGD, _AL),
    "dual_primal": (cooper.optim.AlternatingDualPrimalOptimizer, torch.optim.SGD, _AL),
    "primal_dual": (cooper.optim.AlternatingPrimalDualOptimizer, torch.optim.SGD, _AL),
    "extragradient": (cooper.optim.ExtrapolationConstrainedOptimizer, cooper.optim.ExtraSGD, _AL),
    "extragradient-lagrangian": (
        cooper.optim.ExtrapolationConstrainedOptimizer,
        cooper.optim.ExtraSGD,
        cooper.formulations.Lagrangian,
    ),
}


@pytest.mark.parametrize("scheme", sorted(_SCHEMES))
def test_alm_orders_take_coopers_augmented_lagrangian_steps(scheme):
    """Cooper's augmented Lagrangian is HPR in the primal and ascends c in the dual, at any
    η and ρ: our ``alm`` under each ``order`` (Lagrangian: ``augmentation: none``)."""
    optimizer_class, torch_optimizer, formulation = _SCHEMES[scheme]
    settings = {"lr": 0.1, "dual_lr": 0.2, "order": scheme.removesuffix("-lagrangian")}
    if formulation is _AL:
        settings["rho"] = 0.5
    else:
        settings["augmentation"] = "none"
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm("alm", [x], 2, settings)
    cmp = _CooperProblem(batches.oracle(y), formulation, 0.5)
    optimizer = optimizer_class(
        cmp=cmp,
        primal_optimizers=torch_optimizer([y], lr=0.1),
        dual_optimizers=torch_optimizer(list(cmp.dual_parameters()), lr=0.2, maximize=True),
    )
    for step in range(STEPS):
        ours.step(batches.oracle(x))
        optimizer.roll()
        batches.step += 1
        _close(x, y, "x", step)
        _close(ours.multipliers(), cmp.constraint.multiplier().detach(), "λ", step)


class _ExtraAdamWithTorchsEpsilon(cooper.optim.ExtraAdam):
    """Cooper's ``ExtraAdam`` with ε·√(1 − β₂ᵗ) at step t: its update is then torch's Adam
    update with ε (torch adds ε to √v̂ = √v/√(1 − β₂ᵗ), Cooper to √v)."""

    def update(self, p, group):
        epsilon = group["eps"]
        t = self.state[p].get("step", 0) + 1
        group["eps"] = epsilon * (1 - group["betas"][1] ** t) ** 0.5
        try:
            return super().update(p, group)
        finally:
            group["eps"] = epsilon


@pytest.mark.parametrize(
    ("epsilon", "reference"),
    [(1e-14, cooper.optim.ExtraAdam), (1e-8, _ExtraAdamWithTorchsEpsilon)],
    ids=["extra-adam", "extra-adam-epsilon-aligned"],
)
def test_alm_extragradient_with_adam_takes_coopers_extra_adam_steps(epsilon, reference):
    """Extra-Adam: the look-ahead and the update are both Adam steps (moments and step count
    advance at each). At ε = 1e-8 the one difference, where ε enters Adam's denominator,
    shows at 5e-6 relative; aligned (ε → 0, or Cooper's ε rescaled), the trajectories agree."""
    settings = {"lr": 0.01, "dual_lr": 0.2, "rho": 0.5, "order": "extragradient", **ADAM}
    settings["eps"] = epsilon
    x, y = _start(), _start()
    batches = Batches()
    ours = build_algorithm("alm", [x], 2, settings)
    cmp = _CooperProblem(batches.oracle(y), _AL, 0.5)
    optimizer = cooper.optim.ExtrapolationConstrainedOptimizer(
        cmp=cmp,
        primal_optimizers=reference([y], lr=0.01, betas=(0.8, 0.999), eps=epsilon),
        dual_optimizers=cooper.optim.ExtraSGD(list(cmp.dual_parameters()), lr=0.2, maximize=True),
    )
    for step in range(STEPS):
        ours.step(batches.oracle(x))
        optimizer.roll()
        batches.step += 1
        _close(x, y, "x", step)
        _close(ours.multipliers(), cmp.constraint.multiplier().detach(), "λ", step)


def test_alm_extragradient_with_adam_differs_from_coopers_by_the_epsilon_placement_only():
    """The unaligned pair at ε = 1e-8 is apart by more than the criterion: the alignment
    above is needed, and is the whole difference."""
    with pytest.raises(AssertionError, match="x at step"):
        test_alm_extragradient_with_adam_takes_coopers_extra_adam_steps(
            1e-8, cooper.optim.ExtraAdam
        )
