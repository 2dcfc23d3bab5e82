"""Sweeps on SLURM through submitit. The only module that knows SLURM and submitit.

Two modes, chosen by the cluster profile (:mod:`ctrain_dist.launch.slurm.profile`):

* **allocation**: one job of N nodes, one task per node. Task 0 starts a Ray head, the others
  join it as workers; each Ray node gets explicit ports (shifted by ``ports.stride`` per task,
  so tasks sharing a host never collide) and its own node-local temp dir. Ray runs with
  ``RAY_AUTH_MODE=token`` and a 0600 token file in the job folder, since anyone on the cluster
  network could otherwise run code as the user. Task 0 then runs
  :func:`~ctrain_dist.launch.ray_sweep.run_sweep`
  against that cluster with ``resume=True``.
* **array**: the pending trials packed ``array.trials_per_task`` per task into a job array;
  each task trains its trials in-process and writes the store directly (``StoreSink``).

Preemption-proof by construction: **the store is the source of truth.** Both job callables
are :class:`submitit.helpers.Checkpointable`, so on a timeout SLURM's USR2 makes submitit
requeue the job, and a job requeued from outside (``scontrol requeue``, preemption) simply
runs again; every run first drops the trials the store shows finished, so no finished trial
runs twice and none is lost. Tune's own experiment state is not restored: it would re-run
trials whose rows reached the store after its last checkpoint.

Rendezvous between tasks uses files in the job folder (shared storage), one folder per run of
the job (``<job>/attempt-<SLURM_RESTART_COUNT>``), so a requeued run never reads the previous
run's head address: the head writes ``head-address``, workers write ``joined-<rank>``, the head
writes ``done`` when the sweep ends and every task stops the Ray processes it started, by PID.

SLURM's environment is read in one place, :func:`task_context`, through submitit's
``JobEnvironment``; everything else receives plain values.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import _make_sbatch_string

from ctrain_dist import store as store_module
from ctrain_dist.errors import SpecError
from ctrain_dist.files import write_atomically
from ctrain_dist.launch.plan import pending_trials
from ctrain_dist.launch.slurm.node_processes import POLL_SECONDS, RayProcess, stop_leftovers
from ctrain_dist.launch.slurm.profile import ClusterProfile
from ctrain_dist.spec import SweepSpec, TrialSpec
from ctrain_dist.store import StoreWriter
from ctrain_dist.store.sink import StoreSink
from ctrain_dist.trial.trainer import error_row, train

TOKEN_FILE = "ray-token"
SUBMISSIONS_FILE = "submissions.jsonl"


class SlurmJobFailed(RuntimeError):
    """A job (or array task) ended without a result; the message carries its SLURM state."""


# --- the SLURM environment, read in one place ---------------------------------------------


@dataclass(frozen=True)
class TaskContext:
    """Where a task runs: plain values read from SLURM's environment once."""

    job_id: str
    rank: int
    num_tasks: int
    hostname: str
    restart: int
    """How often SLURM has requeued the job (``SLURM_RESTART_COUNT``); names the run's folder."""


def task_context() -> TaskContext:
    """The task's SLURM context, through submitit's ``JobEnvironment``."""
    env = submitit.JobEnvironment()
    return TaskContext(
        job_id=env.job_id,
        rank=env.global_rank,
        num_tasks=env.num_tasks,
        hostname=env.hostname,
        restart=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    )


# --- Ray layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RayNode:
    """One Ray node of an allocation: task ``rank`` (0 is the head), its resources and ports."""

    rank: int
    cpus: int
    gpus: int
    ports: dict[str, int]

    @property
    def role(self) -> str:
        return "head" if self.rank == 0 else "worker"


def ray_layout(profile: ClusterProfile) -> list[RayNode]:
    """The Ray node of every task of an allocation-mode job."""
    nodes = []
    for rank in range(profile.nodes):
        ports = profile.ports.per_node(rank)
        if rank == 0:
            ports = {**profile.ports.head_only(), **ports}
        nodes.append(RayNode(rank, profile.cpus_per_task, profile.gpus_per_node, ports))
    return nodes


