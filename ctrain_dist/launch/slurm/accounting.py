"""What SLURM's accounting and the job folder say about submitted jobs, without loading Ray.

``ctrain status`` reads this module, so it imports neither torch, Ray nor submitit: only the
standard library (``tests/test_architecture.py`` checks ``ctrain status`` stays light).

The job folder's ``submissions.jsonl`` ties each job to its sweep and store; job states come
from ``sacct``, which only answers where slurmdbd runs. Accounting is also what makes a job
killed from outside visible at all (it leaves no result file), so :func:`final_state` is how
a failure gets its SLURM state.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

SUBMISSIONS_FILE = "submissions.jsonl"

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
"""States after which a job runs no more (a ``CANCELLED by <uid>`` state starts with one)."""


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


def final_state(job_id: str, timeout_s: float = 30) -> str:
    """The job's SLURM state once accounting shows it ended (sacct may lag a few seconds);
    after ``timeout_s`` the last state seen, ended or not."""
    deadline = time.monotonic() + timeout_s
    state = job_states([job_id]).get(job_id, "UNKNOWN")
    while not state.startswith(TERMINAL_STATES) and time.monotonic() < deadline:
        time.sleep(1)
        state = job_states([job_id]).get(job_id, "UNKNOWN")
    return state


def record_submission(job_folder: Path, record: dict[str, Any]) -> None:
    """Add one submission to the job folder's ``submissions.jsonl``.

    An append of one short line, not an atomic rewrite: submissions from several login
    sessions may share a job folder, and a rewrite could drop another's line.
    """
    with (job_folder / SUBMISSIONS_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_submissions(job_folder: Path) -> list[dict[str, Any]]:
    """The submission records of a job folder, oldest first."""
    path = job_folder / SUBMISSIONS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
