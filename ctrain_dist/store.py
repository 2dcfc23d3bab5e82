"""The central analysis store: Parquet tables of trial attempts and evaluation points.

Layout::

    ROOT/trials/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/evals/sweep_id=<sweep_id>/part-<uuid>.parquet

Invariants the rest of the package relies on:

* **Append-only, one file per flush.** A writer never modifies or deletes a file, so any number
  of writers (sweep drivers, SLURM array tasks) may share one store without locks. Each file
  is written under a dot-prefixed temporary name in its final directory, fsynced, then
  ``os.replace``-d: a reader sees a whole file or none (pyarrow skips dot-prefixed names, and
  the ``part-*`` glob never matches them).
* **The sweep id lives only in the path.** The directory is named ``sweep_id=<id>`` so hive
  partitioning restores a ``sweep_id`` column in every reader, and file content never carries a
  second copy that could disagree with it. Sweep ids are therefore restricted to characters
  that need no escaping in a path (see ``SWEEP_ID_PATTERN``).
* **Stable column types.** Columns of the row contract are cast to one declared type (all
  metrics and numeric hyperparameters as float64), so files written by different trials, even
  ones whose metrics are all null, have compatible schemas for strict readers such as polars.
* **Attempts, not trials, are rows.** A retried trial adds a row; readers keep the latest
  terminal attempt of each trial (``Store.trials``), so a preempted or failed attempt never
  hides or duplicates a result.

Reading with other tools: schemas differ between files (hyperparameter columns), so ask for
the union of columns, and glob ``part-*`` so temporary files never match::

    duckdb: SELECT * FROM read_parquet('ROOT/trials/*/part-*.parquet', hive_partitioning=true,
                                       union_by_name=true, hive_types={'sweep_id': VARCHAR})
    polars: pl.concat([pl.scan_parquet(f, hive_partitioning=True) for f in files],
                      how="diagonal_relaxed")
    pandas: pd.read_parquet('ROOT/trials')  # only the columns of the first file

These see every attempt and fail on a corrupt file; ``open(root)`` keeps each trial's latest
attempt, unifies schemas and skips a corrupt file with a warning.
"""

from __future__ import annotations

import builtins
import os
import re
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = b"ctrain.schema_version"
TABLES: tuple[str, ...] = ("trials", "evals")
TERMINAL_STATUSES: frozenset[str] = frozenset({"finished", "diverged"})
SWEEP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PARTITION_KEY = "sweep_id"

_STRING, _BOOL, _INT, _FLOAT = pa.string(), pa.bool_(), pa.int64(), pa.float64()
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_SHARED_TYPES: dict[str, pa.DataType] = {
    "trial_id": _STRING,
    "attempt_id": _STRING,
    "algorithm": _STRING,
    "config_label": _STRING,
    "seed": _INT,
    "samples": _INT,
}
_EXACT_TYPES: dict[str, dict[str, pa.DataType]] = {
    "trials": {
        **_SHARED_TYPES,
        **dict.fromkeys(
            (
                "status",
                "error",
                "config_json",
                "constraint_names",
                "group_names",
                "git_commit",
                "host",
                "device",
                "python_version",
                "torch_version",
                "ray_version",
                "ctrain_version",
            ),
            _STRING,
        ),
        "constrained": _BOOL,
        "started_at": _TIMESTAMP,
        "ended_at": _TIMESTAMP,
        "wall_time_s": _FLOAT,
        "steps": _INT,
        "epochs": _FLOAT,
    },
    "evals": {
        **_SHARED_TYPES,
        "split": _STRING,
        "step": _INT,
        **dict.fromkeys(
            ("epoch", "time_s", "objective", "accuracy", "auc", "max_violation", "dp_gap"),
            _FLOAT,
        ),
    },
}
_FLOAT_PREFIXES: dict[str, tuple[str, ...]] = {
    "trials": ("final_",),
    "evals": ("constraint_", "group_loss_", "group_positive_rate_"),
}
_ATTEMPT_COLUMNS = [PARTITION_KEY, "trial_id", "attempt_id", "status", "ended_at"]


class StoreWarning(UserWarning):
    """A store file could not be read and was skipped (it is left in place for inspection)."""


def _check_sweep_id(sweep_id: str) -> str:
    """Reject ids that would need escaping in a hive path, which readers decode differently."""
    if not SWEEP_ID_PATTERN.fullmatch(sweep_id):
        raise ValueError(
            f"sweep_id {sweep_id!r} must match {SWEEP_ID_PATTERN.pattern} "
            "(it names a directory that every Parquet reader must parse the same way)"
        )
    return sweep_id


