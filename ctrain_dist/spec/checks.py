"""Checks of a spec against what only the data or the machine shows, called by the launchers.

Why apart from ``parse_spec``: these need the training split (``check_sampling``,
``require_batch_fits`` for cached datasets), the machine (``require_device``) or the launcher's
worker count, so each launcher calls them where it knows that; ``parse_spec`` runs those that
need nothing but the spec.
"""

from __future__ import annotations

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.constraints import GAP_CONSTRAINTS
from ctrain_dist.errors import SpecError
from ctrain_dist.spec.sweep import SweepSpec

EMPTY_GROUP_WARNING_SHARE = 0.01
"""Warn when more than this share of minibatches leaves a compared group or cell empty."""


def check_sampling(spec: SweepSpec) -> list[str]:
    """Minibatch problems only the training split shows, before anything starts.

    Refuses a quota (``training.rows_per_group``, ``training.min_group_count``,
    ``training.constraint_rows_per_group``) the split cannot meet, with a :class:`SpecError`
    naming the field; returns warnings (one line each, naming the field) when more than
    ``EMPTY_GROUP_WARNING_SHARE`` of the minibatches the constraints read (the separate
    constraint draw, when there is one) would
    hold no row of a group, or (group, label) cell, that a gap constraint compares: those
    estimates skip the comparison (``constraints``), so it is estimated and enforced on fewer
    steps than the budget. Loads the data (what every trial then reuses), so the launchers'
    callers call it once, not ``parse_spec``.
    """
    from ctrain_dist.data.coverage import empty_probability, split_strata, worst_cell
    from ctrain_dist.data.load import load_data
    from ctrain_dist.data.stratified import constraint_quotas, group_sizes, sampler_quotas

    gaps = [c for c in spec.constraints if c.kind in GAP_CONSTRAINTS]
    training = spec.training
    separate = training.constraint_rows_per_group
    if not gaps and separate is None:
        return []
    data = load_data(spec.data, spec.split)
    sizes = group_sizes(data.splits["train"], data.groups, data.num_groups)
    quota_field = "rows_per_group" if training.rows_per_group is not None else "min_group_count"
    try:
        quotas = sampler_quotas(
            sizes, training.batch_size, training.min_group_count, training.rows_per_group
        )
    except ValueError as error:
        raise SpecError(f"training.{quota_field}", str(error)) from None
    if separate is not None:
        try:
            quotas, quota_field = constraint_quotas(sizes, separate), "constraint_rows_per_group"
        except ValueError as error:
            raise SpecError("training.constraint_rows_per_group", str(error)) from None
    if not gaps:
        return []
    by_label = any(c.kind == "equalized_odds" for c in gaps)
    drawn = training.batch_size if quotas is None else sum(quotas)
    strata = split_strata(data, "train", drawn, quotas, by_label)
    share = empty_probability(strata)
    if share <= EMPTY_GROUP_WARNING_SHARE:
        return []
    cell, cell_share = worst_cell(strata)
    name = data.group_names[cell.group]
    what = name if cell.label is None else f"{name} with label {cell.label}"
    field = "batch_size" if quotas is None else quota_field
    fix = (
        "set training.constraint_rows_per_group (a separate draw of that many rows of every "
        "group for the constraints, as the reference benchmark did), training.rows_per_group "
        f"(group-balanced batches of batch_size / {data.num_groups} rows per group) or raise "
        "training.batch_size"
        if quotas is None
        else f"raise training.{quota_field}"
        + ("" if separate is not None else " and training.batch_size")
    )
    return [
        f"training.{field}: {share:.1%} of minibatches would leave a compared group or cell "
        f"empty (most often {what}: {cell_share:.1%}, {cell.rows} of "
        f"{sum(sizes)} training rows), and those estimates skip its comparisons; {fix}"
    ]


def require_batch_fits(spec: SweepSpec, training_rows: int) -> None:
    """Refuse a batch larger than the training split (every trial's sampler would raise)."""
    if spec.training.batch_size > training_rows:
        raise SpecError(
            "training.batch_size",
            f"{spec.training.batch_size} is larger than the training split's {training_rows} "
            "rows; lower it, or lower split.val and split.test",
        )


def require_device(spec: SweepSpec, cuda_devices: int) -> None:
    """Refuse ``training.device: cuda`` where no CUDA device is visible (checked where the
    trials run, not in :func:`parse_spec`: a login node may lack the cluster's GPUs)."""
    if spec.training.device == "cuda" and cuda_devices == 0:
        raise SpecError(
            "training.device",
            "cuda, but this machine has no CUDA device; set it to auto or cpu",
        )


def require_single_process_packs(spec: SweepSpec, workers: int, field: str) -> None:
    """Refuse packing where its seeds would not train exactly as alone.

    Packs train in one process, and a time budget would be shared by the pack's seeds, each
    then training fewer steps than alone: packing takes a step budget.
    """
    knob = "seeds_per_trial" if spec.seeds_per_trial > 1 else "configurations_per_trial"
    count = getattr(spec, knob)
    if count == 1:
        return
    what = "seeds" if knob == "seeds_per_trial" else "configurations"
    if workers > 1:
        raise SpecError(
            field,
            f"packed {what} ({knob} {count}) train in one process; set it to 1 or {knob} to 1",
        )
    if spec.training.budget.steps is None:
        raise SpecError(
            knob,
            f"packed {what} share one clock, so each would train fewer steps than alone under "
            f"budget.seconds; give budget.steps or set {knob} to 1",
        )


def compile_warnings(spec: SweepSpec) -> list[str]:
    """One line for each algorithm that ``training.compile`` speeds up less than the others.

    An algorithm that solves subproblems on the host (``batchable = False``: Stochastic
    Ghost's LP and QPs, on a multilevel sample whose size varies) keeps those solves on the
    host and draws its minibatches between graphs (``trial/compiled.py``); a warning, not a
    refusal, so that one sweep can still compare it with the compiled methods.
    """
    if not spec.training.compile:
        return []
    return [
        f"algorithms.{index}.name: {algorithm.name} solves subproblems on the host; "
        "training.compile compiles its oracle, its solves stay on the host"
        for index, algorithm in enumerate(spec.algorithms)
        if not ALGORITHMS[algorithm.name].batchable
    ]


def require_data_parallel(spec: SweepSpec, workers: int, field: str) -> None:
    """Refuse several workers per trial for an algorithm whose update DDP cannot make exact."""
    if workers == 1:
        return
    for index, algorithm in enumerate(spec.algorithms):
        if not ALGORITHMS[algorithm.name].data_parallel:
            raise SpecError(
                f"algorithms.{index}.name",
                f"{algorithm.name} runs on one worker only; drop it or set {field} to 1",
            )
