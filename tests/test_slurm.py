"""Sweeps on a real SLURM through submitit: allocation mode (a Ray cluster inside the job),
array mode (packed seeds included), requeue, cancellation, token auth; and, without SLURM, the
dry run of a 4-node × 4-GPU profile, array packing and an array task's rerun.

The SLURM tests start the dev cluster of ``slurm/dev-cluster`` (two virtual nodes on this
machine, each with its own host name) once per session (``conftest.slurm_cluster``); they
need root and apt, as in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ctrain_dist import store
from ctrain_dist.cli.main import main
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import plan_packs
from ctrain_dist.launch.slurm.accounting import job_states
from ctrain_dist.launch.slurm.jobs import ArrayTrials
from ctrain_dist.launch.slurm.layout import array_tasks
from ctrain_dist.launch.slurm.profile import ClusterProfile, load_profile
from ctrain_dist.launch.slurm.submit import (
    SlurmJobFailed,
    dry_run_text,
    follow,
    job_script,
    make_executor,
    submit,
)
from ctrain_dist.spec import SweepSpec, load_spec

ROOT = Path(__file__).parents[1]
PROFILES = ROOT / "slurm" / "profiles"
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
EXPECTED_DRY_RUN = Path(__file__).parent / "data" / "dry-run-4x4gpu.txt"
SMALL = [
    "seeds=2",
    "algorithms=[{name: sgd, params: {lr: 0.05}}, {name: ssl_alm}]",
    "training.budget.steps=100",
    "training.eval_every=50",
]


def _spec(name: str, *overrides: str) -> SweepSpec:
    return load_spec(QUICKSTART, [f"name={name}", *SMALL, *overrides])


def _profile(job_folder: Path, *overrides: str) -> ClusterProfile:
    return load_profile(PROFILES / "local.yaml", [f"job_folder={job_folder}", *overrides])


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _release(job_id: str, second_run: Path) -> None:
    """Wait for a requeued job's second run, starting it as soon as SLURM holds it PENDING
    (it would otherwise wait ~2 minutes for its BeginTime)."""

    def started() -> bool:
        state = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        if state == "PENDING":
            # May race with SLURM starting the job on its own ("not pending"): the loop
            # simply looks again, so a refused update is not an error.
            subprocess.run(
                ["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True
            )
        return second_run.is_dir()

    _wait_for(started, 180, f"requeued job {job_id} to run again")


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command:
                found.append(f"{entry.name}: {command[:120]}")
    return found


# --- no SLURM needed --------------------------------------------------------------------------


def test_dry_run_of_a_4x4_gpu_profile_prints_the_job_script_and_ray_layout(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "sweep",
            str(QUICKSTART),
            "--set",
            "resources.cpus_per_trial=4",
            "--set",
            "resources.gpus_per_trial=0.25",
            "--store",
            "store",
            "--cluster",
            str(PROFILES / "example-4x4gpu.yaml"),
            "--dry-run",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out == EXPECTED_DRY_RUN.read_text()
    assert not (tmp_path / "store").exists()


def test_a_profile_with_a_bad_field_exits_2_naming_it(tmp_path, capsys):
    profile = tmp_path / "bad.yaml"
    profile.write_text(yaml.safe_dump({"nodes": 0, "job_folder": str(tmp_path)}))
    code = main(["sweep", str(QUICKSTART), "--cluster", str(profile), "--dry-run"])
    assert code == 2
    assert "cluster.nodes" in capsys.readouterr().err


def test_ports_of_tasks_sharing_a_host_must_not_collide(tmp_path):
    with pytest.raises(SpecError) as caught:
        _profile(tmp_path, "ports.stride=50")
    assert caught.value.field == "cluster.ports.stride"


def test_a_trial_larger_than_a_task_is_refused_before_submitting(tmp_path):
    with pytest.raises(SpecError) as caught:
        submit(
            _spec("too-big", "resources.cpus_per_trial=2"), tmp_path / "store", _profile(tmp_path)
        )
    assert caught.value.field == "resources.cpus_per_trial"
    assert not (tmp_path / "submissions.jsonl").exists()


def test_the_dry_run_script_is_the_one_submitit_submits(tmp_path):
    """``job_script`` renders through submitit's private ``_make_sbatch_string`` and
    ``_submitit_command_str``: this fails as soon as submitit renders its scripts otherwise."""
    executor = make_executor(_profile(tmp_path / "jobs"), "ctrain-x", script_only=True)
    submitted = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    assert job_script(executor) == submitted
    executor.parameters["map_count"] = 3  # what submitit's map_array sets for a job array
    submitted_array = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    del executor.parameters["map_count"]
    assert job_script(executor, array_size=3) == submitted_array
    assert "#SBATCH --array=0-2%2" in submitted_array


def test_array_tasks_hold_whole_packs_in_order_and_never_split_one():
    spec = _spec("packs", "seeds=3", "seeds_per_trial=2")
    packs = plan_packs(spec, spec.trials())
    assert [len(pack) for pack in packs] == [2, 1, 2, 1]
    assert array_tasks(packs, 3) == [packs[:2], packs[2:]]
    assert array_tasks(packs, 1) == [[pack] for pack in packs]  # a pack of 2 has a task alone


def test_an_array_dry_run_shows_the_packs_and_the_array_submitit_submits(tmp_path):
    spec = _spec("dry", "seeds=4", "seeds_per_trial=4")
    text = dry_run_text(spec, tmp_path / "store", _profile(tmp_path, "mode=array"), False)
    assert "#SBATCH --array=0-1%2" in text  # 2 packs of 4 seeds; 2 trials per task
    assert "8 pending trials in 2 packs (up to 4 seeds trained together) -> 2 array tasks" in text


def test_a_rerun_of_an_array_task_trains_only_the_seeds_the_store_lacks(tmp_path):
    """What a requeued array task does: it asks the store first (no SLURM needed to check)."""
    spec = _spec("rerun", "seeds=3", "seeds_per_trial=3", "algorithms=[{name: sgd}]")
    (pack,) = plan_packs(spec, spec.trials())
    task = ArrayTrials(tmp_path, attempts=1)
    assert task([pack[:1]]) == {"finished": 1}
    assert task([pack]) == {"skipped": 1, "finished": 2}
    assert task([pack]) == {"skipped": 3}
    attempts = store.open(tmp_path).trials("rerun", all_attempts=True)
    assert sorted(attempts["trial_id"]) == sorted(t.trial_id for t in pack)
    assert set(attempts["status"]) == {"finished"}
    packed = attempts.dropna(subset=["packed_with"])
    second_run = [t.trial_id for t in pack[1:]]
    assert [json.loads(ids) for ids in packed["packed_with"]] == [second_run, second_run]


def test_ctrain_status_loads_neither_submitit_nor_torch_nor_ray():
    probe = (
        "import sys\n"
        "import ctrain_dist.cli.status\n"
        "print(sorted(m for m in ('submitit', 'torch', 'ray') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


# --- on the dev cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def allocation_run(slurm_cluster, tmp_path_factory) -> tuple[Path, Path, str, dict[str, int]]:
    """A quickstart-sized sweep (4 trials) in allocation mode over two SLURM tasks."""
    root = tmp_path_factory.mktemp("allocation")
    profile = _profile(root / "jobs")
    submission = submit(_spec("alloc"), root / "store", profile)
    statuses = follow(submission)
    return root / "store", root / "jobs", submission.job_id, statuses


@pytest.mark.slow
def test_allocation_mode_completes_the_store_with_trials_on_both_ray_nodes(allocation_run):
    store_root, _, _, statuses = allocation_run
    assert statuses == {"finished": 4}
    trials = store.open(store_root).trials("alloc", all_attempts=True)
    assert len(trials) == 4 and set(trials["status"]) == {"finished"}
    hostname = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert set(trials["host"]) == {f"{hostname}-n1", f"{hostname}-n2"}


@pytest.mark.slow
def test_allocation_mode_keeps_per_node_logs_and_a_private_token(allocation_run):
    _, jobs, job_id, _ = allocation_run
    attempt = jobs / job_id / "attempt-0"
    assert len(list(attempt.glob("task*-*.log"))) == 2
    assert "Ray worker joined" in next(attempt.glob("task1-*.log")).read_text()
    assert (jobs / "ray-token").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_allocation_mode_stops_every_ray_process_it_started(allocation_run):
    _, _, job_id, _ = allocation_run
    assert _processes_mentioning(f"ctrain-{job_id}-") == []


@pytest.fixture(scope="module")
def array_run(slurm_cluster, tmp_path_factory) -> tuple[Path, Path, int]:
    """The same sweep in array mode through the CLI: 2 trials per task, 2 array tasks."""
    root = tmp_path_factory.mktemp("array")
    profile = root / "array.yaml"
    raw = yaml.safe_load((PROFILES / "local.yaml").read_text())
    profile.write_text(yaml.safe_dump({**raw, "mode": "array", "job_folder": str(root / "jobs")}))
    arguments = [f"--set={override}" for override in ["name=array", *SMALL]]
    code = main(
        ["sweep", str(QUICKSTART), *arguments, "--store", str(root / "store"),
         "--cluster", str(profile)]
    )  # fmt: skip
    return root / "store", root / "jobs", code


@pytest.mark.slow
def test_array_mode_completes_the_store(array_run):
    store_root, _, code = array_run
    assert code == 0
    trials = store.open(store_root).trials("array", all_attempts=True)
    assert len(trials) == 4 and set(trials["status"]) == {"finished"}
    assert store.open(store_root).evals("array")["trial_id"].nunique() == 4


@pytest.mark.slow
def test_status_shows_the_jobs_slurm_state_beside_the_trials_progress(array_run, capsys):
    _, jobs, _ = array_run

    def shows_completion() -> bool:
        # sacct may report a just-finished job as RUNNING for a few seconds.
        capsys.readouterr()
        assert main(["status", "--job-folder", str(jobs)]) == 0
        out = capsys.readouterr().out
        assert "array: 4 finished (of 4)" in out
        return "COMPLETED" in out

    _wait_for(shows_completion, 60, "ctrain status to show the job COMPLETED")


@pytest.fixture(scope="module")
def packed_array_run(slurm_cluster, tmp_path_factory):
    """2 configurations × 4 seeds in array mode, 4 seeds per pack, 2 trials per task."""
    root = tmp_path_factory.mktemp("packed-array")
    spec = _spec("packed", "seeds=4", "seeds_per_trial=4")
    submission = submit(spec, root / "store", _profile(root / "jobs", "mode=array"))
    return spec, root / "store", submission, follow(submission)


@pytest.mark.slow
def test_array_mode_trains_each_pack_whole_in_one_task(packed_array_run):
    spec, store_root, submission, statuses = packed_array_run
    assert statuses == {"finished": 8}
    assert len(submission.jobs) == 2  # one task per pack of 4, though a task holds 2 trials
    attempts = store.open(store_root).trials("packed", all_attempts=True)
    finished = attempts[attempts["status"] == "finished"]
    # every seed finished, and none twice (a second finished attempt would be listed twice)
    assert sorted(finished["trial_id"]) == sorted(t.trial_id for t in spec.trials())
    packs = {tuple(t.trial_id for t in pack) for pack in plan_packs(spec, spec.trials())}
    assert {tuple(json.loads(ids)) for ids in finished["packed_with"]} == packs
    for ids, trial_id in zip(finished["packed_with"], finished["trial_id"], strict=True):
        assert trial_id in json.loads(ids)


def _requeue_mid_sweep(tmp_path: Path, name: str, requeue) -> None:
    """Submit 6 trials, requeue once one is in the store, and check the resumed sweep."""
    # A time budget, not steps: however fast the trainer gets, trials outlast the driver's
    # store flush, so the requeue lands while some trials are finished and others are not.
    spec = _spec(
        name,
        "seeds=3",
        "training.budget={seconds: 8}",
        "training.eval_every=1000",
    )
    submission = submit(spec, tmp_path / "store", _profile(tmp_path / "jobs"))
    job_id = submission.job_id
    reader = store.open(tmp_path / "store")
    _wait_for(lambda: len(reader.finished_trial_ids(name)) >= 1, 300, "a finished trial")
    before = reader.trials(name, all_attempts=True)
    requeue(submission)
    _release(job_id, tmp_path / "jobs" / job_id / "attempt-1")
    statuses = follow(submission)
    assert len(before) < 6, "the requeue came after the sweep had finished"
    # An attempt cut short by the requeue may be recorded as an error; what must hold is one
    # finished attempt per trial, and the attempts finished before the requeue untouched.
    attempts = reader.trials(name, all_attempts=True)
    finished = attempts[attempts["status"] == "finished"]
    assert sorted(finished["trial_id"]) == sorted(t.trial_id for t in spec.trials())
    kept = reader.trials(name)
    assert sorted(kept["trial_id"]) == sorted(t.trial_id for t in spec.trials())
    assert set(kept["status"]) == {"finished"}
    kept_attempts = dict(zip(kept["trial_id"], kept["attempt_id"], strict=True))
    done_before = before[before["status"] == "finished"]
    assert all(
        kept_attempts[t] == a
        for t, a in zip(done_before["trial_id"], done_before["attempt_id"], strict=True)
    )
    assert statuses.get("finished", 0) <= 6 - len(done_before)


@pytest.mark.slow
def test_a_requeued_allocation_job_resumes_and_runs_each_trial_exactly_once(
    slurm_cluster, tmp_path
):
    def requeue(submission) -> None:
        subprocess.run(["scontrol", "requeue", submission.job_id], check=True)

    _requeue_mid_sweep(tmp_path, "requeue", requeue)


@pytest.mark.slow
def test_a_preemption_signal_checkpoints_and_requeues_through_submitit(slurm_cluster, tmp_path):
    def preempt(submission) -> None:
        submission.jobs[0]._interrupt()  # USR2, as SLURM sends before a timeout or preemption

    _requeue_mid_sweep(tmp_path, "preempt", preempt)


@pytest.fixture(scope="module")
def running_job(slurm_cluster, tmp_path_factory) -> Iterator[tuple[object, Path]]:
    """A long allocation job, returned once its Ray head is up; cancelled at the end."""
    root = tmp_path_factory.mktemp("running")
    spec = _spec("long", "training.budget={seconds: 600}")
    submission = submit(spec, root / "store", _profile(root / "jobs"))
    head = root / "jobs" / submission.job_id / "attempt-0" / "head-address"
    _wait_for(head.exists, 180, "the Ray head")
    yield submission, head
    subprocess.run(["scancel", submission.job_id], check=False)
    for temp_dir in Path("/tmp").glob(f"ctrain-{submission.job_id}-*"):
        shutil.rmtree(temp_dir, ignore_errors=True)  # a cancelled task cannot remove its own


def _connect(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"import ray; ray.init(address={address!r}); print('nodes', len(ray.nodes()))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_a_ray_client_without_the_token_is_refused(running_job):
    submission, head = running_job
    address = head.read_text().strip()
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    refused = _connect(address, bare)
    assert refused.returncode != 0
    assert "ConnectionError" in refused.stderr or "Failed to connect" in refused.stderr
    token = submission.job_folder / "ray-token"
    allowed = _connect(
        address, {**bare, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    )
    assert allowed.returncode == 0 and "nodes 2" in allowed.stdout, allowed.stderr


@pytest.mark.slow
def test_a_job_cancelled_from_outside_is_reported_failed_within_a_minute(running_job):
    submission, _ = running_job
    subprocess.run(["scancel", submission.job_id], check=True)
    started = time.monotonic()
    with pytest.raises(SlurmJobFailed, match="CANCELLED"):
        follow(submission, log=lambda _: None)
    assert time.monotonic() - started < 60
    assert job_states([submission.job_id])[submission.job_id].startswith("CANCELLED")
