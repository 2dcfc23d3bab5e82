"""The preprocessing cache: content-keyed, built once under concurrency, loaded without a copy."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ctrain_dist.cli.main import main
from ctrain_dist.data import cache
from ctrain_dist.data.cache import Prepared, ensure, list_entries, open_tabular
from ctrain_dist.data.load import load_data, prepare_data
from ctrain_dist.data.synth import write_synthetic
from ctrain_dist.spec import SweepSpec, parse_spec

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def pums(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pums")
    write_synthetic(root, ["OK"], rows=3000, seed=2)
    return root


def _spec(root: Path, **overrides) -> SweepSpec:
    return parse_spec(
        {
            "name": "t",
            "data": {"dataset": "folktables", "root": str(root), "states": ["OK"]},
            "constraints": [{"kind": "loss_gap", "bound": 0.01}],
            "algorithms": [{"name": "sgd"}],
            **overrides,
        }
    )


def _key(spec: SweepSpec, folder: Path) -> str:
    return prepare_data(spec.data, spec.split, folder).key


START_TIMEOUT_S = 120.0
"""How long the processes of one test may take to import and say they are ready."""


def _run_together(script: str, args: list[list[str]], go: Path) -> list[dict]:
    """Start one process per argument list, release them at once, return their JSON lines."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(go), *arguments],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for arguments in args
    ]
    deadline = time.monotonic() + START_TIMEOUT_S
    while sum(go.parent.joinpath(f"ready-{p.pid}").exists() for p in processes) < len(processes):
        if time.monotonic() > deadline:
            for process in processes:
                process.kill()
            raise TimeoutError(f"the processes did not start within {START_TIMEOUT_S:g} s")
        time.sleep(0.05)
    go.touch()
    return [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in processes]


_WAIT = """
import json, os, sys, time
from pathlib import Path
go = Path(sys.argv[1])
(go.parent / f"ready-{os.getpid()}").touch()
deadline = time.monotonic() + 120
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never released")
    time.sleep(0.002)
"""

_PREPARE = (
    _WAIT
    + """
from ctrain_dist.data.load import prepare_data
from ctrain_dist.spec import SweepSpec
spec = SweepSpec.model_validate_json(sys.argv[2])
entry = prepare_data(spec.data, spec.split, sys.argv[3])
print(json.dumps({"key": entry.key, "built": entry.built}))
"""
)

_SLOW_BUILD = (
    _WAIT
    + """
import numpy as np
from ctrain_dist.data.cache import Prepared, ensure
def build():
    with open(sys.argv[3], "a") as calls:
        calls.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    rows = np.arange(10)
    splits = {"train": rows[:6], "val": rows[6:8], "test": rows[8:]}
    features = np.ones((10, 2), np.float32)
    return Prepared("slow", features, rows % 2, rows % 2, splits, ("a", "b"), ("g0", "g1"))
entry = ensure("slowkey", build, {}, sys.argv[2])
print(json.dumps({"key": entry.key, "built": entry.built}))
"""
)


@pytest.mark.slow
def test_two_processes_preparing_the_same_dataset_leave_one_valid_cache(pums, tmp_path):
    folder = tmp_path / "cache"
    spec_json = _spec(pums).model_dump_json()
    results = _run_together(_PREPARE, [[spec_json, str(folder)]] * 2, tmp_path / "go")
    assert results[0]["key"] == results[1]["key"]
    assert sorted(r["built"] for r in results) == [False, True]
    entries = list_entries(folder)
    assert [entry.key for entry in entries] == [results[0]["key"]]
    assert not list(folder.glob(".tmp-*"))
    data = open_tabular(entries[0].path)
    assert data.features.shape == (entries[0].manifest["rows"], entries[0].manifest["num_features"])


@pytest.mark.slow
def test_concurrent_builders_of_one_key_build_once_and_the_other_waits(tmp_path):
    calls = tmp_path / "calls"
    args = [[str(tmp_path / "cache"), str(calls)]] * 2
    results = _run_together(_SLOW_BUILD, args, tmp_path / "go")
    assert len(calls.read_text().splitlines()) == 1
    assert sorted(r["built"] for r in results) == [False, True]


def _prepared(value: float) -> Prepared:
    rows = np.arange(10)
    splits = {"train": rows[:6], "val": rows[6:8], "test": rows[8:]}
    features = np.full((10, 2), value, np.float32)
    return Prepared("p", features, rows % 2, rows % 2, splits, ("a", "b"), ("g0", "g1"))