def trials_per_node(spec: SweepSpec, node: RayNode) -> int:
    """How many trials of ``spec`` fit on ``node`` at once (CPUs and GPUs both bound it)."""
    request = spec.resources
    fits = int(node.cpus // request.cpus_per_trial)
    if request.gpus_per_trial > 0:
        fits = min(fits, int(node.gpus / request.gpus_per_trial + 1e-9))
    return fits


def check_fits(spec: SweepSpec, profile: ClusterProfile) -> None:
    """Refuse a trial that no task of the profile can hold (Ray or SLURM would wait forever)."""
    request = spec.resources
    if request.cpus_per_trial > profile.cpus_per_task:
        raise SpecError(
            "resources.cpus_per_trial",
            f"asks {request.cpus_per_trial:g} CPUs per trial but the cluster profile gives "
            f"{profile.cpus_per_task} per task; raise cluster.cpus_per_task or lower it",
        )
    if request.gpus_per_trial > profile.gpus_per_node:
        raise SpecError(
            "resources.gpus_per_trial",
            f"asks {request.gpus_per_trial:g} GPUs per trial but the cluster profile gives "
            f"{profile.gpus_per_node} per node; raise cluster.gpus_per_node or lower it",
        )
    if profile.mode == "array" and 0 < request.gpus_per_trial < 1:
        raise SpecError(
            "resources.gpus_per_trial",
            "fractional GPUs need allocation mode (an array task runs its trials one at a time)",
        )


def describe_layout(spec: SweepSpec, profile: ClusterProfile, pending: int) -> str:
    """The Ray layout (allocation) or the packing (array), as ``--dry-run`` prints it."""
    token = profile.job_folder / TOKEN_FILE
    if profile.mode == "array":
        per_task = profile.array.trials_per_task
        tasks = -(-pending // per_task)
        return "\n".join(
            [
                f"Array layout: {pending} pending trials, {per_task} per task -> {tasks} array "
                f"tasks, at most {profile.array.parallelism} at once",
                f"  each task: {profile.cpus_per_task} CPUs, {profile.gpus_per_node} GPUs, "
                "trials run one after another in-process, rows written to the store directly",
            ]
        )
    layout = ray_layout(profile)
    request = spec.resources
    lines = [
        f"Ray layout: {len(layout)} nodes, one SLURM task each; RAY_AUTH_MODE=token, "
        f"RAY_AUTH_TOKEN_PATH={token} (mode 0600)",
    ]
    for node in layout:
        ports = ", ".join(f"{name}={port}" for name, port in node.ports.items())
        lines.append(
            f"  task {node.rank} {node.role:<6} {node.cpus} CPUs, {node.gpus} GPUs, "
            f"temp dir {profile.ray_temp_dir}/ctrain-<job>-{node.rank}; {ports}"
        )
    per_node = trials_per_node(spec, layout[0])
    lines += [
        f"  head address: <task 0 IP>:{profile.ports.gcs}; sweep driver on task 0 "
        "(resume=True: trials finished in the store are skipped)",
        f"  each trial: {request.cpus_per_trial:g} CPUs, {request.gpus_per_trial:g} GPUs -> "
        f"{per_node} per node, {per_node * len(layout)} at once; {pending} trials pending",
    ]
    return "\n".join(lines)


# --- submitit executors and job scripts ------------------------------------------------------


class _ScriptOnlyExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor without its check for ``srun``: it only renders job scripts,
    so ``--dry-run`` works on a machine without SLURM."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def make_executor(
    profile: ClusterProfile, job_name: str, script_only: bool = False
) -> submitit.SlurmExecutor:
    """A submitit SLURM executor holding every directive of the profile."""
    executor_class = _ScriptOnlyExecutor if script_only else submitit.SlurmExecutor
    executor = executor_class(
        folder=profile.job_folder / "%j", max_num_timeout=profile.requeues, python=profile.python
    )
    parameters: dict[str, Any] = {
        "job_name": job_name,
        "time": profile.time_minutes,
        "nodes": profile.nodes if profile.mode == "allocation" else 1,
        "ntasks_per_node": 1,
        "cpus_per_task": profile.cpus_per_task,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array.parallelism,
        "setup": list(profile.setup),
        "additional_parameters": dict(profile.sbatch_extra),
    }
    optional = {
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "mem": profile.mem,
        "constraint": profile.constraint,
        "gpus_per_node": profile.gpus_per_node or None,
    }
    parameters.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**parameters)
    return executor


def job_script(executor: submitit.SlurmExecutor, array_size: int | None = None) -> str:
    """The sbatch script submitit submits for this executor (its own generator, not a copy)."""
    parameters = dict(executor.parameters)
    if array_size is not None:
        parameters["map_count"] = array_size
    return _make_sbatch_string(
        command=executor._submitit_command_str, folder=executor.folder, **parameters
    )


