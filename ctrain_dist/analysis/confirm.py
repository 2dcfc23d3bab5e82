"""Confirmation runs: the configurations selected on validation, again, on fresh seeds.

Why: selecting the best of many configurations on the same seeds that then report its score
is optimistic (the winner is partly the luckiest). ``ctrain sweep SPEC --confirm`` re-runs
only each algorithm's selected configuration (``stats.select_configurations``: feasible on
validation within ``analysis.feasibility_tolerance`` first, then best validation objective)
on seeds the original sweep never used, as a new sweep ``<name>-confirm`` in the same store;
its report is then free of selection bias.
"""

from __future__ import annotations

import json

from ctrain_dist.analysis import stats
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import SweepSpec, parse_spec
from ctrain_dist.store import Store
from ctrain_dist.store.schema import CONFIG_JSON, CONFIG_LABEL, TRIAL_ID

CONFIRM_SUFFIX = "-confirm"


def confirm_spec(spec: SweepSpec, store: Store, seeds: int | None = None) -> SweepSpec:
    """The confirmation sweep of ``spec``, from the trials the store holds for it.

    Args:
        spec: the original sweep spec (its name is the store partition read).
        store: the store the original sweep wrote.
        seeds: how many fresh seeds; default ``tuning.confirm_seeds`` for a tuning study,
            else as many as the original sweep ran.

    Returns:
        A validated spec named ``<name>-confirm`` with one algorithm entry per selected
        configuration (scalar hyperparameters) and seeds ``m+1, m+2, ...``, where ``m`` is the
        largest original seed, so the two sweeps never share a seed.

    Raises:
        SpecError: when the store holds no trials of the sweep, or none of the spec's
            configurations (the spec changed since the sweep ran).
    """
    trials = store.trials(spec.name)
    if trials.empty:
        raise SpecError(
            "--confirm",
            f"the store {store.root} holds no trials of sweep {spec.name!r}; run the sweep "
            "first (without --confirm)",
        )
    tolerance = spec.analysis.feasibility_tolerance
    chosen = set(stats.select_configurations(trials, tolerance=tolerance)[CONFIG_LABEL])
    first_seed = spec.seed_list()[0]
    # An adaptive search's configurations are known only from the store; a row counts if its
    # trial id is the one the spec gives that configuration (``launch.search.history``).
    stored_ids = set(trials[TRIAL_ID])
    candidates = spec.trials() or [
        trial
        for stored in map(json.loads, trials.drop_duplicates(CONFIG_LABEL)[CONFIG_JSON])
        for trial in spec.configuration_trials(stored["algorithm"], stored["hyperparameters"])
        if trial.trial_id in stored_ids
    ]
    algorithms = [
        {"name": trial.algorithm, "params": trial.hyperparameters}
        for trial in candidates
        if trial.seed == first_seed and trial.config_label in chosen
    ]
    if not algorithms:
        raise SpecError(
            "--confirm",
            f"none of the spec's configurations matches the trials of sweep {spec.name!r} in "
            f"{store.root}; pass the spec (and --set overrides) the sweep ran with",
        )
    original = spec.seed_list()
    default = len(original) if spec.tuning is None else spec.tuning.confirm_seeds
    count = default if seeds is None else seeds
    raw = spec.model_dump(mode="json", exclude={"tuning"})
    raw.update(
        name=f"{spec.name}{CONFIRM_SUFFIX}",
        algorithms=algorithms,
        seeds=list(range(max(original) + 1, max(original) + 1 + count)),
    )
    return parse_spec(raw)
