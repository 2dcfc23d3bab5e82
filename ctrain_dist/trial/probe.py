"""User code run once on the driver, on one minibatch, before any trial starts.

Why: a model factory that raises, a model that gives the wrong shape, or a constraint whose
statistics are not additive would otherwise fail every trial of a sweep on its workers, or,
worse, train wrongly. Each problem is a :class:`~ctrain_dist.errors.SpecError` naming the spec
field, the import path and the fix, so ``ctrain`` exits 2 before Ray or any job starts. Specs
of built-ins only are not probed (nothing to find, and no data to load). A user's dataset
(``data.factory``) is checked when the spec is (``data.custom``); here it gives the minibatch,
and what its rows need of the model and of packing is checked.

Packed seeds (``seeds_per_trial``, ``configurations_per_trial``) of user code: whether ``vmap``
batches the model and the constraints exactly is only known by running them, so the probe
packs two seeds of the first trial on one minibatch each and compares loss, constraint values,
gradients and buffers with the same seeds alone. When they cannot pack (``vmap`` raises: a
random draw such as dropout, ``.item()``, a Python ``if`` on a tensor's value; or the values
differ), it records why (``spec.record_packing_obstacle``), and the launchers' planning says
so in one line and trains those seeds one per trial.
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
from ctrain_dist.spec import (
    ConstraintSpec,
    SweepSpec,
    TrialSpec,
    packing_obstacle,
    record_packing_obstacle,
    require_batch_fits,
)
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner, trial_data, trial_model
from ctrain_dist.trial.packed import PackedLearner
from ctrain_dist.trial.stacked_module import StackedModule

ADDITIVE_TOLERANCE = 1e-6
"""How far statistics of a batch may sit from the sum of its halves' (float32 sums)."""

PACKED_TOLERANCE = 1e-4
"""How far (relative, and absolute over a value's scale) a packed seed's loss, constraint
values, gradients and buffers may sit from the seed's alone: rounding (batched kernels sum in
other orders) passes in float32, a model that computes something else does not."""


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
    _check_packing(spec, trial, data, features)


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


def _check_packing(
    spec: SweepSpec, trial: TrialSpec, data: TabularData | StreamingData, features: torch.Tensor
) -> None:
    """When seeds pack, whether this user code packs exactly; if not, record why (the seeds
    then train one per trial), or refuse where packing is required (ASHA).

    Raises:
        SpecError: naming ``tuning.scheduler.asha`` when ASHA needs each configuration's seeds
            in one trial and the user code cannot pack.
    """
    packing = spec.seeds_per_trial * spec.configurations_per_trial > 1
    if not packing or isinstance(data, StreamingData) or trial.training.budget.steps is None:
        return  # streamed data is refused above; a seconds budget never packs
    record_packing_obstacle(trial, None)  # probed afresh each time
    if packing_obstacle(trial) is not None:
        return  # an algorithm or constraint that never packs, whatever the user code
    obstacle = _packing_problem(trial, data, features)
    if obstacle is None:
        return
    tuning = spec.tuning
    if tuning is not None and tuning.scheduler is not None and tuning.seeds_per_configuration > 1:
        raise SpecError(
            "tuning.scheduler.asha",
            f"{obstacle}; ASHA needs each configuration's seeds in one trial: set "
            "tuning.seeds_per_configuration to 1",
        )
    record_packing_obstacle(trial, obstacle)


def _packing_problem(trial: TrialSpec, data: TabularData, features: torch.Tensor) -> str | None:
    """Why two seeds of ``trial`` would not train packed as they do alone, or None."""
    pair = [trial, trial.model_copy(update={"seed": trial.seed + 1})]
    if trial.model.factory is not None:
        try:
            models = [
                trial_model(t, data.num_features, features.device, data.input_shape) for t in pair
            ]
            StackedModule(models)(features.expand(2, *features.shape)).sum().backward()
        except Exception as error:  # user code may raise anything
            return f"model.factory {trial.model.factory}: {_vmap_reason(error)}"
    try:
        packed = PackedLearner(pair, data, features.device)
        sample = packed.estimate()
        (sample.loss.sum() + sample.c.sum()).backward()
    except Exception as error:  # user code may raise anything
        return f"constraints ({_user_constraints(trial)}): {_vmap_reason(error)}"
    for seed, single in enumerate(pair):
        alone = ModelLearner(single, data, Workers(), features.device)
        one = alone.estimate()
        (one.loss + one.c.sum()).backward()
        kinds = [
            [(sample.loss[seed], one.loss), (sample.c[seed], one.c)],
            [
                (p.grad[seed], q.grad)
                for p, q in zip(packed.model.parameters(), alone.model.parameters(), strict=True)
                if q.grad is not None
            ],
            [
                (b[seed], c)
                for b, c in zip(packed.model.buffers(), alone.model.buffers(), strict=True)
            ],
        ]
        if not all(_close(pairs) for pairs in kinds):
            return (
                f"{_user_code(trial)} computes other values under vmap than alone (a tensor "
                "attribute that is neither a parameter nor a buffer, say)"
            )
    return None


def _close(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether each packed value is its alone value to :data:`PACKED_TOLERANCE`, relative to
    the largest of its kind (a gradient that is 0 in exact arithmetic, a bias before a
    BatchNorm's, is rounding noise on both sides)."""
    values = [(a.detach().double(), b.detach().double()) for a, b in pairs]
    scale = max((float(b.abs().max()) for _, b in values if b.numel()), default=0.0)
    atol = PACKED_TOLERANCE * max(scale, 1e-30)
    return all(torch.allclose(a, b, rtol=PACKED_TOLERANCE, atol=atol) for a, b in values)


def _vmap_reason(error: Exception) -> str:
    """What ``vmap`` could not batch, in a phrase (its messages name the cause)."""
    message = str(error)
    if "random operation" in message:
        return (
            "its forward draws random numbers (dropout in training mode, say), which a pack "
            "cannot draw as each seed alone draws them"
        )
    if ".item()" in message:
        return "it reads a tensor's value on the host (.item()), which vmap cannot batch"
    if "data-dependent control flow" in message:
        return "a Python if on a tensor's value, which vmap cannot batch"
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"vmap cannot batch it ({type(error).__name__}: {first[:160]})"


def _user_constraints(trial: TrialSpec) -> str:
    kinds = [c.kind for c in trial.constraints if c.kind not in BUILTIN_SPECIFIC_CONSTRAINTS]
    return ", ".join(kinds) or "built-in"


def _user_code(trial: TrialSpec) -> str:
    """The spec's user code in a phrase: its model factory and its own constraint kinds."""
    parts = [f"model.factory {trial.model.factory}"] if trial.model.factory else []
    kinds = _user_constraints(trial)
    parts += [f"constraints ({kinds})"] if kinds != "built-in" else []
    return " with ".join(parts) or "the model with its constraints"