def ensure_token(job_folder: Path) -> Path:
    """The job folder's Ray token file, created 0600 if missing (and forced back to 0600)."""
    job_folder.mkdir(parents=True, exist_ok=True)
    path = job_folder / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def ray_start_command(
    node: RayNode, temp_dir: Path, node_ip: str, head_address: str | None
) -> list[str]:
    """``ray start`` for ``node``: explicit ports, its own temp dir, blocking, no usage stats."""
    ray = Path(sys.executable).with_name("ray")
    command = [str(ray) if ray.exists() else "ray", "start", "--block", "--disable-usage-stats"]
    if head_address is None:
        command += ["--head", "--include-dashboard=false"]
    else:
        command += [f"--address={head_address}"]
    command += [f"--{flag}={port}" for flag, port in node.ports.items()]
    command += [
        f"--node-ip-address={node_ip}",
        f"--num-cpus={node.cpus}",
        f"--num-gpus={node.gpus}",
        f"--temp-dir={temp_dir}",
    ]
    return command


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_SECONDS)


class _TaskLog:
    """A task's log: its own file in the job folder, and stdout (submitit's log)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        stamped = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} {line}"
        print(stamped, flush=True)
        with self.path.open("a") as handle:
            handle.write(stamped + "\n")


# --- allocation mode -----------------------------------------------------------------------


class AllocationSweep(Checkpointable):
    """The callable every task of an allocation job runs (submitit pickles it).

    Returns the sweep's outcome on task 0 and None on the others. Holds no state that a
    requeue could lose: each run re-plans from the store.
    """

    def __init__(self, spec: SweepSpec, store_root: Path, profile: ClusterProfile) -> None:
        self.spec = spec
        self.store_root = store_root
        self.profile = profile

    def __call__(self) -> dict[str, Any] | None:
        context = task_context()
        attempt = self.profile.job_folder / context.job_id / f"attempt-{context.restart}"
        attempt.mkdir(parents=True, exist_ok=True)
        log = _TaskLog(attempt / f"task{context.rank}-{context.hostname}.log")
        node = ray_layout(self.profile)[context.rank]
        temp_dir = self.profile.ray_temp_dir / f"ctrain-{context.job_id}-{context.rank}"
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.profile.job_folder / TOKEN_FILE),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        os.environ.update(env)
        import ray

        leftovers = stop_leftovers(attempt.parent, context.rank, context.hostname)
        if leftovers:
            log(f"killed {leftovers} Ray processes an earlier run left on this host")
        node_ip = ray.util.get_node_ip_address()
        log(
            f"task {context.rank}/{context.num_tasks} on {context.hostname} ({node_ip}), "
            f"run {context.restart} of job {context.job_id}"
        )
        if context.rank == 0:
            return self._head(attempt, node, temp_dir, node_ip, context.hostname, env, log)
        self._worker(attempt, node, temp_dir, node_ip, context.hostname, env, log)
        return None

    def _head(
        self,
        attempt: Path,
        node: RayNode,
        temp_dir: Path,
        node_ip: str,
        hostname: str,
        env: dict[str, str],
        log: _TaskLog,
    ) -> dict[str, Any]:
        from ctrain_dist.launch.ray_sweep import run_sweep

        command = ray_start_command(node, temp_dir, node_ip, head_address=None)
        ray_node = RayProcess(command, attempt / "ray-task0.log", env)
        try:
            ray_node.wait_started(self.profile.join_timeout_s)
            ray_node.record(attempt / "ray-task0.pids", hostname)
            address = f"{node_ip}:{self.profile.ports.gcs}"
            write_atomically(attempt / "head-address", address)
            log(f"Ray head up at {address} (pid {ray_node.process.pid}, temp dir {temp_dir})")
            workers = range(1, self.profile.nodes)
            _wait_until(
                lambda: all((attempt / f"joined-{rank}").exists() for rank in workers),
                self.profile.join_timeout_s,
                f"{len(workers)} Ray workers to join",
            )
            log(f"{len(workers)} Ray workers joined; starting the sweep driver")
            outcome = run_sweep(self.spec, self.store_root, resume=True, log=log, address=address)
            log(f"sweep done: {outcome.statuses}, {outcome.skipped} skipped")
            return asdict(outcome)
        finally:
            (attempt / "done").touch()
            ray_node.stop()
            shutil.rmtree(temp_dir, ignore_errors=True)
            log("Ray head stopped")

    def _worker(
        self,
        attempt: Path,
        node: RayNode,
        temp_dir: Path,
        node_ip: str,
        hostname: str,
        env: dict[str, str],
        log: _TaskLog,
    ) -> None:
        head_file, done = attempt / "head-address", attempt / "done"
        _wait_until(
            lambda: head_file.exists() or done.exists(),
            self.profile.join_timeout_s,
            "the Ray head's address",
        )
        if done.exists():
            log("the head ended before this worker joined")
            return
        address = head_file.read_text().strip()
        command = ray_start_command(node, temp_dir, node_ip, head_address=address)
        ray_node = RayProcess(command, attempt / f"ray-task{node.rank}.log", env)
        try:
            ray_node.wait_started(self.profile.join_timeout_s)
            ray_node.record(attempt / f"ray-task{node.rank}.pids", hostname)
            (attempt / f"joined-{node.rank}").touch()
            log(f"Ray worker joined {address} (pid {ray_node.process.pid}, temp dir {temp_dir})")
            while not done.exists() and ray_node.alive():
                time.sleep(POLL_SECONDS)
            if not ray_node.alive():
                raise RuntimeError(f"the Ray worker died; see {ray_node.log_path}")
        finally:
            ray_node.stop()
            shutil.rmtree(temp_dir, ignore_errors=True)
            log("Ray worker stopped")


# --- array mode ----------------------------------------------------------------------------


class ArrayTrials(Checkpointable):
    """The callable of one array task: train its trials in turn, skipping finished ones."""

    def __init__(self, store_root: Path, max_failures: int) -> None:
        self.store_root = store_root
        self.max_failures = max_failures

    def __call__(self, trials: list[TrialSpec]) -> dict[str, int]:
        from ctrain_dist.data.load import load_data

        statuses: dict[str, int] = {}
        sweep_id = trials[0].sweep_id
        finished = store_module.open(self.store_root).finished_trial_ids(sweep_id)
        data_cache: dict[str, Any] = {}
        for trial in trials:
            if trial.trial_id in finished:
                statuses["skipped"] = statuses.get("skipped", 0) + 1
                continue
            key = json.dumps(trial.model_dump(mode="json", include={"data", "split"}))
            for attempt in range(self.max_failures + 1):
                try:
                    if key not in data_cache:
                        data_cache[key] = load_data(trial.data, trial.split)
                    with StoreSink(self.store_root, sweep_id) as sink:
                        status = train(trial, sink, data=data_cache[key])["status"]
                    break
                except Exception as error:
                    StoreWriter(self.store_root, sweep_id).write_trials([error_row(trial, error)])
                    status = "error"
                    print(f"{trial.trial_id}: attempt {attempt + 1} failed: {error}", flush=True)
            statuses[status] = statuses.get(status, 0) + 1
            print(
                f"{trial.trial_id} ({trial.config_label} seed {trial.seed}): {status}", flush=True
            )
        return statuses


# --- submitting and following ----------------------------------------------------------------


@dataclass
class Submission:
    """What was submitted: the jobs (one, or one per array task) and where their files are."""

    mode: str
    jobs: list[Any]
    job_folder: Path
    pending: int
    skipped: int

    @property
    def job_id(self) -> str:
        return str(self.jobs[0].job_id).split("_")[0]


def dry_run_text(spec: SweepSpec, store_root: Path, profile: ClusterProfile, resume: bool) -> str:
    """The job script submitit would submit and the layout; nothing is submitted or written."""
    check_fits(spec, profile)
    pending, _ = pending_trials(spec, store_root, resume)
    executor = make_executor(profile, f"ctrain-{spec.name}", script_only=True)
    if profile.mode == "array":
        tasks = max(1, -(-len(pending) // profile.array.trials_per_task))
        script = job_script(executor, array_size=tasks)
    else:
        script = job_script(executor)
    return f"{script}\n{describe_layout(spec, profile, len(pending))}\n"


def submit(
    spec: SweepSpec, store_root: Path, profile: ClusterProfile, *, resume: bool = False
) -> Submission:
    """Submit ``spec``'s pending trials; refuses bad input (``SpecError``) before submitting."""
    check_fits(spec, profile)
    if shutil.which("sbatch") is None:
        raise SpecError("--cluster", "sbatch not found: run on a SLURM login node")
    store_root = store_root.absolute()
    pending, skipped = pending_trials(spec, store_root, resume)
    executor = make_executor(profile, f"ctrain-{spec.name}")
    if not pending:
        jobs = []
    elif profile.mode == "array":
        size = profile.array.trials_per_task
        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
        jobs = executor.map_array(ArrayTrials(store_root, spec.max_failures), chunks)
    else:
        ensure_token(profile.job_folder)
        jobs = [executor.submit(AllocationSweep(spec, store_root, profile))]
    submission = Submission(profile.mode, jobs, profile.job_folder, len(pending), skipped)
    if jobs:
        record = {
            "job_id": submission.job_id,
            "mode": profile.mode,
            "sweep": spec.name,
            "store": str(store_root),
            "trials": len(pending) + skipped,
            "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with (profile.job_folder / SUBMISSIONS_FILE).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
    return submission


def job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (array tasks as ``<id>_<task>``), from ``sacct``."""
    if not job_ids:
        return {}
    result = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    states = {}
    for line in result.stdout.splitlines():
        job_id, _, state = line.partition("|")
        if job_id:
            states[job_id] = state.strip()
    return states


TERMINAL_STATES = (
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
)


def final_state(job_id: str, timeout_s: float = 30) -> str:
    """The job's SLURM state once accounting shows it ended (sacct may lag a few seconds)."""
    deadline = time.monotonic() + timeout_s
    state = job_states([job_id]).get(job_id, "UNKNOWN")
    while not state.startswith(TERMINAL_STATES) and time.monotonic() < deadline:
        time.sleep(1)
        state = job_states([job_id]).get(job_id, "UNKNOWN")
    return state


def _raised(error: Exception) -> str:
    """The last line of the traceback submitit recorded for a job that raised."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    fences = [i for i, line in enumerate(lines) if set(line.strip()) == {"-"}]
    return lines[fences[1] - 1].strip() if len(fences) >= 2 else (lines or [""])[-1]


def follow(submission: Submission, log: Callable[[str], None] = print) -> dict[str, int]:
    """Wait for every job of ``submission``; counts by trial status.

    A job that ended without a result (cancelled, killed, out of memory, node lost) raises
    :class:`SlurmJobFailed` naming its SLURM state as soon as accounting reports it: submitit
    polls ``sacct``, so this never waits on a dead job forever.
    """
    statuses: dict[str, int] = {}
    failures = []
    for job in submission.jobs:
        try:
            results = job.results()
        except submitit.core.utils.FailedJobError as error:
            failures.append(f"job {job.job_id} {final_state(job.job_id)}: {_raised(error)}")
            continue
        except submitit.core.utils.UncompletedJobError:
            failures.append(
                f"job {job.job_id} {final_state(job.job_id)} without a result "
                f"(logs: {job.paths.stderr})"
            )
            continue
        counts = results[0]["statuses"] if submission.mode == "allocation" else results[0]
        for status, count in counts.items():
            statuses[status] = statuses.get(status, 0) + count
    for failure in failures:
        log(failure)
    if failures:
        raise SlurmJobFailed("; ".join(failures))
    return statuses


def read_submissions(job_folder: Path) -> list[dict[str, Any]]:
    """The submission records of a job folder, oldest first."""
    path = job_folder / SUBMISSIONS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sweep_on_cluster(
    spec: SweepSpec, store_root: Path, cluster: str, resume: bool, dry_run: bool
) -> bool:
    """``ctrain sweep --cluster``: print the script (dry run) or submit and follow the jobs.

    Following is only watching: interrupting it leaves the jobs running, and ``ctrain
    status`` shows them later. Returns whether every job ended with every trial finished.
    """
    from ctrain_dist.launch.slurm.profile import load_profile

    profile = load_profile(cluster)
    if dry_run:
        print(dry_run_text(spec, store_root, profile, resume), end="")
        return True
    submission = submit(spec, store_root, profile, resume=resume)
    if not submission.jobs:
        print(f"nothing to submit: all {submission.skipped} trials already finished")
        return True
    print(
        f"submitted {profile.mode} job {submission.job_id}: {submission.pending} trials "
        f"({submission.skipped} already finished); files in {profile.job_folder}/"
    )
    try:
        statuses = follow(submission)
    except SlurmJobFailed as error:
        print(f"failed: {error}")
        return False
    print("done: " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
    return not statuses.get("error")