def _column_type(table: str, name: str, values: list) -> pa.DataType | None:
    """The declared type of a contract column, or None to let pyarrow infer an unknown one.

    Numeric hyperparameters are float64 because YAML turns ``1`` and ``1.0`` into different
    types, and files of the same sweep must agree on a column's type.
    """
    if name in _EXACT_TYPES[table]:
        return _EXACT_TYPES[table][name]
    if name.startswith(_FLOAT_PREFIXES[table]):
        return _FLOAT
    present = [v for v in values if v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if name.startswith("hp_") and present and numeric:
        return _FLOAT
    return None


def _rows_to_table(table: str, rows: list[dict], sweep_id: str) -> pa.Table:
    """Columns from the union of the rows' keys (first-seen order), the sweep id removed."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if name == PARTITION_KEY:
            if any(v is not None and v != sweep_id for v in values):
                raise ValueError(f"rows carry a sweep_id other than the writer's {sweep_id!r}")
            continue
        columns[name] = pa.array(values, type=_column_type(table, name, values))
    metadata = {SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode(), b"ctrain.table": table.encode()}
    return pa.table(columns).replace_schema_metadata(metadata)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable on POSIX file systems; a no-op where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomically(table: pa.Table, directory: Path) -> Path:
    """Write ``table`` as a new uniquely named file that readers see whole or not at all."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    final, temporary = directory / name, directory / f".{name}.tmp"
    try:
        with builtins.open(temporary, "wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return final


class StoreWriter:
    """Appends rows of one sweep to the store; safe to use from many processes at once."""

    def __init__(self, root: Path | str, sweep_id: str) -> None:
        self.root = Path(root)
        self.sweep_id = _check_sweep_id(sweep_id)

    def write_trials(self, rows: list[dict]) -> Path | None:
        """Write trial-attempt rows as one file; returns its path, or None for no rows."""
        return self._write("trials", rows)

    def write_evals(self, rows: list[dict]) -> Path | None:
        """Write evaluation rows as one file; returns its path, or None for no rows."""
        return self._write("evals", rows)

    def _write(self, table: str, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        directory = self.root / table / f"{PARTITION_KEY}={self.sweep_id}"
        return _write_atomically(_rows_to_table(table, rows, self.sweep_id), directory)


def _as_expression(filters: pc.Expression | list | None) -> pc.Expression | None:
    """Accept a pyarrow expression or pandas-style DNF tuples, as ``pd.read_parquet`` does."""
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    return pq.filters_to_expression(filters)


def _and(left: pc.Expression | None, right: pc.Expression | None) -> pc.Expression | None:
    if left is None:
        return right
    return left if right is None else left & right


def keep_latest_attempts(attempts: pd.DataFrame) -> pd.DataFrame:
    """One row per (sweep_id, trial_id): the attempt a result should be read from.

    A terminal attempt (finished or diverged) beats an errored one, because an error is a
    failure of the infrastructure, not an outcome of the algorithm; among equals the latest
    ``ended_at`` wins (a missing end time counts as oldest), then the larger attempt id, so
    the choice is deterministic.
    """
    if attempts.empty:
        return attempts
    ranked = attempts.assign(_terminal=attempts["status"].isin(TERMINAL_STATUSES))
    ranked = ranked.sort_values(
        ["_terminal", "ended_at", "attempt_id"], ascending=False, na_position="last"
    )
    kept = ranked.drop_duplicates([PARTITION_KEY, "trial_id"], keep="first")
    return kept.drop(columns="_terminal").sort_values([PARTITION_KEY, "trial_id"])


class Store:
    """Read access to a store directory; every call rescans it, so it sees files being added."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def sweeps(self) -> list[str]:
        """Ids of the sweeps with at least one trials or evals directory, sorted."""
        prefix = f"{PARTITION_KEY}="
        found = {
            child.name.removeprefix(prefix)
            for table in TABLES
            if (self.root / table).is_dir()
            for child in (self.root / table).iterdir()
            if child.is_dir() and child.name.startswith(prefix)
        }
        return sorted(found)

    def trials(self, sweep_id: str | None = None, all_attempts: bool = False) -> pd.DataFrame:
        """Trial rows of one sweep (or all); by default only each trial's kept attempt.

        See ``keep_latest_attempts`` for which attempt is kept. Columns absent from a file are
        null in its rows. An empty or missing store gives an empty frame.
        """
        frame = self._read("trials", sweep_id, columns=None, filters=None)
        frame = frame if all_attempts else keep_latest_attempts(frame)
        return frame.reset_index(drop=True)

    def evals(
        self,
        sweep_id: str | None = None,
        columns: list[str] | None = None,
        filters: pc.Expression | list | None = None,
        all_attempts: bool = False,
    ) -> pd.DataFrame:
        """Evaluation rows of one sweep (or all), by default only those of kept attempts.

        Args:
            sweep_id: restrict to one sweep; None reads every sweep.
            columns: columns to return (all by default); filters may use other columns.
            filters: a ``pyarrow.compute`` expression or DNF tuples such as
                ``[("split", "=", "test")]``, pushed down to the Parquet scan.
            all_attempts: keep rows of superseded attempts too (e.g. to inspect a failure).
        """
        expression = _as_expression(filters)
        if not all_attempts:
            kept = keep_latest_attempts(self._kept_columns(sweep_id))
            if kept.empty:
                return pd.DataFrame(columns=columns)
            expression = _and(expression, pc.field("attempt_id").isin(kept["attempt_id"].tolist()))
        return self._read("evals", sweep_id, columns=columns, filters=expression)

    def finished_trial_ids(self, sweep_id: str) -> set[str]:
        """Ids of trials whose kept attempt is terminal: these must never be run again."""
        kept = keep_latest_attempts(self._kept_columns(sweep_id))
        if kept.empty:
            return set()
        return set(kept.loc[kept["status"].isin(TERMINAL_STATUSES), "trial_id"])

    def _kept_columns(self, sweep_id: str | None) -> pd.DataFrame:
        """Just the columns attempt selection needs, so evals() doesn't read whole trial rows."""
        return self._read("trials", sweep_id, columns=_ATTEMPT_COLUMNS, filters=None)

    def _read(
        self,
        table: str,
        sweep_id: str | None,
        columns: list[str] | None,
        filters: pc.Expression | None,
    ) -> pd.DataFrame:
        dataset = _dataset(self._files(table, sweep_id))
        if dataset is None:
            return pd.DataFrame(columns=columns)
        # Building a scanner validates columns and filters against the unified schema, so a
        # typo raises here instead of being mistaken below for a corrupt file.
        dataset.scanner(columns=columns, filter=filters)
        pieces = [
            piece
            for fragment in dataset.get_fragments(filter=filters)
            if (piece := _read_fragment(fragment, dataset.schema, columns, filters)) is not None
        ]
        frame = pa.concat_tables(pieces).to_pandas() if pieces else pd.DataFrame(columns=columns)
        if columns is None and PARTITION_KEY in frame.columns:
            frame = frame[[PARTITION_KEY, *frame.columns.drop(PARTITION_KEY)]]
        return frame

    def _files(self, table: str, sweep_id: str | None) -> list[tuple[Path, str]]:
        """(file, sweep id) of every visible part file; temporary dot-files never match."""
        base = self.root / table
        pattern = f"{PARTITION_KEY}={_check_sweep_id(sweep_id) if sweep_id else '*'}"
        return [
            (path, path.parent.name.split("=", 1)[1])
            for path in sorted(base.glob(f"{pattern}/part-*.parquet"))
        ]


def _dataset(files: Iterable[tuple[Path, str]]) -> ds.FileSystemDataset | None:
    """A dataset over the readable files with the union of their schemas, or None if none.

    The sweep id of each file is given as its partition expression, so filters on
    ``sweep_id`` prune whole files and the column is filled in from the path.
    """
    schemas: list[pa.Schema] = []
    fragments: list[ds.ParquetFileFragment] = []
    parquet, filesystem = ds.ParquetFileFormat(), pafs.LocalFileSystem()
    for path, sweep_id in files:
        try:
            schemas.append(pq.read_schema(path))
        except (OSError, pa.ArrowException) as error:
            _warn_skipped(path, error)
            continue
        partition = pc.field(PARTITION_KEY) == sweep_id
        fragments.append(
            parquet.make_fragment(str(path), filesystem, partition_expression=partition)
        )
    if not fragments:
        return None
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    schema = schema.remove_metadata().append(pa.field(PARTITION_KEY, pa.string()))
    return ds.FileSystemDataset(fragments, schema, parquet, filesystem)


def _read_fragment(
    fragment: ds.ParquetFileFragment,
    schema: pa.Schema,
    columns: list[str] | None,
    filters: pc.Expression | None,
) -> pa.Table | None:
    """One file's rows in the unified schema, or None (with a warning) if it is corrupt."""
    scanner = ds.Scanner.from_fragment(fragment, schema=schema, columns=columns, filter=filters)
    try:
        return scanner.to_table()
    except (OSError, pa.ArrowException) as error:
        _warn_skipped(Path(fragment.path), error)
        return None


def _warn_skipped(path: Path, error: Exception) -> None:
    warnings.warn(f"skipping unreadable store file {path}: {error}", StoreWarning, stacklevel=2)


def open(root: Path | str) -> Store:
    """Open a store directory for reading; it need not exist yet (it then reads as empty)."""
    return Store(root)
