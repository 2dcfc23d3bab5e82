"""What a launch runs: the trials the store does not show finished, grouped into packs.

Every launcher (``ctrain train``, the Ray sweep, SLURM allocation and array mode) plans here,
so "never run a finished trial again" and "pack only what is pending" hold the same way for
all of them. A driver plans and runs under :func:`driver_lock`, so two drivers of one sweep
never both run what each found pending; and a store holding an unreadable file is refused,
since the trials that file holds would look not yet run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctrain_dist import store as store_module
from ctrain_dist.errors import SpecError
from ctrain_dist.files import LockHeld, held_or_refused
from ctrain_dist.spec import (
    SweepSpec,
    TrialSpec,
    member_obstacle,
    pack_trials,
    packing_obstacle,
)
from ctrain_dist.store.layout import CHECKPOINTS, driver_lock_path
from ctrain_dist.store.schema import STATUS, TERMINAL_STATUSES


def pending_trials(spec: SweepSpec, store_root: Path, resume: bool) -> tuple[list[TrialSpec], int]:
    """The trials still to run, and how many the store already shows finished.

    Without ``resume``, a sweep name that the store already holds is refused: silently mixing
    two studies under one name would corrupt both reports.
    """
    store = store_module.open(store_root)
    unreadable = [loss for loss in store.losses(spec.name) if not loss.quarantined]
    if unreadable:
        raise SpecError(
            "--store",
            f"{unreadable[0].describe()}, so its trials would look not yet run "
            f"({len(unreadable)} such files); `ctrain store compact {store_root} --sweep "
            f"{spec.name} --drop-corrupt` quarantines them and keeps their trials counted",
        )
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


@contextmanager
def driver_lock(spec: SweepSpec, store_root: Path) -> Iterator[None]:
    """Be the one driver of ``spec``'s sweep in ``store_root`` for the block, or exit 2 now
    naming the one that is (a second would run every trial the first is running)."""
    try:
        with held_or_refused(driver_lock_path(store_root, spec.name)):
            yield
    except LockHeld as held:
        raise SpecError(
            "--store",
            f"another driver ({held.holder}) is running sweep {spec.name!r} in {store_root}; "
            "wait for it to end, then --resume",
        ) from None


def plan_packs(
    spec: SweepSpec, trials: list[TrialSpec], log: Callable[[str], None] = print
) -> list[list[TrialSpec]]:
    """``trials`` (those still to run) in packs of up to ``seeds_per_trial`` seeds of up to
    ``configurations_per_trial`` configurations (``spec.pack_trials``), with one log line for
    each configuration that cannot be packed and runs one seed per trial, and, when
    configurations pack, one for each hyperparameter that keeps configurations apart."""
    if spec.seeds_per_trial > 1 or spec.configurations_per_trial > 1:
        obstacles = {trial.config_label: packing_obstacle(trial) for trial in trials}
        for label, obstacle in obstacles.items():
            if obstacle is not None:
                log(f"{label}: {obstacle}; its seeds run one per trial")
    if spec.configurations_per_trial > 1:
        for line in _apart(trials):
            log(line)
    return pack_trials(trials, spec.seeds_per_trial, spec.configurations_per_trial)


def _apart(trials: list[TrialSpec]) -> list[str]:
    """One line per (algorithm, hyperparameter) whose values differ among ``trials`` but
    cannot differ within a pack (``spec.member_obstacle``), in a stable order."""
    values: dict[tuple[str, str], set[str]] = {}
    for trial in trials:
        if packing_obstacle(trial) is None:
            for name, value in trial.hyperparameters.items():
                values.setdefault((trial.algorithm, name), set()).add(repr(value))
    lines = []
    for (algorithm, name), seen in sorted(values.items()):
        obstacle = member_obstacle(algorithm, name) if len(seen) > 1 else None
        if obstacle is not None:
            lines.append(
                f"{algorithm}: {obstacle}, so configurations that differ in it train in "
                "separate packs"
            )
    return lines


def checkpoint_path(store_root: Path, pack: Sequence[TrialSpec]) -> Path:
    """Where a pack's checkpoint lives: beside the store, named by the pack's trial ids, so a
    pack formed differently on resume (fewer seeds pending) never loads another's file."""
    ids = ",".join(trial.trial_id for trial in pack)
    key = hashlib.sha256(ids.encode()).hexdigest()[:16]
    return store_root / CHECKPOINTS / pack[0].sweep_id / f"{pack[0].trial_id}-{key}.pt"


COMPILE_CACHE = "_compile_cache"
"""The store's folder of Inductor's on-disk caches, one per node (``use_compile_cache``)."""


def prepare_compile_cache(store_root: Path, pack: Sequence[TrialSpec]) -> None:
    """For a pack with ``training.compile``: Inductor's on-disk cache in this process points at
    ``<store>/_compile_cache/<host>`` (unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so every
    process of the node, every SLURM job of the sweep and every later run share one cache
    and a compile is paid once per node; per host, since Inductor builds for the host CPU."""
    if pack[0].training.compile:
        # Deferred: planning runs in torch-free commands too (``ctrain sweep --dry-run``).
        from ctrain_dist.trial.compiled import use_compile_cache

        use_compile_cache(store_root / COMPILE_CACHE)


def drop_finished_checkpoint(path: Path, rows: list[dict[str, Any]]) -> None:
    """Remove a pack's checkpoint once every seed has ended: no attempt will resume it."""
    if rows and all(row[STATUS] in TERMINAL_STATUSES for row in rows):
        path.unlink(missing_ok=True)
