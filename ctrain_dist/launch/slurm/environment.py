"""The one place SLURM's environment is read: a task's job, rank, host and run number.

Why one place: SLURM spreads a task's identity over many variables, some of which submitit
interprets (array task ids, global ranks). Reading them here, once, through submitit's
``JobEnvironment``, hands the job callables plain values and keeps every other module
testable without SLURM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import submitit


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