def test_without_working_locks_two_builders_still_leave_one_entry(tmp_path, monkeypatch):
    """As on a network file system without flock: both build, the second rename loses."""
    monkeypatch.setattr(cache, "exclusive_lock", lambda path: _NoLock())
    barrier = threading.Barrier(2)

    def build(value: float) -> Prepared:
        barrier.wait()
        return _prepared(value)

    entries = []

    def builder(value: float) -> None:
        entries.append(ensure("k", lambda: build(value), {}, tmp_path))

    threads = [threading.Thread(target=builder, args=(value,)) for value in (1.0, 2.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(entry.built for entry in entries) == [False, True]
    assert [entry.key for entry in list_entries(tmp_path)] == ["k"]
    assert not list(tmp_path.glob(".tmp-*"))
    winner = next(entry for entry in entries if entry.built)
    assert open_tabular(winner.path).features[0, 0] in (1.0, 2.0)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def test_a_crashed_builders_leftovers_are_removed_by_the_next_builder(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    leftover = tmp_path / f".tmp-k-{cache._HOST}-{dead_pid}-abcdef01"
    leftover.mkdir()
    (leftover / "features.npy").write_bytes(b"half")
    assert ensure("k", lambda: _prepared(1.0), {}, tmp_path).built
    assert not leftover.exists()


def test_a_failed_build_leaves_no_entry_and_the_next_build_succeeds(tmp_path):
    def broken() -> Prepared:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ensure("k", broken, {}, tmp_path)
    assert list_entries(tmp_path) == []
    assert not list(tmp_path.glob(".tmp-*"))
    assert ensure("k", lambda: _prepared(1.0), {}, tmp_path).built


def test_a_changed_option_gives_a_new_key(pums, tmp_path):
    base = _key(_spec(pums), tmp_path)
    assert _key(_spec(pums), tmp_path) == base
    assert _key(_spec(pums, split={"seed": 1}), tmp_path) != base
    assert _key(_spec(pums, split={"val": 0.1}), tmp_path) != base
    changed_group = _spec(
        pums, data={"dataset": "folktables", "root": str(pums), "sensitive": "sex"}
    )
    assert _key(changed_group, tmp_path) != base
    assert len(list_entries(tmp_path)) == 4


def test_edited_file_content_gives_a_new_key_even_with_size_and_mtime_kept(pums, tmp_path):
    root = tmp_path / "pums"
    (path,) = write_synthetic(root, ["OK"], rows=500, seed=2)
    before = _key(_spec(root), tmp_path)
    stat = path.stat()
    text = path.read_text()
    position = text.index("\n", text.index("\n") + 1) - 1
    digit = text[position]
    path.write_text(text[:position] + ("7" if digit != "7" else "8") + text[position + 1 :])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert path.stat().st_size == stat.st_size
    assert _key(_spec(root), tmp_path) != before


def test_a_copy_of_the_same_files_hits_the_same_key(tmp_path):
    first = write_synthetic(tmp_path / "a", ["OK"], rows=500, seed=2)
    write_synthetic(tmp_path / "b", ["OK"], rows=500, seed=2)
    assert first
    cache_folder = tmp_path / "cache"
    assert _key(_spec(tmp_path / "a"), cache_folder) == _key(_spec(tmp_path / "b"), cache_folder)
    assert len(list_entries(cache_folder)) == 1


def _mapped_file(address: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else ""
    return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_trial_maps_the_cached_matrix_instead_of_copying_it(pums, tmp_path, monkeypatch):
    monkeypatch.setenv("CTRAIN_CACHE", str(tmp_path))
    spec = _spec(pums)
    data = load_data(spec.data, spec.split)
    entry = prepare_data(spec.data, spec.split)
    assert _mapped_file(data.features.data_ptr()) == str(entry.path / "features.npy")
    assert _mapped_file(data.labels.data_ptr()) == str(entry.path / "labels.npy")
    last = data.features[-1, -1].item()
    on_disk = np.load(entry.path / "features.npy", mmap_mode="r")
    assert on_disk[-1, -1] == last


def test_a_trial_load_of_200000_rows_maps_its_matrix_instead_of_reading_it(tmp_path):
    """What makes a trial's load cheap (its time is measured in benchmarks/bench_data.py)."""
    rows = np.arange(200_000)
    features = np.random.default_rng(0).random((200_000, 150), dtype=np.float32)
    splits = {"train": rows[rows % 5 > 1], "val": rows[rows % 5 == 1], "test": rows[rows % 5 == 0]}
    names = tuple(f"f{i}" for i in range(150))
    prepared = Prepared("big", features, rows % 2, rows % 2, splits, names, ("g0", "g1"))
    entry = ensure("big", lambda: prepared, {}, tmp_path)
    reused = ensure("big", lambda: prepared, {}, tmp_path)
    data = open_tabular(reused.path)
    assert not reused.built
    assert _mapped_file(data.features.data_ptr()) == str(entry.path / "features.npy")
    assert data.features.shape == (200_000, 150)
    assert entry.size_bytes() > features.nbytes


def test_prepare_prints_key_rows_features_groups_and_ls_lists_it(pums, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\nconstraints: [{kind: loss_gap, bound: 0.01}]\nalgorithms: [{name: sgd}]\n"
        f"data: {{dataset: folktables, root: {pums}, states: [OK]}}\n"
    )
    folder = str(tmp_path / "cache")
    assert main(["data", "prepare", str(spec), "--cache", folder]) == 0
    prepared = capsys.readouterr().out
    key = prepared.split(":")[0]
    assert "rows" in prepared and "features" in prepared and "non-white (synthetic)" in prepared
    assert "built in" in prepared
    assert main(["data", "prepare", str(spec), "--cache", folder, "--set", "split.seed=0"]) == 0
    assert "already cached" in capsys.readouterr().out
    assert main(["data", "ls", "--cache", folder]) == 0
    listing = capsys.readouterr().out
    assert key in listing and "ACSIncome OK 2018 1-Year (synthetic)" in listing and "MiB" in listing
