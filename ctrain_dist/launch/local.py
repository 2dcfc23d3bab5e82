"""``ctrain train``: a spec's trials run here, one after another, each on N local processes.

No Ray: for debugging a configuration, for checking worker-count invariance, and for machines
where a scheduler is not wanted. Rows go straight to the store through a ``StoreSink`` on
rank 0, so a ``ctrain train`` run is read exactly like a sweep.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import plan_packs
from ctrain_dist.spec import (
    SweepSpec,
    TrialSpec,
    require_data_parallel,
    require_single_process_packs,
)
from ctrain_dist.store import StoreWriter
from ctrain_dist.store import open as open_store
from ctrain_dist.store.sink import StoreSink
from ctrain_dist.trial.distributed import launch_local
from ctrain_dist.trial.packed import train_pack
from ctrain_dist.trial.trainer import error_row, train


def check_workers(spec: SweepSpec, nproc: int) -> None:
    """Refuse a worker count this machine cannot host, before anything starts."""
    if nproc < 1:
        raise SpecError("--nproc", "must be at least 1")
    require_data_parallel(spec, nproc, "--nproc")
    require_single_process_packs(spec, nproc, "--nproc")
    wants_cuda = spec.training.device == "cuda" or (
        spec.training.device == "auto" and torch.cuda.is_available()
    )
    available = torch.cuda.device_count() if wants_cuda else (os.cpu_count() or 1)
    unit = "GPUs" if wants_cuda else "CPU cores"
    if nproc > available:
        raise SpecError("--nproc", f"asks {nproc} workers but this machine has {available} {unit}")


def _train_rank(trial_json: str, store_root: str) -> None:
    """One rank's share of one trial (the target of ``launch_local``; must be importable)."""
    trial = TrialSpec.model_validate_json(trial_json)
    with StoreSink(Path(store_root), trial.sweep_id) as sink:
        train(trial, sink)


def train_locally(
    spec: SweepSpec, store_root: Path, nproc: int, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Train every trial of ``spec``; returns counts by status. A trial that raises is recorded
    as an ``error`` attempt and the next trial runs. With ``seeds_per_trial`` K, seeds of one
    configuration train K at a time as one pack (``packed.py``), each still its own trial."""
    check_workers(spec, nproc)
    statuses: dict[str, int] = {}
    trials = spec.trials()
    index = 0
    for pack in plan_packs(spec, trials, log):
        for trial, status in zip(pack, _train_pack_here(pack, store_root, nproc), strict=True):
            index += 1
            statuses[status] = statuses.get(status, 0) + 1
            log(f"[{index}/{len(trials)}] {trial.config_label} seed {trial.seed}: {status}")
    return statuses


def _train_pack_here(pack: list[TrialSpec], store_root: Path, nproc: int) -> list[str]:
    """Each seed's status after training ``pack`` (one trial, or seeds trained together)."""
    trial = pack[0]
    try:
        if len(pack) > 1:
            with StoreSink(store_root, trial.sweep_id) as sink:
                rows = {row["trial_id"]: row["status"] for row in train_pack(pack, sink)}
            return [rows[t.trial_id] for t in pack]
        if nproc == 1:
            with StoreSink(store_root, trial.sweep_id) as sink:
                return [train(trial, sink)["status"]]
        launch_local(nproc, _train_rank, (trial.model_dump_json(), str(store_root)))
        kept = open_store(store_root).trials(trial.sweep_id)
        return [kept.loc[kept["trial_id"] == trial.trial_id, "status"].iloc[0]]
    except Exception as error:  # a failed trial must not stop the others
        StoreWriter(store_root, trial.sweep_id).write_trials([error_row(t, error) for t in pack])
        return ["error"] * len(pack)
