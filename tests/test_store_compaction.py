"""Specification of compaction: fewer files, the same rows, exact for readers reading meanwhile."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from ctrain_dist import store
from ctrain_dist.cli.main import main
from ctrain_dist.store import StoreWarning, StoreWriter

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def trial_row(trial_id: str, attempt_id: str, status: str = "finished", **extra) -> dict:
    return {
        "trial_id": trial_id,
        "attempt_id": attempt_id,
        "algorithm": "ssl_alm",
        "seed": 0,
        "status": status,
        "ended_at": T0,
        **extra,
    }


def eval_rows(trial_id: str, attempt_id: str, steps: range, **extra) -> list[dict]:
    return [
        {
            "trial_id": trial_id,
            "attempt_id": attempt_id,
            "split": split,
            "step": step,
            "objective": step / 7 + len(split),
            **extra,
        }
        for step in steps
        for split in ("train", "val", "test")
    ]


def many_small_files(root: Path, sweep: str = "s1", trials: int = 6) -> None:
    """Per trial: two attempts, files with differing hyperparameter columns, a flush per step."""
    writer = StoreWriter(root, sweep)
    for t in range(trials):
        extra = {"hp_lr": 0.1 * t} if t % 2 else {"hp_lr": t, "hp_rho": 2.0}
        writer.write_trials([trial_row(f"t{t}", f"t{t}-a0", "error", **extra)])
        for step in range(3):
            writer.write_evals(eval_rows(f"t{t}", f"t{t}-a1", range(step, step + 1), **extra))
        writer.write_trials([trial_row(f"t{t}", f"t{t}-a1", **extra)])


def part_files(root: Path, table: str) -> list[Path]:
    return sorted((root / table).glob("*/part-*.parquet"))


def everything(root: Path) -> dict[str, pd.DataFrame]:
    """Every row of every attempt, in a canonical order and column order."""
    reader = store.open(root)
    frames = {
        "trials": reader.trials(all_attempts=True),
        "evals": reader.evals(all_attempts=True),
    }
    keys = {"trials": ["attempt_id"], "evals": ["attempt_id", "split", "step"]}
    return {
        table: frame[sorted(frame.columns)].sort_values(keys[table]).reset_index(drop=True)
        for table, frame in frames.items()
    }


def test_compaction_leaves_one_file_per_table_and_sweep(tmp_path: Path) -> None:
    many_small_files(tmp_path, "s1")
    many_small_files(tmp_path, "s2")
    store.compact(tmp_path)
    for table in store.TABLES:
        assert [p.parent.name for p in part_files(tmp_path, table)] == [
            "sweep_id=s1",
            "sweep_id=s2",
        ]


def test_compaction_keeps_row_counts_and_contents(tmp_path: Path) -> None:
    many_small_files(tmp_path)
    before = everything(tmp_path)
    results = store.compact(tmp_path)
    assert {(r.table, r.merged, r.rows) for r in results} == {("trials", 12, 12), ("evals", 18, 54)}
    after = everything(tmp_path)
    for table in store.TABLES:
        pd.testing.assert_frame_equal(after[table], before[table])


def test_compaction_keeps_the_attempt_each_trial_reads_from(tmp_path: Path) -> None:
    many_small_files(tmp_path)
    before = store.open(tmp_path).trials()
    store.compact(tmp_path)
    pd.testing.assert_frame_equal(store.open(tmp_path).trials(), before)


def test_compacted_store_reads_the_same_in_duckdb_and_polars(tmp_path: Path) -> None:
    many_small_files(tmp_path)
    store.compact(tmp_path)
    files = f"{tmp_path}/evals/*/part-*.parquet"
    [(count, total)] = duckdb.sql(
        f"SELECT count(*), sum(objective) FROM read_parquet('{files}', hive_partitioning=true,"
        " union_by_name=true) WHERE sweep_id = 's1'"
    ).fetchall()
    expected = everything(tmp_path)["evals"]
    assert count == len(expected) == 54
    assert total == pytest.approx(expected["objective"].sum())
    frame = pl.read_parquet(part_files(tmp_path, "trials")[0], hive_partitioning=True)
    assert frame["sweep_id"].unique().to_list() == ["s1"]
    assert frame.height == 12


def test_compacted_file_names_the_files_it_replaces(tmp_path: Path) -> None:
    many_small_files(tmp_path, trials=1)
    inputs = {p.name for p in part_files(tmp_path, "evals")}
    store.compact(tmp_path)
    [merged] = part_files(tmp_path, "evals")
    metadata = pq.read_metadata(merged).metadata
    assert set(json.loads(metadata[b"ctrain.replaces"])) == inputs
    assert metadata[b"ctrain.schema_version"] == store.SCHEMA_VERSION.encode()


def test_a_compaction_killed_before_deleting_its_inputs_reads_the_same(tmp_path: Path) -> None:
    root, saved = tmp_path / "store", tmp_path / "saved"
    many_small_files(root)
    before = everything(root)
    shutil.copytree(root, saved)
    store.compact(root)
    # The state such a compactor leaves: its merged file beside all of its inputs.
    for table in store.TABLES:
        for path in part_files(saved, table):
            shutil.copy2(path, root / path.relative_to(saved))
    after = everything(root)
    for table in store.TABLES:
        pd.testing.assert_frame_equal(after[table], before[table])


def test_the_next_compaction_deletes_what_an_interrupted_one_merged(tmp_path: Path) -> None:
    root, saved = tmp_path / "store", tmp_path / "saved"
    many_small_files(root, trials=2)
    shutil.copytree(root, saved)
    store.compact(root)
    for path in part_files(saved, "evals"):
        shutil.copy2(path, root / path.relative_to(saved))
    [evals] = [r for r in store.compact(root) if r.table == "evals"]
    assert evals.leftovers == 6
    assert len(part_files(root, "evals")) == 1


def test_new_files_after_a_compaction_are_merged_by_the_next(tmp_path: Path) -> None:
    many_small_files(tmp_path, trials=2)
    store.compact(tmp_path)
    StoreWriter(tmp_path, "s1").write_evals(eval_rows("t9", "t9-a1", range(2)))
    store.compact(tmp_path)
    assert len(part_files(tmp_path, "evals")) == 1
    assert len(everything(tmp_path)["evals"]) == 2 * 9 + 6


def test_a_single_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = StoreWriter(tmp_path, "s1").write_trials([trial_row("t1", "a1")])
    [trials] = [r for r in store.compact(tmp_path) if r.table == "trials"]
    assert trials.merged == 0
    assert part_files(tmp_path, "trials") == [path]


def _corrupt_store(root: Path) -> Path:
    many_small_files(root, trials=2)
    broken = StoreWriter(root, "s1").write_evals(eval_rows("t9", "t9-a1", range(1)))
    broken.write_bytes(broken.read_bytes()[:100])
    return broken


def test_compaction_keeps_a_corrupt_file_in_place_without_the_flag(tmp_path: Path) -> None:
    broken = _corrupt_store(tmp_path)
    results = store.compact(tmp_path)
    assert [r.corrupt for r in results if r.table == "evals"] == [[broken]]
    assert broken.exists()
    with pytest.warns(StoreWarning, match=broken.name):
        assert len(store.open(tmp_path).evals(all_attempts=True)) == 18


def test_drop_corrupt_moves_a_corrupt_file_into_quarantine(tmp_path: Path) -> None:
    broken = _corrupt_store(tmp_path)
    store.compact(tmp_path, drop_corrupt=True)
    assert not broken.exists()
    assert (tmp_path / "_quarantine" / broken.relative_to(tmp_path)).is_file()
    assert len(store.open(tmp_path).evals(all_attempts=True)) == 18  # and no warning now


def test_compact_limited_to_one_sweep_leaves_the_others(tmp_path: Path) -> None:
    many_small_files(tmp_path, "s1", trials=1)
    many_small_files(tmp_path, "s2", trials=1)
    assert main(["store", "compact", str(tmp_path), "--sweep", "s2"]) == 0
    counts = {p.parent.name: 0 for p in part_files(tmp_path, "evals")}
    for p in part_files(tmp_path, "evals"):
        counts[p.parent.name] += 1
    assert counts == {"sweep_id=s1": 3, "sweep_id=s2": 1}


def test_compact_of_an_unknown_sweep_exits_2_naming_the_option(tmp_path, capsys) -> None:
    many_small_files(tmp_path, "s1", trials=1)
    assert main(["store", "compact", str(tmp_path), "--sweep", "nope"]) == 2
    assert "--sweep" in capsys.readouterr().err


# Readers racing with compaction ---------------------------------------------------------------


def _read_until_stopped(root: str, started, stop, results) -> None:
    """Reader process: every read must hold a superset of the last one's rows, each once."""
    import warnings

    warnings.simplefilter("error")  # a reader racing with compaction must not even warn
    reader, seen, reads = store.open(root), set(), 0
    try:
        while not stop.is_set():
            started.set()
            frame = reader.evals(all_attempts=True, columns=["attempt_id", "split", "step"])
            keys = set(frame.itertuples(index=False, name=None))
            if len(keys) != len(frame):
                raise AssertionError(f"read {reads}: {len(frame) - len(keys)} rows seen twice")
            if not seen <= keys:
                raise AssertionError(f"read {reads}: {len(seen - keys)} rows missing")
            seen, reads = keys, reads + 1
        results.put(("ok", reads, len(seen)))
    except BaseException as error:
        results.put(("failed", reads, repr(error)))


