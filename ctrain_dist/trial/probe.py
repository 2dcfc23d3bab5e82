"""User code run once on the driver, on one minibatch, before any trial starts.

Why: a model factory that raises, a model that gives the wrong shape, or a constraint whose
statistics are not additive would otherwise fail every trial of a sweep on its workers, or,
worse, train wrongly. Each problem is a :class:`~ctrain_dist.errors.SpecError` naming the spec
field, the import path and the fix, so ``ctrain`` exits 2 before Ray or any job starts. Specs
of built-ins only are not probed (nothing to find, and no data to load).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from ctrain_dist.constraints import BUILTIN_SPECIFIC_CONSTRAINTS, Constraint, build_constraints
from ctrain_dist.data.load import load_data
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import ConstraintSpec, SweepSpec, TrialSpec
from ctrain_dist.trial.learner import trial_data, trial_model

ADDITIVE_TOLERANCE = 1e-6
"""How far statistics of a batch may sit from the sum of its halves' (float32 sums)."""


def uses_plugins(spec: SweepSpec) -> bool:
    """Whether ``spec`` runs code this probe checks: a model factory or a generic constraint."""
    return spec.model.factory is not None or any(
        c.kind not in BUILTIN_SPECIFIC_CONSTRAINTS for c in spec.constraints
    )


def check_plugins(spec: SweepSpec) -> None:
    """Build the first trial's model and constraints and run them on one training minibatch.

    Raises:
        SpecError: naming ``model.factory`` or ``constraints.<i>.kind`` and what to fix.
    """
    if not uses_plugins(spec):
        return
    trial = spec.trials()[0]
    data = trial_data(trial, load_data(spec.data, spec.split), torch.device("cpu"))
    rows = data.splits["train"][: spec.training.batch_size]
    features, labels, groups = data.features[rows], data.labels[rows], data.groups[rows]
    model = _checked_model(trial, data.num_features, features)
    logits = model(features).squeeze(-1)
    for index, constraint in enumerate(spec.constraints):
        if constraint.kind not in BUILTIN_SPECIFIC_CONSTRAINTS:
            field = f"constraints.{index}.kind"
            built = _built(constraint, data.num_groups, model, field)
            _check_contract(built, logits, labels, groups, field)


def _checked_model(trial: TrialSpec, num_features: int, features: torch.Tensor) -> nn.Module:
    """The trial's model, refused unless it maps ``[B, d]`` features to ``[B, 1]`` logits."""
    factory = trial.model.factory
    try:
        model = trial_model(trial, num_features, torch.device("cpu"))
        logits = model(features)
    except Exception as error:  # user code may raise anything
        raise SpecError(
            "model.factory",
            f"{factory} failed: {type(error).__name__}: {error}; it is called as "
            "factory(num_features=, num_outputs=1, dtype=, **model.options)",
        ) from None
    expected = (features.shape[0], 1)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SpecError(
            "model.factory",
            f"{factory}'s model returns {shape} for a [{expected[0]}, {num_features}] batch; "
            f"return one logit per row, shape [{expected[0]}, 1]",
        )
    return model


def _built(spec: ConstraintSpec, num_groups: int, model: nn.Module, field: str) -> Constraint:
    try:
        (built,) = build_constraints([spec], num_groups, model)
    except Exception as error:  # user code may raise anything
        raise SpecError(
            field,
            f"{spec.kind} failed to build: {type(error).__name__}: {error}; it is called as "
            "cls(bound, num_groups, decide_on, **options)",
        ) from None
    if not isinstance(built, Constraint):
        raise SpecError(field, f"{spec.kind} is not a ctrain_dist.constraints.Constraint")
    return built


def _check_contract(
    constraint: Constraint,
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    field: str,
) -> None:
    """The contract of ``constraints.base``: additive statistics of the declared length,
    values and readings of the declared length, strict and surrogate alike."""
    kind = getattr(constraint, "kind", type(constraint).__name__)
    try:
        losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        stats = constraint.statistics(logits, labels, groups, None, losses)
        half = logits.shape[0] // 2
        parts = [
            constraint.statistics(logits[s], labels[s], groups[s], None, losses[s])
            for s in (slice(None, half), slice(half, None))
        ]
        values = [constraint.value(stats), constraint.value(stats, strict=True)]
        reading = constraint.estimate(stats)
    except Exception as error:  # user code may raise anything
        raise SpecError(
            field, f"{kind} failed on a minibatch: {type(error).__name__}: {error}"
        ) from None
    problem = _contract_problem(constraint, stats, parts, [*values, *reading])
    if problem is not None:
        raise SpecError(
            field,
            f"{kind} breaks the constraint contract: {problem} (see "
            "ctrain_dist/constraints/base.py)",
        )


def _contract_problem(
    constraint: Constraint,
    stats: torch.Tensor,
    parts: list[torch.Tensor],
    outputs: list[torch.Tensor],
) -> str | None:
    """Why ``constraint``'s outputs on one minibatch break the contract, or None."""
    if tuple(stats.shape) != (constraint.num_statistics,):
        return f"statistics has shape {tuple(stats.shape)}, not [{constraint.num_statistics}]"
    if not torch.allclose(parts[0] + parts[1], stats, atol=ADDITIVE_TOLERANCE, rtol=1e-5):
        return "statistics of a batch differ from the sum of its halves' (not additive)"
    for output in outputs:
        if tuple(output.shape) != (constraint.num_values,):
            return f"an output has shape {tuple(output.shape)}, not [{constraint.num_values}]"
    return None
