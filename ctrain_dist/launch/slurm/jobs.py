"""The callables submitit pickles and SLURM runs: one per mode, no state a requeue could lose.

Both are :class:`submitit.helpers.Checkpointable`: on a timeout SLURM's USR2 makes submitit
requeue the job, and a job requeued from outside (``scontrol requeue``, preemption) simply
runs again. Every run first asks the store which trials are finished and runs only the
others, so no finished trial runs twice and none is lost.

Allocation mode (:class:`AllocationSweep`) meets its tasks through files in the job folder
(shared storage), one folder per run of the job (``<job>/attempt-<SLURM_RESTART_COUNT>``), so
a requeued run never reads the previous run's head address: the head writes ``head-address``,
workers write ``joined-<rank>``, the head writes ``done`` when the sweep ends, and every task
stops the Ray processes it started, by PID. Every such file is written atomically, so a task
polling for one never reads it half written; and what a task acts on (the token, the head's
address, the PID records) is read only from the user's own files (``private_files``), in run
folders created 0700, while each Ray node's temp dir is a fresh ``mkdtemp`` folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from ctrain_dist import store as store_module
from ctrain_dist.data import TabularData
from ctrain_dist.data.load import load_data
from ctrain_dist.files import write_atomically
from ctrain_dist.launch.plan import (
    checkpoint_path,
    drop_finished_checkpoint,
    prepare_compile_cache,
)
from ctrain_dist.launch.slurm.environment import task_context
from ctrain_dist.launch.slurm.layout import RayNode, ray_layout, token_path
from ctrain_dist.launch.slurm.node_processes import (
    POLL_SECONDS,
    RayProcess,
    node_temp_dir,
    ray_start_command,
    stop_leftovers,
)
from ctrain_dist.launch.slurm.private_files import make_private_folder, read_own, require_own_folder
from ctrain_dist.launch.slurm.profile import ClusterProfile
from ctrain_dist.spec import SweepSpec, TrialSpec
from ctrain_dist.store.sink import StoreSink
from ctrain_dist.trial.runner import run_pack


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_SECONDS)


class _TaskLog:
    """A task's log: stdout (submitit's log of the task) and, given a path, its own file in
    the job folder, where the tasks of one run sit side by side."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        stamped = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} {line}"
        print(stamped, flush=True)
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(stamped + "\n")


# --- allocation mode -----------------------------------------------------------------------


@dataclass(frozen=True)
class _TaskRun:
    """One run of one task of an allocation job: its Ray node and where that run writes."""

    attempt: Path
    """``<job folder>/<job id>/attempt-<restart>``: this run's rendezvous files and logs."""
    node: RayNode
    temp_dir: Path
    node_ip: str
    hostname: str
    env: dict[str, str]
    log: _TaskLog


@contextmanager
def _ray_node(run: _TaskRun, head_address: str | None, timeout_s: float) -> Iterator[RayProcess]:
    """The task's Ray node (the head when ``head_address`` is None), up and recorded for a
    later run to clean up; stopped by PID and its temp dir removed however the block ends.

    The head writes ``done`` before its Ray stops, even when it failed to start, so workers
    leave on ``done`` and never fail for having lost their head.
    """
    rank = run.node.rank
    command = ray_start_command(run.node, run.temp_dir, run.node_ip, head_address)
    process = RayProcess(command, run.attempt / f"ray-task{rank}.log", run.env)
    try:
        process.wait_started(timeout_s)
        process.record(run.attempt / f"ray-task{rank}.pids", run.hostname)
        yield process
    finally:
        if head_address is None:
            write_atomically(run.attempt / "done", "")
        process.stop()
        run.log(f"Ray {run.node.role} stopped")