@pytest.mark.slow
def test_readers_racing_with_compaction_never_see_a_row_twice_or_miss_one(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_evals(eval_rows("seed", "seed-a", range(5)))
    context = multiprocessing.get_context("spawn")
    started, stop, results = context.Event(), context.Event(), context.Queue()
    reader = context.Process(
        target=_read_until_stopped, args=(str(tmp_path), started, stop, results)
    )
    reader.start()
    try:
        assert started.wait(timeout=120)
        for round_ in range(8):
            for f in range(25):
                writer.write_evals(eval_rows(f"r{round_}", f"r{round_}-f{f}", range(2)))
            store.compact(tmp_path)
        stop.set()
        outcome, reads, detail = results.get(timeout=120)
    finally:
        stop.set()
        reader.join(timeout=30)
        if reader.is_alive():
            reader.kill()
    assert outcome == "ok", detail
    assert reads >= 8
    assert len(part_files(tmp_path, "evals")) == 1
    assert len(store.open(tmp_path).evals(all_attempts=True)) == 15 + 8 * 25 * 6


def test_drop_corrupt_moves_temporary_files_of_long_dead_writers_only(tmp_path: Path) -> None:
    many_small_files(tmp_path, trials=1)
    directory = tmp_path / "evals" / "sweep_id=s1"
    dead, live = directory / ".part-dead.parquet.tmp", directory / ".part-live.parquet.tmp"
    dead.write_bytes(b"PAR1 half")
    live.write_bytes(b"PAR1 half")
    hours_ago = time.time() - 2 * store.STALE_TEMPORARY_SECONDS
    os.utime(dead, (hours_ago, hours_ago))
    store.compact(tmp_path)
    assert dead.exists()
    store.compact(tmp_path, drop_corrupt=True)
    assert not dead.exists() and live.exists()
    assert (tmp_path / "_quarantine" / dead.relative_to(tmp_path)).is_file()
