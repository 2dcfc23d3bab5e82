"""Bad input is refused before anything starts: exit 2, a short message naming the field, no
Ray process, and the store exactly as it was.

Each case runs ``ctrain`` as a subprocess with its own ``RAY_TMPDIR``: Ray writes its session
folder there the moment it starts, so an empty folder afterwards shows that none started.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from ctrain_dist.spec import load_spec
from ctrain_dist.store import StoreWriter
from ctrain_dist.trial.records import trial_row

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
SWEEP = "bad-input"
BASE = [
    f"name={SWEEP}",
    "seeds=2",
    "algorithms=[{name: sgd, params: {lr: 0.05}}]",
    "training.budget.steps=20",
]
DEADLINE_S = 120  # a deadline for a hung command, not a measure of speed


def _run(arguments: list[str], ray_tmp: Path, stdin: str = "") -> subprocess.CompletedProcess:
    environment = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    return subprocess.run(
        [sys.executable, "-m", "ctrain_dist.cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        input=stdin,
    )


def _sweep(store: Path, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    sets = [arg for value in [*BASE, *overrides] for arg in ("--set", value)]
    return ["sweep", str(QUICKSTART), *sets, "--store", str(store), *extra]


def _contents(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with a digest of its bytes (folders as ``dir``)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): "dir"
        if path.is_dir()
        else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def finished_store(tmp_path: Path) -> Path:
    """A store in which every trial of the base spec has finished (rows written directly)."""
    root = tmp_path / "store"
    spec = load_spec(QUICKSTART, BASE)
    rows = [trial_row(trial, uuid.uuid4().hex, "finished") for trial in spec.trials()]
    StoreWriter(root, spec.name).write_trials(rows)
    return root


def _not_a_folder(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("not a store")
    return tmp_path / "file"


def _under_a_file(tmp_path: Path) -> Path:
    return _not_a_folder(tmp_path) / "store"


def _empty_spec(tmp_path: Path) -> Path:
    (tmp_path / "empty.yaml").write_text("")
    return tmp_path / "empty.yaml"


# (id, arguments built from (store, tmp_path), the field the message must name)
CASES = [
    (
        "batch larger than the training split",
        lambda store, _: _sweep(store, "training.batch_size=40000", extra=("--resume",)),
        "training.batch_size",
    ),
    (
        "an infinite learning rate",
        lambda store, _: _sweep(
            store, "algorithms=[{name: sgd, params: {lr: .inf}}]", extra=("--resume",)
        ),
        "algorithms.0.params.lr",
    ),
    (
        "a NaN bound",
        lambda store, _: _sweep(store, "constraints.0.bound=.nan", extra=("--resume",)),
        "constraints.0.bound",
    ),
    (
        "a billion seeds",
        lambda store, _: _sweep(store, "seeds=1000000000", extra=("--resume",)),
        "seeds",
    ),
    (
        "a grid of more trials than the ceiling",
        lambda store, _: _sweep(
            store,
            "seeds=10000",
            f"algorithms=[{{name: sgd, params: {{lr: {[0.01 * (i + 1) for i in range(20)]}}}}}]",
            extra=("--resume",),
        ),
        "algorithms",
    ),
    (
        "one configuration listed twice",
        lambda store, _: _sweep(
            store,
            "algorithms=[{name: sgd, params: {lr: 0.05}}, {name: sgd, params: {lr: 0.05}}]",
            extra=("--resume",),
        ),
        "algorithms.1",
    ),
    (
        "a store that is a regular file",
        lambda _, tmp: _sweep(_not_a_folder(tmp)),
        "--store",
    ),
    (
        "a store under a regular file",
        lambda _, tmp: _sweep(_under_a_file(tmp)),
        "--store",
    ),
    (
        "a store that cannot be created",
        lambda _, tmp: _sweep(Path("/proc") / f"ctrain-{uuid.uuid4().hex}"),
        "--store",
    ),
    (
        "a report of a sweep id outside the store",
        lambda store, _: ["report", "--store", str(store), "--sweep", "../../etc"],
        "--sweep",
    ),
    (
        "an empty spec file",
        lambda _, tmp: ["sweep", str(_empty_spec(tmp)), "--store", str(tmp / "store")],
        "empty",
    ),
    (
        "a dry run of a sweep the store already holds, without --resume",
        lambda store, _: _sweep(store, extra=("--dry-run",)),
        "name",
    ),
    (
        "a train run on a store that is a regular file",
        lambda _, tmp: ["train", str(QUICKSTART), "--store", str(_not_a_folder(tmp))],
        "--store",
    ),
]
if not torch.cuda.is_available():
    CASES.append(
        (
            "cuda on a machine without CUDA",
            lambda store, _: _sweep(store, "training.device=cuda", extra=("--resume",)),
            "training.device",
        )
    )


@pytest.mark.parametrize(("build", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_field_before_ray_with_the_store_untouched(
    tmp_path: Path, finished_store: Path, build, field: str
) -> None:
    arguments = build(finished_store, tmp_path)
    before = _contents(finished_store)
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    result = _run(arguments, ray_tmp)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) <= 3, lines
    assert field in result.stderr and "Traceback" not in result.stderr
    assert list(ray_tmp.iterdir()) == [], "Ray started"
    assert _contents(finished_store) == before


def test_a_valid_spec_is_not_refused_by_these_checks(tmp_path: Path, finished_store: Path):
    """Control: the same spec passes every check (a dry run of the finished sweep)."""
    result = _run(_sweep(finished_store, extra=("--dry-run", "--resume")), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "would run 0 trials; 2 already finished" in result.stdout


def test_a_dry_run_lists_only_what_the_store_does_not_hold(tmp_path: Path, finished_store: Path):
    result = _run(_sweep(finished_store, "seeds=3", extra=("--dry-run", "--resume")), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "would run 1 trials; 2 already finished" in result.stdout
    assert sum(" seed " in line for line in result.stdout.splitlines()) == 1


def test_a_dry_run_into_a_closed_pipe_ends_quietly(tmp_path: Path):
    overrides = ["--set", "seeds=2000", "--set", f"name={SWEEP}"]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(QUICKSTART), *overrides]
    command += ["--store", str(tmp_path / "store"), "--dry-run"]
    reader = subprocess.Popen(["head", "-n", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run(
        command, stdout=reader.stdin, stderr=subprocess.PIPE, timeout=DEADLINE_S
    )
    reader.stdin.close()
    reader.stdout.read()
    reader.wait(timeout=DEADLINE_S)
    assert b"Traceback" not in writer.stderr and b"BrokenPipe" not in writer.stderr
    assert writer.returncode == 0
