"""Specification of the analysis store: schema, atomic appends, attempts, readers, sink, ls."""

from __future__ import annotations

import ast
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from list_sink import ListSink

from ctrain_dist import store
from ctrain_dist.cli.main import main
from ctrain_dist.store import Column, StoreWarning, StoreWriter, TableSchema, schema
from ctrain_dist.store.sink import StoreSink

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def trial_row(trial_id: str, attempt_id: str, status: str = "finished", **extra) -> dict:
    """A trial-attempt row of the row contract, trimmed to what the store looks at."""
    ended = extra.pop("ended_at", T0 + timedelta(minutes=1))
    return {
        "sweep_id": "s1",
        "trial_id": trial_id,
        "attempt_id": attempt_id,
        "algorithm": "alm",
        "constrained": True,
        "config_label": "alm(lr=0.1)",
        "seed": 0,
        "status": status,
        "error": "boom" if status == "error" else None,
        "started_at": T0,
        "ended_at": ended,
        "final_test_objective": None if status == "error" else 0.5,
        **extra,
    }


def eval_row(trial_id: str, attempt_id: str, step: int, split: str = "test") -> dict:
    return {
        "sweep_id": "s1",
        "trial_id": trial_id,
        "attempt_id": attempt_id,
        "algorithm": "alm",
        "config_label": "alm(lr=0.1)",
        "seed": 0,
        "split": split,
        "step": step,
        "time_s": float(step),
        "objective": 1.0 / (step + 1),
    }


def part_files(root: Path, table: str) -> list[Path]:
    return sorted((root / table).glob("*/*.parquet"))


def test_each_write_is_one_parquet_file_under_the_sweep_partition(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1")])
    writer.write_trials([trial_row("t2", "a2")])
    files = part_files(tmp_path, "trials")
    assert len(files) == 2
    assert all(f.parent.name == "sweep_id=s1" and f.name.startswith("part-") for f in files)


def test_empty_write_creates_no_file(tmp_path: Path) -> None:
    assert StoreWriter(tmp_path, "s1").write_evals([]) is None
    assert not (tmp_path / "evals").exists()


def test_files_carry_schema_version_and_no_sweep_id_column(tmp_path: Path) -> None:
    path = StoreWriter(tmp_path, "s1").write_trials([trial_row("t1", "a1")])
    schema = pq.read_schema(path)
    assert schema.metadata[b"ctrain.schema_version"] == b"1"
    assert "sweep_id" not in schema.names


def test_writer_rejects_rows_of_another_sweep(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sweep_id"):
        StoreWriter(tmp_path, "s1").write_trials([{**trial_row("t1", "a1"), "sweep_id": "s2"}])


def test_writer_rejects_sweep_ids_that_need_escaping_in_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sweep_id"):
        StoreWriter(tmp_path, "a/b")


def test_round_trip_unifies_differing_hyperparameter_columns(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1", hp_lr=1, hp_dual_lr=0.05)])
    writer.write_trials([trial_row("t2", "a2", hp_lr=0.5, hp_schedule="cosine")])
    frame = store.open(tmp_path).trials().set_index("trial_id")
    assert frame.loc["t1", "hp_dual_lr"] == 0.05
    assert frame.loc["t2", "hp_schedule"] == "cosine"
    assert frame["hp_lr"].tolist() == [1.0, 0.5]
    assert frame.loc["t2", "hp_dual_lr"] != frame.loc["t2", "hp_dual_lr"]  # NaN: absent
    assert frame.loc["t1", "ended_at"] == T0 + timedelta(minutes=1)
    assert set(frame["sweep_id"]) == {"s1"}


def test_terminal_attempt_is_kept_over_a_later_errored_retry(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "finished-early", ended_at=T0)])
    writer.write_trials([trial_row("t1", "errored-later", "error", ended_at=T0 + timedelta(1))])
    reader = store.open(tmp_path)
    assert reader.trials()["attempt_id"].tolist() == ["finished-early"]
    assert sorted(reader.trials(all_attempts=True)["attempt_id"]) == [
        "errored-later",
        "finished-early",
    ]


def test_latest_of_several_terminal_attempts_is_kept(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "new", ended_at=T0 + timedelta(hours=1))])
    writer.write_trials([trial_row("t1", "old", ended_at=T0)])
    assert store.open(tmp_path).trials()["attempt_id"].tolist() == ["new"]


def test_evals_default_to_rows_of_kept_attempts(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "good"), trial_row("t1", "bad", "error")])
    writer.write_evals([eval_row("t1", "good", s) for s in range(3)])
    writer.write_evals([eval_row("t1", "bad", s) for s in range(5)])
    reader = store.open(tmp_path)
    assert set(reader.evals()["attempt_id"]) == {"good"}
    assert len(reader.evals(all_attempts=True)) == 8


