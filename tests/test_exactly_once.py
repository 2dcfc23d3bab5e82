"""Nothing lost, nothing run twice: one driver per sweep, retryable flushes, and a damaged
file that is never taken for trials not yet run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ctrain_dist import store
from ctrain_dist.analysis.report import damage_notice
from ctrain_dist.cli.main import main
from ctrain_dist.errors import SpecError
from ctrain_dist.files import held_or_refused
from ctrain_dist.launch import ray_sweep
from ctrain_dist.launch.plan import pending_trials
from ctrain_dist.spec import load_spec
from ctrain_dist.store import StoreWriter
from ctrain_dist.store.layout import driver_lock_path
from ctrain_dist.trial.records import trial_row

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
SWEEP = "exactly-once"
SPEC = [
    f"name={SWEEP}",
    "seeds=4",
    "algorithms=[{name: sgd, params: {lr: 0.05}}, {name: adam, params: {lr: 0.001}}]",
    "training.budget.steps=20",
]


@pytest.fixture
def spec():
    return load_spec(QUICKSTART, SPEC)


def _finish(root: Path, trials) -> Path:
    """One trials file holding a finished attempt of each of ``trials``."""
    rows = [trial_row(trial, uuid.uuid4().hex, "finished") for trial in trials]
    return StoreWriter(root, SWEEP).write_trials(rows)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_second_driver_of_a_sweep_is_refused_naming_the_first(tmp_path, spec):
    with held_or_refused(driver_lock_path(tmp_path, SWEEP)), pytest.raises(SpecError) as caught:
        ray_sweep.run_sweep(spec, tmp_path, resume=True, log=lambda _: None)
    assert caught.value.field == "--store"
    assert "pid" in str(caught.value) and SWEEP in str(caught.value)


def test_a_second_driver_in_another_process_exits_2_before_ray(tmp_path, spec):
    sets = [arg for value in SPEC for arg in ("--set", value)]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(QUICKSTART), *sets]
    command += ["--store", str(tmp_path), "--resume"]
    with held_or_refused(driver_lock_path(tmp_path, SWEEP)):
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr
    assert "another driver" in result.stderr and "pid" in result.stderr


def test_the_driver_lock_is_free_again_once_its_holder_is_done(tmp_path):
    with held_or_refused(driver_lock_path(tmp_path, SWEEP)):
        pass
    with held_or_refused(driver_lock_path(tmp_path, SWEEP)):
        pass


class _FailsOnce(StoreWriter):
    """A writer whose first ``trials`` write fails, as a full disk would."""

    failed = False

    def write_trials(self, rows):
        if not self.failed and rows:
            self.failed = True
            raise OSError("no space left on device")
        return super().write_trials(rows)


def test_a_failed_driver_flush_is_retried_without_writing_a_row_twice(tmp_path, spec):
    trial = spec.trials()[0]
    callback = ray_sweep.StoreCallback(_FailsOnce(tmp_path, SWEEP), 1, lambda _: None)
    row = trial_row(trial, "a" * 32, "finished")
    evals = [{"trial_id": trial.trial_id, "attempt_id": "a" * 32, "split": "test", "step": 0}]
    callback.on_trial_result(0, [], None, {"ctrain_evals": ray_sweep._encode(evals)})
    callback.on_trial_result(0, [], None, {"ctrain_trial": ray_sweep._encode(row)})
    with pytest.raises(OSError):
        callback.flush()
    callback.flush()
    reader = store.open(tmp_path)
    assert len(reader.evals(SWEEP, all_attempts=True)) == 1
    assert len(reader.trials(SWEEP, all_attempts=True)) == 1


def test_a_truncated_trials_file_makes_resume_and_a_new_sweep_refuse(tmp_path, spec):
    trials = spec.trials()
    _finish(tmp_path, trials[:4])
    damaged = _finish(tmp_path, trials[4:6])
    _truncate(damaged)
    for resume in (True, False):
        with pytest.raises(SpecError) as caught:
            pending_trials(spec, tmp_path, resume)
        assert str(damaged) in str(caught.value) and "--drop-corrupt" in str(caught.value)


def test_when_every_trials_file_is_unreadable_a_new_sweep_is_refused(tmp_path, spec):
    _truncate(_finish(tmp_path, spec.trials()))
    with pytest.raises(SpecError, match="drop-corrupt"):
        pending_trials(spec, tmp_path, resume=False)


def test_after_quarantine_the_lost_trials_are_not_run_again_and_stay_listed(tmp_path, spec):
    trials = spec.trials()
    _finish(tmp_path, trials[:4])
    _truncate(_finish(tmp_path, trials[4:6]))
    store.compact(tmp_path, SWEEP, drop_corrupt=True)
    pending, skipped = pending_trials(spec, tmp_path, resume=True)
    assert [t.trial_id for t in pending] == [t.trial_id for t in trials[6:]]
    assert skipped == 6
    (loss,) = store.open(tmp_path).losses(SWEEP)
    assert loss.quarantined and loss.trial_ids == sorted(t.trial_id for t in trials[4:6])


def test_the_report_names_every_unreadable_file_and_the_trials_it_lacks(tmp_path, spec):
    trials = spec.trials()
    _finish(tmp_path, trials[:4])
    damaged = _finish(tmp_path, trials[4:6])
    _truncate(damaged)
    for stage in ("unreadable", "quarantined"):
        notice = damage_notice(store.open(tmp_path), [SWEEP])
        assert notice.startswith("> **Incomplete store:**"), stage
        assert all(t.trial_id in notice for t in trials[4:6]), stage
        store.compact(tmp_path, SWEEP, drop_corrupt=True)
    assert damage_notice(store.open(tmp_path / "elsewhere")) == ""


def _flip_a_bit_in_a_data_page(path: Path) -> None:
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    last_byte = column.data_page_offset + column.total_compressed_size - 1
    data = bytearray(path.read_bytes())
    data[last_byte] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_data_page_is_caught_by_ls_check(tmp_path, spec, capsys):
    damaged = _finish(tmp_path, spec.trials())
    assert main(["store", "ls", str(tmp_path), "--check"]) == 0
    _flip_a_bit_in_a_data_page(damaged)
    assert main(["store", "ls", str(tmp_path), "--check"]) == 1
    assert f"corrupt (skipped by readers): {damaged}" in capsys.readouterr().out


def test_ls_check_shows_a_quarantined_file_and_the_trials_it_held(tmp_path, spec, capsys):
    trials = spec.trials()
    _finish(tmp_path, trials[:4])
    _truncate(_finish(tmp_path, trials[4:6]))
    store.compact(tmp_path, SWEEP, drop_corrupt=True)
    capsys.readouterr()
    main(["store", "ls", str(tmp_path), "--check"])
    out = capsys.readouterr().out
    assert "quarantined as" in out and all(t.trial_id in out for t in trials[4:6])
