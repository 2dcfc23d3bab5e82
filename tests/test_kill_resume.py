"""Killed mid-trial, then resumed: each trial continues from its last checkpoint and ends where
an uninterrupted run ends.

Two real interruptions: a local ``ctrain sweep`` whose whole process group (driver, Ray and
the trial workers) is SIGKILLed once every trial has checkpointed at least twice, then run
again with ``--resume``; and an array job on the SLURM dev cluster requeued with ``scontrol
requeue`` mid-trial. What must hold in both, read from the store and the checkpoint folder:

* each trial's kept attempt resumed from the checkpoint found on disk after the kill
  (``resumed_from_step``), which is at least two intervals in, so a restart from step 0
  could not pass;
* the steps trained in total, over every attempt's records (``steps − resumed_from_step`` of
  the finished attempt, plus what the killed attempt reached: its last evaluation row in the
  store or the checkpoint it left), are within one checkpoint interval of the budget (the
  killed attempt's steps after its last record are fewer than an interval, or it would have
  left a later checkpoint);
* every evaluation of the resumed attempt (float64 metrics and multipliers, all splits, all
  steps) equals an uninterrupted run of the same trial to 1e-12: the same final parameters.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from marked_processes import kill_marked, marked_environment

from ctrain_dist import store
from ctrain_dist.launch.plan import checkpoint_path
from ctrain_dist.launch.slurm.profile import load_profile
from ctrain_dist.launch.slurm.submit import follow, submit
from ctrain_dist.spec import SweepSpec, TrialSpec, load_spec
from ctrain_dist.store.layout import CHECKPOINTS
from ctrain_dist.trial.loop import train

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
INTERVAL = 100
"""Steps between checkpoints, and between evaluations (so each checkpoint has its rows)."""
BUDGET = 6 * INTERVAL
SLURM_BUDGET = 40 * INTERVAL
"""Longer: a requeued job's processes train on for SLURM's KillWait (5 s) after its SIGTERM
(which submitit ignores), and the trial must still be running when they are killed."""
TOLERANCE = 1e-12
NOT_COMPARED = {"attempt_id", "time_s", "sweep_id"}
"""What differs between two runs of one trajectory: the attempt, its clock, its partition."""


def _overrides(name: str, algorithms: str, budget: int = BUDGET) -> list[str]:
    return [
        f"name={name}",
        "seeds=[3]",
        f"algorithms={algorithms}",
        "training.dtype=float64",
        f"training.budget.steps={budget}",
        f"training.eval_every={INTERVAL}",
        f"training.checkpoint_every={INTERVAL}",
    ]


class _Rows:
    """The sink of the uninterrupted reference run: every row, in memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def evals(self, rows: list[dict]) -> None:
        self.rows.extend(rows)

    def finish(self, trial_row: dict | None) -> None:
        pass


def _uninterrupted(trial: TrialSpec) -> list[dict]:
    sink = _Rows()
    train([trial], sink)
    return sink.rows


def _checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint holds (loaded as every resume loads it), None if there is none."""
    with contextlib.suppress(FileNotFoundError):
        return int(torch.load(path, weights_only=True)["step"])
    return None


def _assert_resumed_exactly(
    root: Path, spec: SweepSpec, at_kill: dict[str, int], reference: dict[str, list[dict]]
) -> None:
    """The checks of the module docstring, for every trial of ``spec``."""
    budget = spec.training.budget.steps
    reader = store.open(root)
    kept = reader.trials(spec.name).set_index("trial_id")
    evals = reader.evals(spec.name, all_attempts=True)
    compared: set[str] = set()
    for trial in spec.trials():
        row = kept.loc[trial.trial_id]
        assert row["status"] == "finished" and row["steps"] == budget, trial.trial_id
        last = at_kill[trial.trial_id]
        assert last >= 2 * INTERVAL, "the kill came before the second checkpoint"
        assert row["resumed_from_step"] == last, "not resumed from the last checkpoint"

        mine = evals[evals["trial_id"] == trial.trial_id]
        killed = mine[mine["attempt_id"] != row["attempt_id"]]
        reached = max([last, *killed.groupby("attempt_id")["step"].max()])
        total = reached + budget - row["resumed_from_step"]
        assert budget <= total <= budget + INTERVAL, total

        resumed = mine[mine["attempt_id"] == row["attempt_id"]]
        expected = pd.DataFrame(reference[trial.trial_id])
        got = resumed.set_index(["step", "split"]).sort_index()
        want = expected.set_index(["step", "split"]).sort_index()
        assert list(got.index) == list(want.index), "not the same evaluation points"
        columns = [
            c
            for c in want.columns
            if c not in NOT_COMPARED and pd.api.types.is_numeric_dtype(want[c])
        ]
        compared |= set(columns)
        for column in columns:
            np.testing.assert_allclose(
                got[column].to_numpy(float),
                want[column].to_numpy(float),
                rtol=0,
                atol=TOLERANCE,
                equal_nan=True,
                err_msg=f"{trial.trial_id} {column}",
            )
    assert {"objective", "accuracy", "multiplier_0"} <= compared


# --- a local Ray sweep, its process group SIGKILLed -------------------------------------------


@pytest.fixture
def sweep_environment() -> Iterator[tuple[dict[str, str], str]]:
    """The sweeps' environment: a process marker and a private Ray temp dir, cleaned up."""
    with marked_environment("CTRAIN_KILL_TEST", 60) as marked:
        yield marked


