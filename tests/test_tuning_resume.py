"""An Optuna search (with ASHA) whose driver is SIGKILLed mid-search, then resumed.

``ctrain sweep`` runs as a subprocess in its own session on a private Ray; every process it
starts inherits a marker in its environment, so the test kills its stragglers by pid and
touches no other Ray. Done when (issue 18): the resumed search runs exactly its budget in
total (per algorithm: ``configurations × seeds_per_configuration`` trials, the same for each),
never trains a configuration twice, and never re-runs a trial the store held.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from marked_processes import kill_marked, marked_environment

from ctrain_dist import store
from ctrain_dist.store.schema import TERMINAL_STATUSES

SWEEP = "tuning-resume"
# The kill must land mid-search: the store shows a configuration's rows only at the driver's
# next flush (launch/ray_sweep.py FLUSH_SECONDS, 5 s), so the rest of the search must outlast a
# flush interval even when ASHA stops every later trial at its first rung. So each trial trains
# at least GRACE steps: with 150 and then 800 steps (no floor), an idle machine finished the
# whole search between two flushes, before the kill.
CONFIGURATIONS, SEEDS, STEPS, GRACE = 3, 2, 1600, 800
SPEC = {
    "name": SWEEP,
    "data": {"dataset": "adult"},
    "constraints": [{"kind": "loss_gap", "bound": 0.05}],
    "training": {"batch_size": 64, "budget": {"steps": STEPS}, "eval_every": 200},
    "algorithms": [
        {"name": "sgd", "params": {"lr": {"loguniform": [1e-3, 0.3]}}},
        {"name": "alm", "params": {"lr": {"loguniform": [1e-3, 0.3]}, "primal": "sgd"}},
    ],
    "tuning": {
        "budget": {"configurations": CONFIGURATIONS},
        "search": "optuna",
        "seeds_per_configuration": SEEDS,
        "scheduler": {"asha": {"grace_period": GRACE, "reduction_factor": 2}},
    },
    "seeds_per_trial": SEEDS,
    "resources": {"max_concurrent_trials": 1},
}


@pytest.fixture
def environment() -> Iterator[tuple[dict[str, str], str]]:
    with marked_environment("CTRAIN_TUNING_TEST") as marked:
        yield marked


def _ended(root: Path):
    attempts = store.open(root).trials(SWEEP, all_attempts=True)
    return attempts[attempts["status"].isin(TERMINAL_STATUSES)]


@pytest.mark.slow
def test_a_search_resumed_after_sigkill_runs_exactly_its_budget_without_repeats(
    tmp_path: Path, environment
) -> None:
    env, marker = environment
    spec, root = tmp_path / "spec.yaml", tmp_path / "store"
    spec.write_text(yaml.safe_dump(SPEC))
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(spec), "--store", str(root)]
    log = tmp_path / "first.log"
    with log.open("w") as output:
        first = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 480
        while len(_ended(root)) < SEEDS:  # one configuration's seeds in the store
            if first.poll() is not None or time.monotonic() > deadline:
                first.kill()
                pytest.fail(f"no configuration ended in the store; log:\n{log.read_text()}")
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert kill_marked(marker, 60) == [], "processes outlived the killed driver"
    before = _ended(root)
    assert SEEDS <= len(before) < 2 * CONFIGURATIONS * SEEDS, "not killed mid-search"

    resumed = subprocess.run(
        [*command, "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        start_new_session=True,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "configurations in the store" in resumed.stdout
    assert kill_marked(marker, 60) == []

    ended = _ended(root)
    assert ended["trial_id"].is_unique, "a trial ran twice"
    assert set(before["attempt_id"]) <= set(ended["attempt_id"]), "a stored trial was re-run"
    kept = store.open(root).trials(SWEEP)
    assert len(kept) == len(ended) == 2 * CONFIGURATIONS * SEEDS
    for algorithm, rows in kept.groupby("algorithm"):
        seeds = rows.groupby("config_label")["seed"].apply(sorted)
        assert len(seeds) == CONFIGURATIONS, (algorithm, seeds)  # the budget, no repeats
        assert all(s == list(range(SEEDS)) for s in seeds), seeds