def test_evals_push_down_columns_and_filters(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1")])
    writer.write_evals([eval_row("t1", "a1", 0, split) for split in ("train", "val", "test")])
    frame = store.open(tmp_path).evals(
        columns=["step", "objective"], filters=[("split", "=", "val")]
    )
    assert list(frame.columns) == ["step", "objective"]
    assert len(frame) == 1


def test_unknown_column_is_an_error_not_a_skipped_file(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1")])
    writer.write_evals([eval_row("t1", "a1", 0)])
    with pytest.raises(ValueError, match="no_such_column"):
        store.open(tmp_path).evals(columns=["no_such_column"])


def test_sweep_argument_restricts_reads_and_sweeps_lists_them(tmp_path: Path) -> None:
    StoreWriter(tmp_path, "s1").write_trials([trial_row("t1", "a1")])
    StoreWriter(tmp_path, "s2").write_trials([trial_row("t2", "a2", sweep_id="s2")])
    reader = store.open(tmp_path)
    assert reader.sweeps() == ["s1", "s2"]
    assert reader.trials("s2")["trial_id"].tolist() == ["t2"]
    assert reader.trials()["sweep_id"].tolist() == ["s1", "s2"]


def test_empty_or_missing_store_reads_as_empty_frames(tmp_path: Path) -> None:
    reader = store.open(tmp_path / "nowhere")
    assert reader.trials().empty
    assert reader.evals().empty
    assert reader.sweeps() == []
    assert reader.finished_trial_ids("s1") == set()


def test_truncated_file_warns_and_is_skipped_but_kept_on_disk(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1")])
    broken = writer.write_trials([trial_row("t2", "a2")])
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.warns(StoreWarning, match=broken.name):
        frame = store.open(tmp_path).trials()
    assert frame["trial_id"].tolist() == ["t1"]
    assert broken.exists()


def test_temporary_dot_files_are_ignored(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    path = writer.write_trials([trial_row("t1", "a1")])
    (path.parent / f".{path.name}.tmp").write_bytes(b"half a parquet file")
    assert store.open(tmp_path).trials()["trial_id"].tolist() == ["t1"]


def test_finished_trial_ids_are_those_whose_kept_attempt_is_terminal(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials(
        [
            trial_row("done", "a1"),
            trial_row("nan", "a2", "diverged"),
            trial_row("failed", "a3", "error"),
            trial_row("retried", "a4", "error"),
        ]
    )
    writer.write_trials([trial_row("retried", "a5")])
    assert store.open(tmp_path).finished_trial_ids("s1") == {"done", "nan", "retried"}


def _two_files_with_different_columns(root: Path) -> None:
    writer = StoreWriter(root, "s1")
    writer.write_trials([trial_row("t1", "a1", hp_lr=0.1)])
    writer.write_trials([trial_row("t2", "a2", hp_lr=1, hp_dual_lr=0.5)])


def test_duckdb_reads_the_store_with_sweep_id(tmp_path: Path) -> None:
    _two_files_with_different_columns(tmp_path)
    files = f"{tmp_path}/trials/*/part-*.parquet"
    rows = duckdb.sql(
        f"SELECT sweep_id, trial_id, hp_dual_lr FROM read_parquet('{files}',"
        " hive_partitioning=true, union_by_name=true) ORDER BY trial_id"
    ).fetchall()
    assert rows == [("s1", "t1", None), ("s1", "t2", 0.5)]


def test_polars_reads_the_store_with_sweep_id(tmp_path: Path) -> None:
    _two_files_with_different_columns(tmp_path)
    frames = [
        pl.read_parquet(path, hive_partitioning=True) for path in part_files(tmp_path, "trials")
    ]
    frame = pl.concat(frames, how="diagonal_relaxed").sort("trial_id")
    assert frame["sweep_id"].to_list() == ["s1", "s1"]
    assert frame["hp_lr"].to_list() == [0.1, 1.0]


def test_pandas_reads_a_table_directory_with_sweep_id(tmp_path: Path) -> None:
    StoreWriter(tmp_path, "s1").write_trials([trial_row("t1", "a1")])
    frame = pd.read_parquet(tmp_path / "trials")
    assert frame["sweep_id"].astype(str).tolist() == ["s1"]


# Schema and provenance ------------------------------------------------------------------------

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"


@pytest.fixture(scope="module")
def real_trial() -> ListSink:
    """One real, tiny constrained trial (seconds): the rows the trainer really writes."""
    from ctrain_dist.spec import load_spec
    from ctrain_dist.trial.loop import train

    overrides = ["seeds=1", "algorithms=[{name: ssl_alm}]", "training.budget.steps=4"]
    sink = ListSink()
    train(load_spec(QUICKSTART, [*overrides, "training.eval_every=2"]).trials()[:1], sink)
    return sink


def test_docs_store_schema_is_generated_from_the_schema_in_code() -> None:
    documented = (ROOT / "docs" / "store-schema.md").read_text()
    assert documented == store.schema_markdown(), "run: ctrain store schema > docs/store-schema.md"


def test_every_column_a_real_trial_writes_is_declared_in_the_schema(real_trial) -> None:
    assert store.undeclared_columns("trials", list(real_trial.trial_rows[0])) == []
    assert store.undeclared_columns("evals", list(real_trial.eval_rows[0])) == []


def test_every_declared_plain_column_appears_in_a_real_trial_row(real_trial) -> None:
    written = set(real_trial.trial_rows[0]) | set(real_trial.eval_rows[0])
    declared = {c.name for t in store.SCHEMA.values() for c in t.columns if not c.is_family}
    assert declared - written == set()


def test_trial_rows_carry_provenance(real_trial) -> None:
    row = real_trial.trial_rows[0]
    for name in ("git_commit", "host", "device", "python_version", "ctrain_version"):
        assert row[name]
    for package in ("torch", "ray", "pyarrow", "pandas", "numpy"):
        assert row[f"{package}_version"] not in ("", "absent")


def test_written_columns_take_their_declared_types(tmp_path: Path, real_trial) -> None:
    writer = StoreWriter(tmp_path, real_trial.trial_rows[0]["sweep_id"])
    written = {
        "trials": writer.write_trials(real_trial.trial_rows),
        "evals": writer.write_evals(real_trial.eval_rows),
    }
    for table, path in written.items():
        schema = pq.read_schema(path)
        for name in schema.names:
            declared = store.SCHEMA[table].column(name)
            assert declared.type is None or schema.field(name).type == declared.type, name


def test_undeclared_columns_names_what_the_schema_lacks() -> None:
    assert store.undeclared_columns("evals", ["step", "group_loss_3", "surprise"]) == ["surprise"]


def test_a_table_that_declares_a_column_twice_is_refused() -> None:
    twice = [Column("seed", pa.int64(), "", "first"), Column("seed", pa.int64(), "", "again")]
    with pytest.raises(ValueError, match="seed"):
        TableSchema("t", "a table", ("seed",), tuple(twice))


def test_the_name_builders_name_members_of_declared_families() -> None:
    members = {
        "trials": [
            schema.final_column(schema.TEST, schema.OBJECTIVE),
            schema.final_column(schema.VAL, schema.group_column("tpr", 1)),
            schema.hyperparameter_column("lr"),
            schema.version_column("torch"),
        ],
        "evals": [
            schema.constraint_column(0),
            schema.multiplier_column(2),
            *(schema.group_column(rate, 3) for rate in schema.GROUP_RATES),
        ],
    }
    for table, names in members.items():
        assert store.undeclared_columns(table, names) == []


# Only the schema spells a final_<split>_<metric> name: everyone else calls final_column.

PACKAGE = ROOT / "ctrain_dist"
SCHEMA_MODULE = PACKAGE / "store" / "schema.py"
FINAL_NAME = re.compile(rf"final_({'|'.join(schema.SPLITS)})(_|$)")


def hand_spelled_final_columns(source: str) -> list[int]:
    """Lines of ``source`` with a string literal that spells a ``final_<split>…`` column, or
    an f-string that builds one (``f"final_{split}_…"``) instead of calling ``final_column``."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        spelled = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if spelled and FINAL_NAME.match(node.value):
            lines.add(node.lineno)
        head = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else None
        if isinstance(head, ast.Constant) and str(head.value).startswith("final_"):
            lines.add(node.lineno)
    return sorted(lines)


def test_the_literal_finder_sees_spelled_and_built_final_names_only() -> None:
    """Control: the scan below can fail."""
    source = (
        'a = "final_test_objective"\n'
        'b = f"final_{split}_{metric}"\n'
        'c = f"final_val_group_{rate}_{g}"\n'
        "d = final_column(TEST, OBJECTIVE)\n"
        'e = "finally"\n'
    )
    assert hand_spelled_final_columns(source) == [1, 2, 3]


def test_no_module_but_the_schema_spells_a_final_column_name() -> None:
    modules = [path for path in sorted(PACKAGE.rglob("*.py")) if path != SCHEMA_MODULE]
    assert len(modules) > 1
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in modules
        for line in hand_spelled_final_columns(path.read_text())
    ]
    assert not found, "use store.schema.final_column(split, metric):\n" + "\n".join(found)


# Reading --------------------------------------------------------------------------------------


def test_trials_filters_apply_after_the_attempt_choice(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "old", ended_at=T0), trial_row("t2", "a2")])
    writer.write_trials([trial_row("t1", "new", "error", ended_at=T0 + timedelta(1))])
    reader = store.open(tmp_path)
    errors = reader.trials(filters=[("status", "=", "error")])
    assert errors.empty  # t1's kept attempt is the finished one
    kept = reader.trials(columns=["trial_id", "attempt_id"])
    assert kept.values.tolist() == [["t1", "old"], ["t2", "a2"]]


def test_an_empty_store_still_has_the_schema_columns(tmp_path: Path) -> None:
    trials = store.open(tmp_path).trials(all_attempts=True)
    assert trials.empty
    assert {"trial_id", "attempt_id", "status", "ended_at"} <= set(trials.columns)


def test_attempts_lists_every_attempt_with_the_selection_columns(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1", "error"), trial_row("t1", "a2")])
    attempts = store.open(tmp_path).attempts("s1")
    assert sorted(attempts["attempt_id"]) == ["a1", "a2"]
    assert list(attempts.columns) == ["sweep_id", "trial_id", "attempt_id", "status", "ended_at"]


# StoreSink ------------------------------------------------------------------------------------


def test_store_sink_writes_evals_before_the_trials_row(tmp_path: Path) -> None:
    (tmp_path / "trials").write_text("a file where the trials table should be")
    sink = StoreSink(tmp_path, "s1")
    sink.evals([eval_row("t1", "a1", 0)])
    assert part_files(tmp_path, "evals") == []
    with pytest.raises(OSError):
        sink.finish(trial_row("t1", "a1"))
    assert len(part_files(tmp_path, "evals")) == 1


def test_store_sink_retries_a_failed_flush_without_writing_a_row_twice(tmp_path: Path) -> None:
    (tmp_path / "trials").write_text("a file where the trials table should be")
    sink = StoreSink(tmp_path, "s1")
    sink.evals([eval_row("t1", "a1", 0)])
    with pytest.raises(OSError):
        sink.finish(trial_row("t1", "a1"))
    (tmp_path / "trials").unlink()
    sink.flush()
    reader = store.open(tmp_path)
    assert len(reader.trials()) == 1
    assert len(reader.evals()) == 1


def test_store_sink_flushes_when_flush_rows_are_waiting(tmp_path: Path) -> None:
    sink = StoreSink(tmp_path, "s1", flush_rows=3)
    sink.evals([eval_row("t1", "a1", s) for s in range(2)])
    assert part_files(tmp_path, "evals") == []
    sink.evals([eval_row("t1", "a1", 2)])
    assert len(store.open(tmp_path).evals(all_attempts=True)) == 3


def test_store_sink_makes_a_long_trial_visible_after_flush_seconds(tmp_path: Path) -> None:
    sink = StoreSink(tmp_path, "s1", flush_seconds=0.2)
    sink.evals([eval_row("t1", "a1", 0)])
    deadline = time.monotonic() + 10
    while not part_files(tmp_path, "evals") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(store.open(tmp_path).evals(all_attempts=True)) == 1
    sink.close()
    assert len(part_files(tmp_path, "evals")) == 1


def test_store_sink_as_context_manager_flushes_rows_of_an_attempt_that_raised(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError), StoreSink(tmp_path, "s1") as sink:
        sink.evals([eval_row("t1", "a1", 0)])
        raise RuntimeError("the trainer failed")
    assert len(store.open(tmp_path).evals(all_attempts=True)) == 1


# ctrain store ls / schema ---------------------------------------------------------------------


def test_store_ls_counts_trials_by_status_attempts_eval_rows_and_files(tmp_path, capsys) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1", "error"), trial_row("t1", "a2")])
    writer.write_trials([trial_row("t2", "a3", "diverged")])
    writer.write_evals([eval_row("t1", "a2", s) for s in range(4)])
    assert main(["store", "ls", str(tmp_path)]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["sweep", "trials", "by"]
    assert line.split()[:7] == ["s1", "2", "1", "diverged,", "1", "finished", "3"]
    assert line.split()[7:9] == ["4", "3"]  # eval rows, files


def test_store_ls_check_reports_a_corrupt_file_and_exits_1(tmp_path, capsys) -> None:
    writer = StoreWriter(tmp_path, "s1")
    writer.write_trials([trial_row("t1", "a1")])
    broken = writer.write_evals([eval_row("t1", "a1", 0)])
    broken.write_bytes(broken.read_bytes()[:-30])
    assert main(["store", "ls", str(tmp_path), "--check"]) == 1
    assert f"corrupt (skipped by readers): {broken}" in capsys.readouterr().out
    assert broken.exists()


def test_store_ls_of_a_missing_directory_exits_2(tmp_path, capsys) -> None:
    assert main(["store", "ls", str(tmp_path / "nowhere")]) == 2
    assert "ROOT" in capsys.readouterr().err


def test_store_schema_prints_the_documented_schema(capsys) -> None:
    assert main(["store", "schema"]) == 0
    assert capsys.readouterr().out == store.schema_markdown()
