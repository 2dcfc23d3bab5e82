"""User code run once on the driver, on one minibatch, before any trial starts.

Why: a model factory that raises, a model that gives the wrong shape, or a constraint whose
statistics are not additive would otherwise fail every trial of a sweep on its workers, or,
worse, train wrongly. Each problem is a :class:`~ctrain_dist.errors.SpecError` naming the spec
field, the import path and the fix, so ``ctrain`` exits 2 before Ray or any job starts. Specs
of built-ins only are not probed (nothing to find, and no data to load). A user's dataset
(``data.factory``) is checked when the spec is (``data.custom``); here it gives the minibatch,
and what its rows need of the model and of packing is checked.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from ctrain_dist.constraints import BUILTIN_SPECIFIC_CONSTRAINTS, Constraint, build_constraints
from ctrain_dist.data.config import CustomDataSpec
from ctrain_dist.data.load import load_data
from ctrain_dist.data.streaming import StreamingData
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import ConstraintSpec, SweepSpec, TrialSpec, require_batch_fits
from ctrain_dist.trial.learner import trial_data, trial_model

ADDITIVE_TOLERANCE = 1e-6
"""How far statistics of a batch may sit from the sum of its halves' (float32 sums)."""


def uses_plugins(spec: SweepSpec) -> bool:
    """Whether ``spec`` runs code this probe checks: a model factory or a generic constraint."""
    return (
        spec.model.factory is not None
        or isinstance(spec.data, CustomDataSpec)
        or any(c.kind not in BUILTIN_SPECIFIC_CONSTRAINTS for c in spec.constraints)
    )


def check_plugins(spec: SweepSpec) -> None:
    """Build the first trial's model and constraints and run them on one training minibatch.

    Raises:
        SpecError: naming ``model.factory``, ``constraints.<i>.kind``, ``seeds_per_trial``
            or ``data.factory`` and what to fix.
    """
    if not uses_plugins(spec):
        return
    trial = spec.trials()[0]
    data = trial_data(trial, load_data(spec.data, spec.split), torch.device("cpu"))
    _check_rows_fit(spec, data)
    rows = data.splits["train"][: spec.training.batch_size]
    features = data.read(rows) if isinstance(data, StreamingData) else data.features[rows]
    labels, groups = data.labels[rows], data.groups[rows]
    model = _checked_model(trial, data, features)
    logits = model(features).squeeze(-1)
    for index, constraint in enumerate(spec.constraints):
        if constraint.kind not in BUILTIN_SPECIFIC_CONSTRAINTS:
            field = f"constraints.{index}.kind"
            built = _built(constraint, data.num_groups, model, field)
            _check_contract(built, logits, labels, groups, field)


def _check_rows_fit(spec: SweepSpec, data: TabularData | StreamingData) -> None:
    """Rows the built-in MLP can read, and packing only where the data is in memory."""
    if spec.model.factory is None and len(data.input_shape) > 1:
        raise SpecError(
            "model.factory",
            f"data.factory's rows have shape {data.input_shape} and the built-in MLP reads "
            "flat rows; set model.factory (it is given input_shape) or return [n, d] features",
        )
    if isinstance(data, StreamingData) and spec.seeds_per_trial > 1:
        raise SpecError(
            "seeds_per_trial",
            "data.factory returns a Dataset, streamed to one model per trial; set "
            "seeds_per_trial to 1 or return tensors",
        )
    require_batch_fits(spec, data.splits["train"].numel())


def _checked_model(
    trial: TrialSpec, data: TabularData | StreamingData, features: torch.Tensor
) -> nn.Module:
    """The trial's model, refused unless it maps ``[B, ...]`` rows to ``[B, 1]`` logits."""
    factory = trial.model.factory
    num_features = data.num_features
    try:
        model = trial_model(trial, num_features, torch.device("cpu"), data.input_shape)
        logits = model(features)
    except Exception as error:  # user code may raise anything
        raise SpecError(
            "model.factory",
            f"{factory} failed: {type(error).__name__}: {error}; it is called as "
            "factory(num_features=, num_outputs=1, dtype=[, input_shape=], **model.options)",
        ) from None
    expected = (features.shape[0], 1)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SpecError(
            "model.factory",
            f"{factory or 'the MLP'} returns {shape} for a batch of {expected[0]} rows; "
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
