"""Two real ``ctrain sweep --resume`` drivers started at once on one store: each pending trial
runs exactly once, and the finished ones not at all.

Whichever driver takes the sweep's lock (``STORE/_locks/``) runs the pending trials; the other
is refused with exit 2 naming the holder, or, had it come after the first was done, finds
nothing left to run. Both orders satisfy the same check: one finished attempt per trial.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from ctrain_dist import store
from ctrain_dist.spec import load_spec
from ctrain_dist.store import StoreWriter
from ctrain_dist.trial.records import trial_row

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
SWEEP = "two-drivers"
SPEC = [
    f"name={SWEEP}",
    "seeds=3",
    "algorithms=[{name: sgd, params: {lr: 0.05}}, {name: adam, params: {lr: 0.001}}]",
    "training.budget.steps=20",
    "training.eval_every=10",
]


@pytest.mark.slow
def test_two_resume_drivers_at_once_run_each_pending_trial_exactly_once(tmp_path: Path) -> None:
    trials = load_spec(QUICKSTART, SPEC).trials()
    done_before = trials[:2]
    rows = [trial_row(trial, uuid.uuid4().hex, "finished") for trial in done_before]
    StoreWriter(tmp_path, SWEEP).write_trials(rows)

    sets = [arg for value in SPEC for arg in ("--set", value)]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(QUICKSTART), *sets]
    command += ["--store", str(tmp_path), "--resume"]
    ray_tmp = tempfile.mkdtemp(prefix="ctd-", dir="/tmp")  # short: Ray's socket paths
    environment = {**os.environ, "RAY_TMPDIR": ray_tmp}
    try:
        drivers = [
            subprocess.Popen(
                command,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for _ in range(2)
        ]
        outputs = [driver.communicate(timeout=540) for driver in drivers]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    codes = sorted(driver.returncode for driver in drivers)
    assert codes in ([0, 0], [0, 2]), outputs
    for driver, (_, err) in zip(drivers, outputs, strict=True):
        if driver.returncode == 2:
            assert "another driver" in err and "pid" in err, err
        else:
            assert "Traceback" not in err, err

    attempts = store.open(tmp_path).trials(SWEEP, all_attempts=True)
    assert sorted(attempts["trial_id"]) == sorted(t.trial_id for t in trials)  # one each
    assert set(attempts["status"]) == {"finished"}
    before = {row["trial_id"]: row["attempt_id"] for row in rows}
    kept = attempts.set_index("trial_id")["attempt_id"]
    assert all(kept[trial_id] == attempt for trial_id, attempt in before.items())