def _sweep_command(root: Path, overrides: list[str], *extra: str) -> list[str]:
    sets = [arg for value in overrides for arg in ("--set", value)]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(QUICKSTART), *sets]
    return [*command, "--store", str(root), *extra]


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_resumes_each_trial_from_its_last_checkpoint(
    tmp_path: Path, sweep_environment
) -> None:
    environment, marker = sweep_environment
    overrides = _overrides("kill", "[{name: sgd, params: {lr: 0.05}}, {name: ssl_alm}]")
    spec = load_spec(QUICKSTART, overrides)
    root, log = tmp_path / "store", tmp_path / "sweep.log"
    paths = {trial.trial_id: checkpoint_path(root, [trial]) for trial in spec.trials()}

    def checkpointed_twice() -> bool:
        steps = [_checkpoint_step(path) for path in paths.values()]
        return all(step is not None and step >= 2 * INTERVAL for step in steps)

    with log.open("w") as output:
        first = subprocess.Popen(
            _sweep_command(root, overrides),
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not checkpointed_twice():
            finished = (root / "trials").is_dir() and store.open(root).finished_trial_ids("kill")
            if first.poll() is not None or finished or time.monotonic() > deadline:
                os.killpg(first.pid, signal.SIGKILL)
                pytest.fail(f"no kill before a trial ended; log:\n{log.read_text()}")
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # driver, Ray and trial workers: a lost machine
        first.wait()
    assert kill_marked(marker) == [], "processes outlived the kill"
    at_kill = {trial_id: _checkpoint_step(path) for trial_id, path in paths.items()}

    resumed = subprocess.run(
        _sweep_command(root, overrides, "--resume"),
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert list((root / CHECKPOINTS / "kill").glob("*.pt")) == []  # dropped once finished
    reference = {trial.trial_id: _uninterrupted(trial) for trial in spec.trials()}
    _assert_resumed_exactly(root, spec, at_kill, reference)


# --- an array job on the SLURM dev cluster, requeued ---------------------------------------------


def _job_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    ).stdout.strip()


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _start_now_if_pending(job_id: str) -> bool:
    """Start a requeued job at once (SLURM holds it ~2 minutes for its BeginTime); True once
    it has left PENDING. A refused update (it started on its own meanwhile) is not an error."""
    if _job_state(job_id) != "PENDING":
        return True
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
    return False


@pytest.mark.slow
@pytest.mark.usefixtures("slurm_cluster")
def test_an_array_job_requeued_mid_trial_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    overrides = _overrides("requeue", "[{name: ssl_alm}]", SLURM_BUDGET)
    spec = load_spec(QUICKSTART, overrides)
    (trial,) = spec.trials()
    root = tmp_path / "store"
    profile = load_profile(
        ROOT / "slurm" / "profiles" / "local.yaml",
        [f"job_folder={tmp_path / 'jobs'}", "mode=array"],
    )
    submission = submit(spec, root, profile, log=lambda _: None)
    path = checkpoint_path(root, [trial])
    _wait_for(lambda: (_checkpoint_step(path) or 0) >= 2 * INTERVAL, 300, "a second checkpoint")
    subprocess.run(["scontrol", "requeue", submission.job_id], check=True)
    _wait_for(lambda: _job_state(submission.job_id) == "PENDING", 120, "the job to be requeued")
    at_requeue = _checkpoint_step(path)  # the killed run's last, as the next run finds it
    assert at_requeue is not None and at_requeue < SLURM_BUDGET, "the trial ended first"
    _wait_for(lambda: _start_now_if_pending(submission.job_id), 180, "the job to run again")
    assert follow(submission, log=lambda _: None) == {"finished": 1}
    assert not path.exists()
    reference = {trial.trial_id: _uninterrupted(trial)}
    _assert_resumed_exactly(root, spec, {trial.trial_id: at_requeue}, reference)
