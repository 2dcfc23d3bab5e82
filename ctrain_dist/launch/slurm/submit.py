"""Submitting a sweep to SLURM through submitit and following it: ``ctrain sweep --cluster``.

Runs on the login node: turns a profile into a submitit executor, prints the job script it
would submit (``--dry-run``, which works without SLURM), submits the pending trials as one
allocation job or a job array, records the submission for ``ctrain status``, and follows the
jobs until they end. Following is only watching: the jobs do not depend on it.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import pending_trials, plan_packs
from ctrain_dist.launch.slurm.accounting import final_state, record_submission
from ctrain_dist.launch.slurm.jobs import AllocationSweep, ArrayTrials
from ctrain_dist.launch.slurm.layout import (
    array_tasks,
    check_fits,
    describe_array_layout,
    describe_ray_layout,
    token_path,
)
from ctrain_dist.launch.slurm.private_files import (
    UnsafeFile,
    as_spec_error,
    ensure_secret,
    make_private_folder,
)
from ctrain_dist.launch.slurm.profile import ClusterProfile, load_profile
from ctrain_dist.launch.user_code import user_python_path
from ctrain_dist.spec import SweepSpec, TrialSpec
from ctrain_dist.trial.probe import check_plugins


class SlurmJobFailed(RuntimeError):
    """A job (or array task) ended without a result; the message carries its SLURM state."""


class _ScriptOnlyExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor without its check for ``srun``: it only renders job scripts,
    so ``--dry-run`` works on a machine without SLURM."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def make_executor(
    profile: ClusterProfile, job_name: str, script_only: bool = False, python_path: str = ""
) -> submitit.SlurmExecutor:
    """A submitit SLURM executor holding every directive of the profile; ``python_path``
    (``launch.user_code``: where the sweep's user modules are) is exported after the
    profile's setup lines, so the job imports what the driver imported."""
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
        "setup": [*profile.setup, *python_path_setup(python_path)],
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


def python_path_setup(python_path: str) -> list[str]:
    """The job-script line that puts ``python_path`` first on the job's ``PYTHONPATH``."""
    if not python_path:
        return []
    return [f'export PYTHONPATH={shlex.quote(python_path)}"${{PYTHONPATH:+:$PYTHONPATH}}"']


def job_script(executor: submitit.SlurmExecutor, array_size: int | None = None) -> str:
    """The sbatch script submitit submits for this executor (its own generator, not a copy).

    ``array_size``: the tasks of a job array; submitit submits a single task as a plain job.
    """
    parameters = dict(executor.parameters)
    if array_size is not None:
        parameters["map_count"] = array_size
    # Private submitit names, on purpose: submitit renders its script only while submitting,
    # and these are what its SlurmExecutor calls to render it, so the dry run shows the very
    # script a submission sends. test_slurm.py's "dry run script is submitit's" test fails
    # as soon as submitit renames them or renders its script differently.
    return _make_sbatch_string(
        command=executor._submitit_command_str, folder=executor.folder, **parameters
    )


def prepare_job_folder(profile: ClusterProfile) -> None:
    """The job folder, created 0700 (an existing one must be the user's and not writable by
    others: jobs execute the pickles in it), and in allocation mode its Ray token, created
    0600; exit 2 (``cluster.job_folder``) naming what is refused."""
    try:
        make_private_folder(profile.job_folder)
        if profile.mode == "allocation":
            ensure_secret(token_path(profile.job_folder))
    except UnsafeFile as error:
        raise as_spec_error("cluster.job_folder", error) from None


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


def _array_plan(
    spec: SweepSpec,
    pending: list[TrialSpec],
    profile: ClusterProfile,
    log: Callable[[str], None],
) -> list[list[list[TrialSpec]]]:
    """The packs of each array task (see :mod:`~ctrain_dist.launch.slurm.layout`)."""
    return array_tasks(plan_packs(spec, pending, log), profile.array.trials_per_task)


def dry_run_text(spec: SweepSpec, store_root: Path, profile: ClusterProfile, resume: bool) -> str:
    """The job script submitit would submit and the layout; nothing is submitted or written."""
    check_fits(spec, profile)
    pending, _ = pending_trials(spec, store_root, resume)
    check_plugins(spec)
    executor = make_executor(
        profile, f"ctrain-{spec.name}", script_only=True, python_path=user_python_path(spec)
    )
    if profile.mode == "allocation":
        return f"{job_script(executor)}\n{describe_ray_layout(spec, profile, len(pending))}\n"
    notes: list[str] = []
    tasks = _array_plan(spec, pending, profile, notes.append)
    script = job_script(executor, array_size=len(tasks) if len(tasks) > 1 else None)
    layout = [describe_array_layout(spec, profile, tasks), *(f"  {note}" for note in notes)]
    return f"{script}\n" + "\n".join(layout) + "\n"


def submit(
    spec: SweepSpec,
    store_root: Path,
    profile: ClusterProfile,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> Submission:
    """Submit ``spec``'s pending trials; refuses bad input (``SpecError``) before submitting."""
    check_fits(spec, profile)
    if shutil.which("sbatch") is None:
        raise SpecError("--cluster", "sbatch not found: run on a SLURM login node")
    check_plugins(spec)  # user code on one minibatch (trial.probe), before any job
    store_root = store_root.absolute()
    pending, skipped = pending_trials(spec, store_root, resume)
    prepare_job_folder(profile)
    executor = make_executor(profile, f"ctrain-{spec.name}", python_path=user_python_path(spec))
    if not pending:
        jobs = []
    elif profile.mode == "array":
        tasks = _array_plan(spec, pending, profile, log)
        jobs = executor.map_array(ArrayTrials(store_root, spec.max_failures + 1), tasks)
    else:
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
        record_submission(profile.job_folder, record)
    return submission


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


def sweep_on_cluster(
    spec: SweepSpec, store_root: Path, cluster: str, resume: bool, dry_run: bool
) -> bool:
    """``ctrain sweep --cluster``: print the script (dry run) or submit and follow the jobs.

    Following is only watching: interrupting it leaves the jobs running, and ``ctrain
    status`` shows them later. Returns whether every job ended with every trial finished.
    """
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
