"""What a launch runs: the trials the store does not show finished, grouped into packs.

Every launcher (``ctrain train``, the Ray sweep, SLURM allocation and array mode) plans here,
so "never run a finished trial again" and "pack only what is pending" hold the same way for
all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ctrain_dist import store as store_module
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import SweepSpec, TrialSpec, pack_trials, packing_obstacle


def pending_trials(spec: SweepSpec, store_root: Path, resume: bool) -> tuple[list[TrialSpec], int]:
    """The trials still to run, and how many the store already shows finished.

    Without ``resume``, a sweep name that the store already holds is refused: silently mixing
    two studies under one name would corrupt both reports.
    """
    store = store_module.open(store_root)
    trials = spec.trials()
    existing = store.trials(spec.name, all_attempts=True)
    if len(existing) and not resume:
        raise SpecError(
            "name",
            f"the store {store_root} already holds sweep {spec.name!r} ({len(existing)} rows); "
            "pass --resume to continue it, or --set name=NEW for a new sweep",
        )
    finished = store.finished_trial_ids(spec.name)
    pending = [t for t in trials if t.trial_id not in finished]
    return pending, len(trials) - len(pending)


def plan_packs(
    spec: SweepSpec, trials: list[TrialSpec], log: Callable[[str], None] = print
) -> list[list[TrialSpec]]:
    """``trials`` (those still to run) in packs of up to ``seeds_per_trial`` seeds, with one
    log line for each configuration that cannot be packed and runs one seed per trial."""
    if spec.seeds_per_trial > 1:
        obstacles = {trial.config_label: packing_obstacle(trial) for trial in trials}
        for label, obstacle in obstacles.items():
            if obstacle is not None:
                log(f"{label}: {obstacle}; its seeds run one per trial")
    return pack_trials(trials, spec.seeds_per_trial)
