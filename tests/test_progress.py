"""The sweep's progress display: its counts, its best-so-far rule, plain lines, a real terminal."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray.tune.experiment import Trial

from ctrain_dist.analysis import stats
from ctrain_dist.launch.progress import (
    VAL_MAX_VIOLATION,
    VAL_OBJECTIVE,
    BestSoFar,
    ProgressCallback,
)
from ctrain_dist.launch.ray_sweep import StoreCallback
from ctrain_dist.store import StoreWriter
from ctrain_dist.store.schema import (
    ALGORITHM,
    CONFIG_LABEL,
    SEED,
    STATUS,
    STATUS_DIVERGED,
    STATUS_ERROR,
    STATUS_FINISHED,
    TRIAL_ID,
)

REPO = Path(__file__).resolve().parents[1]


def random_rows(rng: np.random.Generator, count: int) -> list[dict]:
    """Rows of 2 algorithms × 4 configurations × 3 seeds, some diverged, errored or missing."""
    rows = []
    for i in range(count):
        algorithm = f"alg{i % 2}"
        config = f"{algorithm}-c{rng.integers(4)}"
        status = rng.choice([STATUS_FINISHED] * 6 + [STATUS_DIVERGED, STATUS_ERROR])
        rows.append(
            {
                TRIAL_ID: f"{config}-s{i}",
                ALGORITHM: algorithm,
                CONFIG_LABEL: config,
                SEED: i,
                STATUS: str(status),
                VAL_OBJECTIVE: float(rng.normal(0.4, 0.05)),
                VAL_MAX_VIOLATION: float(rng.choice([0.0, 0.01, 0.03, np.nan])),
            }
        )
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_best_so_far_picks_what_select_configurations_picks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, int(rng.integers(3, 24)))
    tolerance = float(rng.choice([0.0, 0.02]))
    best = BestSoFar(tolerance)
    for row in rows:
        best.record(row)
    chosen = stats.select_configurations(pd.DataFrame(rows), tolerance=tolerance)
    want = dict(chosen[chosen[STATUS] != STATUS_ERROR].groupby(ALGORITHM)[CONFIG_LABEL].first())
    assert {a: b[0] for a, b in best.best().items()} == want


def test_a_retried_seed_replaces_its_error_and_an_error_measures_nothing() -> None:
    best = BestSoFar(0.0)
    row = {TRIAL_ID: "t0", ALGORITHM: "sgd", CONFIG_LABEL: "sgd(lr=1)", SEED: 0}
    best.record({**row, STATUS: STATUS_ERROR})
    assert best.best() == {}
    best.record({**row, STATUS: STATUS_FINISHED, VAL_OBJECTIVE: 0.3, VAL_MAX_VIOLATION: 0.0})
    assert best.best() == {"sgd": ("sgd(lr=1)", 1, 0.3, 0.0, True)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def trial_result(row: dict) -> dict:
    return {"ctrain_trial": json.dumps(row)}


def finished_row(trial: str, objective: float, violation: float) -> dict:
    return {
        TRIAL_ID: trial,
        ALGORITHM: "alm",
        CONFIG_LABEL: f"alm({trial})",
        SEED: 0,
        STATUS: STATUS_FINISHED,
        "started_at": "2025-01-01T00:00:00+00:00",
        "ended_at": "2025-01-01T00:00:10+00:00",
        VAL_OBJECTIVE: objective,
        VAL_MAX_VIOLATION: violation,
    }


def test_counts_and_eta_come_from_the_store_callback_and_tunes_trial_events(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    store = StoreCallback(StoreWriter(tmp_path, "demo"), total=6, log=lambda line: None)
    clock = Clock()
    progress = ProgressCallback(store, 0.0, "demo", lines.append, io.StringIO(), clock)
    running = Trial("run_trial", config={"pack": [{}, {}]}, stub=True)
    waiting = Trial("run_trial", config={"pack": [{}]}, stub=True)
    progress.on_trial_start(0, [running, waiting], running)  # starts the ETA's clock
    for callback in (store, progress):  # Tune calls them in this order
        callback.on_trial_result(0, [], running, trial_result(finished_row("a", 0.4, 0.0)))
        callback.on_trial_result(0, [], running, trial_result(finished_row("b", 0.3, 0.1)))
    clock.now += 60.0
    progress.on_step_end(1, [running, waiting])
    counts = progress.counts()
    assert counts == {"done": 2, "stopped": 0, "failed": 0, "running": 2, "pending": 2}
    assert progress.eta(counts) == pytest.approx(60.0 * 4 / 2)
    assert lines[-1].splitlines()[0] == (
        "demo: 2/6 done, 2 running, 0 failed, 2 pending; elapsed 0:01:00, ETA 0:02:00"
    )
    assert "best alm: alm(a) (1 seed), val objective 0.4000, val violation 0.0000" in lines[-1]
    progress.on_trial_complete(2, [running, waiting], running)
    assert progress.counts()["running"] == 0 and progress.counts()["pending"] == 4


def test_plain_lines_go_to_the_log_not_the_stream_when_it_is_not_a_terminal(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    stream = io.StringIO()
    store = StoreCallback(StoreWriter(tmp_path, "demo"), total=1, log=lambda line: None)
    with ProgressCallback(store, 0.0, "demo", lines.append, stream) as progress:
        assert progress.live is None
    assert stream.getvalue() == ""
    assert lines == ["demo: 0/1 done, 0 running, 0 failed, 1 pending; elapsed 0:00:00, ETA —"]


SPEC = """\
name: progress
data: {dataset: adult, sensitive: sex}
model: {hidden: [8]}
constraints: [{kind: loss_gap, bound: 0.05}]
training: {batch_size: 64, budget: {steps: 1500}, eval_every: 500}
algorithms:
  - {name: ssl_alm, params: {lr: 0.05}}
  - {name: sgd, params: {lr: [0.01, 0.1]}}
