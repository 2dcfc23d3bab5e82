"""SLURM's job folder and the files a job trusts in it: the user's own, or refused in one line.

No SLURM needed: these call what the login node and the job's tasks call (the job folder and
token at submission, the head's address and the PID records in a task, each Ray node's temp
dir). Files "owned by another user" are made with ``chown``, so those cases need root.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrain_dist.cli.main import main
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.slurm.layout import token_path
from ctrain_dist.launch.slurm.node_processes import (
    _process_table,
    node_temp_dir,
    stop_leftovers,
)
from ctrain_dist.launch.slurm.private_files import (
    UnsafeFile,
    make_private_folder,
    read_own,
    require_own_folder,
)
from ctrain_dist.launch.slurm.profile import load_profile
from ctrain_dist.launch.slurm.submit import prepare_job_folder

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
LOCAL_PROFILE = ROOT / "slurm" / "profiles" / "local.yaml"
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _profile(job_folder: Path, mode: str = "allocation"):
    return load_profile(LOCAL_PROFILE, [f"job_folder={job_folder}", f"mode={mode}"])


# --- the job folder and the token, at submission ------------------------------------------------


@pytest.mark.parametrize("mode", ["allocation", "array"])
def test_the_job_folder_and_its_parents_are_created_0700_whatever_the_umask(tmp_path, mode):
    folder = tmp_path / "shared" / "jobs"
    with _umask(0):
        prepare_job_folder(_profile(folder, mode))
    assert _mode(folder) == _mode(folder.parent) == 0o700
    token = token_path(folder)
    assert token.exists() == (mode == "allocation")
    if mode == "allocation":
        assert _mode(token) == 0o600 and len(token.read_text()) == 64


@pytest.mark.parametrize("bits", [0o775, 0o757, 0o1777])
def test_a_job_folder_that_others_may_write_is_refused(tmp_path, bits):
    folder = tmp_path / "jobs"
    folder.mkdir()
    folder.chmod(bits)
    with pytest.raises(SpecError) as caught:
        prepare_job_folder(_profile(folder))
    assert caught.value.field == "cluster.job_folder"
    assert f"mode {bits:04o}" in str(caught.value)
    assert not token_path(folder).exists()


@needs_root
def test_a_job_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(SpecError, match=f"owned by uid {NOBODY}"):
        prepare_job_folder(_profile(folder))


def test_a_symlinked_token_is_refused_and_its_target_left_alone(tmp_path):
    folder, elsewhere = tmp_path / "jobs", tmp_path / "my-notes.txt"
    folder.mkdir(mode=0o700)
    elsewhere.write_text("not a token")
    elsewhere.chmod(0o644)
    token_path(folder).symlink_to(elsewhere)
    with pytest.raises(SpecError) as caught:
        prepare_job_folder(_profile(folder))
    assert "symbolic link" in str(caught.value) and caught.value.field == "cluster.job_folder"
    assert elsewhere.read_text() == "not a token" and _mode(elsewhere) == 0o644
    with pytest.raises(UnsafeFile, match="symbolic link"):  # and a task refuses it too
        read_own(token_path(folder), secret=True)


@needs_root
def test_a_token_owned_by_another_user_is_refused(tmp_path):
    folder = make_private_folder(tmp_path / "jobs")
    token = token_path(folder)
    token.write_text("0" * 64)
    token.chmod(0o600)
    os.chown(token, NOBODY, NOBODY)
    with pytest.raises(SpecError, match=f"owned by uid {NOBODY}"):
        prepare_job_folder(_profile(folder))
    with pytest.raises(UnsafeFile, match=f"owned by uid {NOBODY}"):
        read_own(token, secret=True)


def test_a_task_refuses_a_token_others_may_read_and_submission_makes_it_0600_again(tmp_path):
    folder = make_private_folder(tmp_path / "jobs")
    prepare_job_folder(_profile(folder))
    token = token_path(folder)
    secret = token.read_text()
    token.chmod(0o644)
    with pytest.raises(UnsafeFile, match="mode 0644"):
        read_own(token, secret=True)
    prepare_job_folder(_profile(folder))
    assert _mode(token) == 0o600 and read_own(token, secret=True) == secret


def test_a_refused_job_folder_exits_2_with_one_line_before_any_job(tmp_path, capsys):
    folder = tmp_path / "jobs"
    folder.mkdir()
    folder.chmod(0o777)
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        LOCAL_PROFILE.read_text().replace("job_folder: slurm-jobs", f"job_folder: {folder}")
    )
    code = main(
        ["sweep", str(QUICKSTART), "--set", "seeds=1", "--store", str(tmp_path / "store"),
         "--cluster", str(profile)]
    )  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith("ctrain: error: cluster.job_folder:") and "mode 0777" in error
    assert list(folder.iterdir()) == []  # nothing submitted, no token written


# --- what a task reads: the head's address and the PID records ----------------------------------


def test_a_symlinked_head_address_is_refused(tmp_path):
    attempt = make_private_folder(tmp_path / "jobs" / "17" / "attempt-0")
    planted = tmp_path / "planted"
    planted.write_text("203.0.113.9:6379")
    (attempt / "head-address").symlink_to(planted)
    with pytest.raises(UnsafeFile, match="head-address: it is a symbolic link"):
        read_own(attempt / "head-address")


def test_a_head_address_others_may_write_is_refused(tmp_path):
    attempt = make_private_folder(tmp_path / "jobs" / "17" / "attempt-0")
    (attempt / "head-address").write_text("127.0.0.1:26379")
    assert read_own(attempt / "head-address") == "127.0.0.1:26379"
    (attempt / "head-address").chmod(0o666)
    with pytest.raises(UnsafeFile, match="mode 0666"):
        read_own(attempt / "head-address")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _record(job: Path, process: subprocess.Popen) -> Path:
    attempt = make_private_folder(job / "attempt-0")
    started = _process_table()[process.pid][1]
    record = attempt / "ray-task0.pids"
    record.write_text(json.dumps({"host": "n1", "processes": [[process.pid, started]]}))
    return record


@needs_root
def test_a_pid_record_of_another_user_is_refused_and_nothing_is_killed(tmp_path, sleeper):
    job = tmp_path / "jobs" / "17"
    os.chown(_record(job, sleeper), NOBODY, NOBODY)
    with pytest.raises(UnsafeFile, match=f"ray-task0.pids: it is owned by uid {NOBODY}"):
        stop_leftovers(job, 0, "n1")
    assert sleeper.poll() is None


def test_a_symlinked_pid_record_is_refused_and_nothing_is_killed(tmp_path, sleeper):
    job = tmp_path / "jobs" / "17"
    record = _record(job, sleeper)
    planted = tmp_path / "planted.pids"
    record.rename(planted)
    record.symlink_to(planted)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        stop_leftovers(job, 0, "n1")
    assert sleeper.poll() is None


def test_an_own_pid_record_stops_the_process_it_names(tmp_path, sleeper):
    job = tmp_path / "jobs" / "17"
    _record(job, sleeper)
    assert stop_leftovers(job, 0, "n1") == 1
    assert sleeper.wait(timeout=30) == -9


# --- each Ray node's temp dir -------------------------------------------------------------------


def test_ray_temp_dirs_are_fresh_private_and_unpredictable(tmp_path):
    planted = tmp_path / "ctrain-17-0"  # the name the job used to choose
    planted.mkdir()
    planted.chmod(0o777)
    with _umask(0):
        first, second = (node_temp_dir(tmp_path, "17", 0) for _ in range(2))
    assert first != second and planted not in (first, second)
    for folder in (first, second):
        assert folder.parent == tmp_path and folder.name.startswith("ctrain-17-0-")
        assert _mode(folder) == 0o700 and list(folder.iterdir()) == []


def test_a_run_folder_others_may_write_is_refused(tmp_path):
    attempt = make_private_folder(tmp_path / "jobs" / "17" / "attempt-0")
    attempt.chmod(0o777)
    with pytest.raises(UnsafeFile, match="mode 0777"):
        make_private_folder(attempt)
    with pytest.raises(UnsafeFile, match="mode 0777"):
        require_own_folder(attempt)