class AllocationSweep(Checkpointable):
    """The callable every task of an allocation job runs: a Ray node, and on task 0 the sweep.

    Returns the sweep's outcome on task 0 and None on the others.
    """

    def __init__(self, spec: SweepSpec, store_root: Path, profile: ClusterProfile) -> None:
        self.spec = spec
        self.store_root = store_root
        self.profile = profile

    def __call__(self) -> dict[str, Any] | None:
        context = task_context()
        job_folder = self.profile.job_folder
        require_own_folder(job_folder)
        attempt = make_private_folder(job_folder / context.job_id / f"attempt-{context.restart}")
        log = _TaskLog(attempt / f"task{context.rank}-{context.hostname}.log")
        token = token_path(job_folder)
        read_own(token, secret=True)  # Ray reads it; refused here if anyone else could
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        os.environ.update(env)
        # Imported here, after the token settings are exported, so Ray starts with them; and
        # array tasks, which unpickle this module too, never load Ray.
        import ray

        leftovers = stop_leftovers(attempt.parent, context.rank, context.hostname)
        if leftovers:
            log(f"killed {leftovers} Ray processes an earlier run left on this host")
        node_ip = ray.util.get_node_ip_address()
        log(
            f"task {context.rank}/{context.num_tasks} on {context.hostname} ({node_ip}), "
            f"run {context.restart} of job {context.job_id}"
        )
        run = _TaskRun(
            attempt=attempt,
            node=ray_layout(self.profile)[context.rank],
            temp_dir=node_temp_dir(self.profile.ray_temp_dir, context.job_id, context.rank),
            node_ip=node_ip,
            hostname=context.hostname,
            env=env,
            log=log,
        )
        try:
            if context.rank == 0:
                return self._head(run)
            self._worker(run)
            return None
        finally:
            shutil.rmtree(run.temp_dir, ignore_errors=True)

    def _head(self, run: _TaskRun) -> dict[str, Any]:
        from ctrain_dist.launch.ray_sweep import run_sweep  # loads Ray: see __call__

        with _ray_node(run, None, self.profile.join_timeout_s) as ray_node:
            address = f"{run.node_ip}:{self.profile.ports.gcs}"
            write_atomically(run.attempt / "head-address", address)
            run.log(f"Ray head up at {address} (pid {ray_node.process.pid}, {run.temp_dir})")
            workers = range(1, self.profile.nodes)
            _wait_until(
                lambda: all((run.attempt / f"joined-{rank}").exists() for rank in workers),
                self.profile.join_timeout_s,
                f"{len(workers)} Ray workers to join",
            )
            run.log(f"{len(workers)} Ray workers joined; starting the sweep driver")
            outcome = run_sweep(
                self.spec, self.store_root, resume=True, log=run.log, address=address
            )
            run.log(f"sweep done: {outcome.statuses}, {outcome.skipped} skipped")
            return asdict(outcome)

    def _worker(self, run: _TaskRun) -> None:
        head_file, done = run.attempt / "head-address", run.attempt / "done"
        _wait_until(
            lambda: head_file.exists() or done.exists(),
            self.profile.join_timeout_s,
            "the Ray head's address",
        )
        if done.exists():
            run.log("the head ended before this worker joined")
            return
        address = read_own(head_file).strip()
        with _ray_node(run, address, self.profile.join_timeout_s) as ray_node:
            write_atomically(run.attempt / f"joined-{run.node.rank}", "")
            run.log(f"Ray worker joined {address} (pid {ray_node.process.pid}, {run.temp_dir})")
            # No run of the job outlives its time limit, so neither does this wait.
            _wait_until(
                lambda: done.exists() or not ray_node.alive(),
                self.profile.time_minutes * 60,
                "the sweep to end",
            )
            if not done.exists():
                raise RuntimeError(f"the Ray worker died; see {ray_node.log_path}")


# --- array mode ----------------------------------------------------------------------------


def _pack_data(trial: TrialSpec, log: Callable[[str], None]) -> TabularData | None:
    """The data of a pack, loaded once per task (``load_data`` keeps it per data and split).

    None when it fails to load: ``run_pack`` then loads it itself, so the failure is recorded
    against every seed of the pack, and retried, like any other failure of a trial.
    """
    try:
        return load_data(trial.data, trial.split)
    except Exception as error:
        log(f"{trial.config_label}: data failed to load ({error}); run_pack retries and records it")
        return None


class ArrayTrials(Checkpointable):
    """The callable of one array task: its packs, one after another, each through ``run_pack``.

    The packs were planned at submission (``plan_packs``, then whole packs per task: see
    :mod:`~ctrain_dist.launch.slurm.layout`). Every run drops from them the trials the store
    shows finished, so the seeds of a pack that a requeue cut short train together again and
    a finished seed never trains twice; and each pack checkpoints to the store's
    ``_checkpoints/`` folder (``plan.checkpoint_path``, as in a Ray sweep), so a requeued pack
    resumes from its last checkpoint, as a new attempt. Returns counts by status
    (``skipped``: finished before this run). A failed pack is retried by ``run_pack`` up to
    ``attempts`` times in all, each failure an ``error`` row per seed; it never stops the
    task's other packs.
    """

    def __init__(self, store_root: Path, attempts: int) -> None:
        self.store_root = store_root
        self.attempts = attempts

    def __call__(self, packs: list[list[TrialSpec]]) -> dict[str, int]:
        log = _TaskLog(None)
        sweep_id = packs[0][0].sweep_id
        finished = store_module.open(self.store_root).finished_trial_ids(sweep_id)
        statuses: Counter[str] = Counter()
        with StoreSink(self.store_root, sweep_id) as sink:
            for pack in packs:
                pending = [trial for trial in pack if trial.trial_id not in finished]
                statuses["skipped"] += len(pack) - len(pending)
                if not pending:
                    continue
                data = _pack_data(pending[0], log)
                checkpoint = checkpoint_path(self.store_root, pending)
                prepare_compile_cache(self.store_root, pending)
                rows = run_pack(
                    pending, sink, data=data, attempts=self.attempts, log=log, checkpoint=checkpoint
                )
                drop_finished_checkpoint(checkpoint, rows)
                for row in rows:
                    statuses[row["status"]] += 1
                    label = f"{row['config_label']} seed {row['seed']}"
                    log(f"{row['trial_id']} ({label}): {row['status']}")
        return {status: count for status, count in statuses.items() if count}
