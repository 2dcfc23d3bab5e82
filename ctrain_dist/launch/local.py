"""``ctrain train``: a spec's trials run here, one pack after another, each on N local processes.

No Ray: for debugging a configuration, for checking worker-count invariance, and for machines
where a scheduler is not wanted. Every pack goes through the runner every launcher uses
(``trial.runner``), its rows straight to the store through a ``StoreSink``, so a ``ctrain
train`` run is read exactly like a sweep, and a failure is recorded and retried
(``max_failures``) as in a sweep.

Preemption, as in a sweep: a run plans through ``launch.plan`` under the sweep's driver lock,
so trials the store shows finished are skipped and a second ``ctrain train`` (or sweep) of the
same sweep is refused while one runs; and every pack checkpoints to
``<store>/_checkpoints/<sweep>/`` (``plan.checkpoint_path``, the Ray sweep's file), so a run
killed mid-trial and started again resumes each unfinished pack from its last checkpoint.
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import (
    checkpoint_path,
    driver_lock,
    drop_finished_checkpoint,
    pending_trials,
    plan_packs,
    prepare_compile_cache,
)
from ctrain_dist.spec import (
    SweepSpec,
    TrialSpec,
    require_data_parallel,
    require_device,
    require_single_process_packs,
)
from ctrain_dist.store.schema import CONFIG_LABEL, SEED, STATUS
from ctrain_dist.store.sink import StoreSink
from ctrain_dist.trial import runner
from ctrain_dist.trial.distributed import launch_local
from ctrain_dist.trial.probe import check_plugins


def check_workers(spec: SweepSpec, nproc: int) -> None:
    """Refuse a worker count this machine cannot host, before anything starts."""
    if nproc < 1:
        raise SpecError("--nproc", "must be at least 1")
    require_data_parallel(spec, nproc, "--nproc")
    require_single_process_packs(spec, nproc, "--nproc")
    require_device(spec, torch.cuda.device_count())
    wants_cuda = spec.training.device == "cuda" or (
        spec.training.device == "auto" and torch.cuda.is_available()
    )
    available = torch.cuda.device_count() if wants_cuda else (os.cpu_count() or 1)
    unit = "GPUs" if wants_cuda else "CPU cores"
    if nproc > available:
        raise SpecError("--nproc", f"asks {nproc} workers but this machine has {available} {unit}")


def train_locally(
    spec: SweepSpec, store_root: Path, nproc: int, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Train every trial of ``spec`` the store does not show finished; returns counts by
    status (each trial's last attempt).

    With ``seeds_per_trial`` K, seeds of one configuration train K at a time as one pack
    (``packed.py``), each still its own trial. A pack that raises is recorded as an ``error``
    attempt of each seed, retried up to ``max_failures`` times (from its last checkpoint),
    and the next pack runs.
    """
    check_workers(spec, nproc)
    check_plugins(spec)  # user code on one minibatch (trial.probe), for library callers too
    pending_trials(spec, store_root, resume=True)  # refuses a damaged store before the lock
    with driver_lock(spec, store_root), StoreSink(store_root, spec.name) as sink:
        return _train_pending(spec, store_root, nproc, sink, log)


def _train_pending(
    spec: SweepSpec, store_root: Path, nproc: int, sink: StoreSink, log: Callable[[str], None]
) -> dict[str, int]:
    """The packs still pending, one after another (under the driver lock)."""
    statuses: Counter[str] = Counter()
    trials, skipped = pending_trials(spec, store_root, resume=True)
    if skipped:
        total = skipped + len(trials)
        log(f"{skipped} of {total} trials already finished in the store; skipping them")
    attempts = spec.max_failures + 1
    for pack in plan_packs(spec, trials, log):
        checkpoint = checkpoint_path(store_root, pack)
        prepare_compile_cache(store_root, pack)
        if nproc == 1:
            rows = runner.run_pack(pack, sink, attempts=attempts, log=log, checkpoint=checkpoint)
        else:
            (trial,) = pack  # several processes: never packed (check_workers)
            train = functools.partial(_train_on_processes, trial, store_root, nproc, checkpoint)
            rows = runner.retry(pack, sink, train, attempts=attempts, log=log)
        drop_finished_checkpoint(checkpoint, rows)
        for row in rows:
            statuses[row[STATUS]] += 1
            label = f"{row[CONFIG_LABEL]} seed {row[SEED]}"
            log(f"[{statuses.total()}/{len(trials)}] {label}: {row[STATUS]}")
    return dict(statuses)


def _train_on_processes(
    trial: TrialSpec, store_root: Path, nproc: int, checkpoint: Path
) -> list[dict[str, Any]]:
    """One attempt at ``trial`` on ``nproc`` local processes; rank 0's ``trials`` row. Every
    rank resumes from ``checkpoint`` when it exists (they draw the same global minibatches,
    so rank 0's state is every rank's); rank 0 alone saves it.

    An exception in any rank ends every rank (``launch_local``) and is raised here, where
    ``runner.retry`` records it: inside the group it could only leave the other ranks waiting.
    """
    with tempfile.TemporaryDirectory(prefix="ctrain-train-") as folder:
        result = Path(folder) / "rows.pickle"
        arguments = (trial.model_dump_json(), str(store_root), str(result), str(checkpoint))
        launch_local(nproc, _train_rank, arguments)
        return pickle.loads(result.read_bytes())


def _train_rank(trial_json: str, store_root: str, result: str, checkpoint: str) -> None:
    """One rank's share of one trial (the target of ``launch_local``; must be importable)."""
    trial = TrialSpec.model_validate_json(trial_json)
    prepare_compile_cache(Path(store_root), [trial])
    with StoreSink(Path(store_root), trial.sweep_id) as sink:
        rows = runner.run_pack([trial], sink, checkpoint=Path(checkpoint))
    if rows:  # rank 0
        Path(result).write_bytes(pickle.dumps(rows))