seeds: 2
resources: {cpus_per_trial: 1}
"""
FIELDS = ("done", "running", "failed", "pending", "ETA", "Best so far, by validation")


@pytest.mark.slow  # a real sweep on a local Ray in a real terminal: a minute or two here
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_sweep_in_a_real_terminal_shows_the_live_display_mid_run(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    session = f"ctrain-progress-{uuid.uuid4().hex[:8]}"
    command = (
        f"cd {REPO} && {sys.executable} -m ctrain_dist.cli sweep {spec} --store "
        f"{tmp_path / 'store'}; echo SWEEP-EXITED; sleep 600"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "45", command], check=True
    )
    try:
        screen = mid_run_screen(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    for field in FIELDS:
        assert field in screen, screen
    assert "│ ssl_alm " in screen, screen  # its row of the best-so-far table
    assert "█" in screen or "░" in screen  # the live bar: the terminal was seen as one
    assert "Configuration for experiment" not in screen  # Ray's own table stays off


def mid_run_screen(session: str) -> str:
    """The first captured screen with a finished trial, one still running and the sweep not
    over (polled; the deadline only bounds a hang, nothing is timed)."""
    deadline = time.monotonic() + 480
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout
        if "SWEEP-EXITED" in screen:
            break
        status = [line for line in screen.splitlines() if line.startswith("progress: ")]
        if status and " 0/6 done" not in status[-1] and " 0 running" not in status[-1]:
            return screen
        time.sleep(0.5)
    pytest.fail(f"never saw the sweep mid-run; last screen:\n{screen}")


def test_the_callback_pickles_without_its_stream_as_tune_saves_it(tmp_path: Path) -> None:
    store = StoreCallback(StoreWriter(tmp_path, "demo"), total=1, log=print)
    progress = ProgressCallback(store, 0.0, "demo", print, io.TextIOWrapper(io.BytesIO()))
    copy = pickle.loads(pickle.dumps(progress))
    assert copy.given_stream is None and copy.store.total == 1
