"""A real sweep interrupted mid-way and resumed: each trial ends finished exactly once.

``ctrain sweep`` runs as a subprocess in its own session on a private Ray (its own temporary
directory); every process it starts inherits a marker in its environment, so the test can
check that none outlives the sweep and kill stragglers by pid, touching no other Ray.
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

import pytest
from marked_processes import marked_environment, marked_processes

from ctrain_dist import store

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
SWEEP = "resume"
SECONDS = 3  # per trial, longer than nothing but short: the driver flushes every 5 s
SIX_TRIALS = [
    f"name={SWEEP}",
    "seeds=3",
    "algorithms=[{name: sgd, params: {lr: 0.05}}, {name: ssl_alm}]",
    f"training.budget={{seconds: {SECONDS}}}",
    "training.eval_every=200",
    "resources.max_concurrent_trials=1",
]


def _command(root: Path, *extra: str) -> list[str]:
    overrides = [arg for value in SIX_TRIALS for arg in ("--set", value)]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(QUICKSTART)]
    return [*command, *overrides, "--store", str(root), *extra]


def _wait_for_no_marked_processes(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture
def sweep_environment() -> Iterator[tuple[dict[str, str], str]]:
    """Environment of the sweep subprocesses: a process marker and a private Ray temp dir."""
    with marked_environment("CTRAIN_RESUME_TEST") as marked:
        yield marked


def _finished_attempts(root: Path) -> dict[str, list[str]]:
    attempts = store.open(root).trials(SWEEP, all_attempts=True)
    finished = attempts[attempts["status"] == "finished"]
    return finished.groupby("trial_id")["attempt_id"].apply(sorted).to_dict()


def _interrupt(process: subprocess.Popen, how: str) -> None:
    """Stop the sweep as ``how`` says; afterwards none of its processes may be left.

    After a SIGKILL of the driver, Ray's dashboard and runtime-env agents outlive it (Ray ties
    only its GCS and raylet to the driver's life) inside the driver's process group, as they
    would in a terminal; ending that group is the cleanup a shell or a scheduler does, and
    touches no other Ray.
    """
    if how == "SIGINT to the process group":  # what Ctrl-C in a terminal does
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGKILL)
    try:
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the sweep did not stop within 3 minutes of {how}")
    if how == "SIGKILL to the driver":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGKILL to the driver"])
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(
    tmp_path: Path, sweep_environment, how: str
) -> None:
    environment, marker = sweep_environment
    root, log = tmp_path / "store", tmp_path / "sweep.log"
    with log.open("w") as output:
        first = subprocess.Popen(
            _command(root),
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 480
        while len(_finished_attempts(root)) < 2:
            if first.poll() is not None or time.monotonic() > deadline:
                first.kill()
                pytest.fail(f"no two finished trials in the store; log:\n{log.read_text()}")
            time.sleep(0.2)
        _interrupt(first, how)

    assert _wait_for_no_marked_processes(marker, 60) == [], "processes outlived the sweep"
    at_interrupt = _finished_attempts(root)
    attempts_at_interrupt = store.open(root).trials(SWEEP, all_attempts=True)
    assert 2 <= len(at_interrupt) < 6, "the sweep was not interrupted mid-way"
    assert all(len(ids) == 1 for ids in at_interrupt.values())

    resumed = subprocess.run(
        _command(root, "--resume"),
        env=environment,
        capture_output=True,
        text=True,
        timeout=540,
        start_new_session=True,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(at_interrupt)} of 6 trials already finished" in resumed.stdout
    assert _wait_for_no_marked_processes(marker, 60) == [], "processes outlived the sweep"

    final = store.open(root)
    finished = _finished_attempts(root)
    assert len(finished) == 6
    assert all(len(ids) == 1 for ids in finished.values()), finished
    attempts = final.trials(SWEEP, all_attempts=True)
    for trial_id in at_interrupt:  # not re-run: not a single new attempt
        before = attempts_at_interrupt.loc[attempts_at_interrupt["trial_id"] == trial_id]
        after = attempts.loc[attempts["trial_id"] == trial_id]
        assert sorted(after["attempt_id"]) == sorted(before["attempt_id"]), trial_id
    evals = final.evals(SWEEP, columns=["trial_id", "attempt_id", "split", "step"])
    assert not evals.duplicated(["trial_id", "split", "step"]).any()
    assert evals.groupby("trial_id")["attempt_id"].nunique().to_dict() == dict.fromkeys(finished, 1)
    per_trial = evals.groupby("trial_id").agg(rows=("step", "size"), points=("step", "nunique"))
    assert (per_trial["rows"] == 3 * per_trial["points"]).all()
    assert (per_trial["points"] >= 2).all()
