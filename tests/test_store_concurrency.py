"""Many writers at once, and writers killed mid-write: nothing lost, nothing counted twice."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctrain_dist import store
from ctrain_dist.cli.main import main
from ctrain_dist.store import StoreWarning
from ctrain_dist.store.sink import StoreSink

WRITERS, TRIALS_EACH, EVAL_POINTS = 8, 50, 3
SPLITS = ("train", "val", "test")


def _trial_rows(writer: int, trial: int) -> tuple[list[dict], dict]:
    trial_id, attempt_id = f"w{writer}-t{trial}", f"w{writer}-t{trial}-a"
    base = {"trial_id": trial_id, "attempt_id": attempt_id, "algorithm": "sgd", "seed": trial}
    evals = [
        {**base, "split": split, "step": step, "objective": writer + trial / 100 + step}
        for step in range(EVAL_POINTS)
        for split in SPLITS
    ]
    now = datetime.now(UTC)
    return evals, {**base, "status": "finished", "started_at": now, "ended_at": now}


def _write_trials(root: str, writer: int, barrier) -> None:
    """One writer process: 50 trials through a StoreSink (two files per trial)."""
    barrier.wait()
    sink = StoreSink(root, "s1")
    for trial in range(TRIALS_EACH):
        evals, finished = _trial_rows(writer, trial)
        for point in range(EVAL_POINTS):
            sink.evals(evals[point * len(SPLITS) : (point + 1) * len(SPLITS)])
        sink.finish(finished)
    sink.close()


def _no_row_twice(reader: store.Store) -> int:
    evals = reader.evals(all_attempts=True, columns=["attempt_id", "split", "step"])
    assert not evals.duplicated().any()
    trials = reader.trials(all_attempts=True, columns=["attempt_id"])
    assert not trials.duplicated().any()
    return len(evals)


@pytest.mark.slow
def test_eight_processes_writing_fifty_trials_each_leave_every_row_exactly_once(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS + 1)
    writers = [
        context.Process(target=_write_trials, args=(str(tmp_path), w, barrier))
        for w in range(WRITERS)
    ]
    for process in writers:
        process.start()
    reader = store.open(tmp_path)
    try:
        barrier.wait(timeout=180)
        seen = 0
        while any(p.is_alive() for p in writers):  # a reader and a compactor alongside
            seen = max(seen, _no_row_twice(reader))
            store.compact(tmp_path)
            time.sleep(0.2)
        for process in writers:
            process.join()
    finally:
        for process in writers:
            if process.is_alive():
                process.kill()
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert seen > 0

    expected_evals, expected_trials = [], []
    for w in range(WRITERS):
        for t in range(TRIALS_EACH):
            evals, finished = _trial_rows(w, t)
            expected_evals += [(r["attempt_id"], r["split"], r["step"]) for r in evals]
            expected_trials.append(finished["trial_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evals = reader.evals(columns=["attempt_id", "split", "step"])
        trials = reader.trials(all_attempts=True)
    assert sorted(evals.itertuples(index=False, name=None)) == sorted(expected_evals)
    assert sorted(trials["trial_id"]) == sorted(expected_trials)
    assert set(trials["status"]) == {"finished"}


# A writer killed mid-write ---------------------------------------------------------------------

FLUSH_ROWS = 3_000
KILLED_WRITER = """
import sys
from ctrain_dist.store.sink import StoreSink

sink = StoreSink(sys.argv[1], "s1", flush_rows=3_000)
base = {"trial_id": "t1", "attempt_id": "killed", "algorithm": "sgd", "seed": 0, "split": "val"}
step = 0
while True:  # a trial that evaluates without end, until SIGKILL
    sink.evals([{**base, "step": step, "objective": 1.0 / (step + 1)}])
    step += 1
"""


def _kill_mid_write(root: Path) -> Path:
    """Start a writer and SIGKILL it while a flush is under its temporary name; that file."""
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root)])
        directory = root / "evals" / "sweep_id=s1"
        deadline = time.monotonic() + 120
        try:
            while process.poll() is None and time.monotonic() < deadline:
                writing = [p for p in directory.glob(".part-*.tmp") if _size(p) > 0]
                if writing and len(list(directory.glob("part-*.parquet"))) >= 2:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    if writing[0].exists():
                        return writing[0]
                    break
                time.sleep(0.001)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    raise AssertionError("never caught the writer between creating and renaming a file")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_a_writer_killed_mid_write_leaves_no_partial_row_and_its_retry_one_finished_attempt(
    tmp_path: Path, capsys
) -> None:
    leftover = _kill_mid_write(tmp_path)
    reader = store.open(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        killed = reader.evals(all_attempts=True)
    assert all(issubclass(w.category, StoreWarning) for w in caught)
    # Whole flushes only: steps 0… in flush-sized blocks, none of the interrupted one.
    assert len(killed) > 0 and len(killed) % FLUSH_ROWS == 0
    assert sorted(killed["step"]) == list(range(len(killed)))
    assert reader.evals().empty  # an attempt without a trials row is not a result

    retry = {"trial_id": "t1", "attempt_id": "retry", "algorithm": "sgd", "seed": 0}
    now = datetime.now(UTC)
    with StoreSink(tmp_path, "s1") as sink:
        sink.evals([{**retry, "split": "val", "step": s, "objective": 0.5} for s in range(3)])
        sink.finish({**retry, "status": "finished", "started_at": now, "ended_at": now})
    attempts = reader.trials(all_attempts=True)
    assert attempts[["trial_id", "attempt_id", "status"]].values.tolist() == [
        ["t1", "retry", "finished"]
    ]
    assert reader.evals()["attempt_id"].unique().tolist() == ["retry"]

    assert main(["store", "ls", str(tmp_path), "--check"]) == 0
    assert f"temporary file (a writer writing now, or killed mid-write): {leftover}" in (
        capsys.readouterr().out
    )
    assert leftover.exists()  # never deleted without a flag
