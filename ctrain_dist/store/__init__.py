"""The central analysis store: Parquet tables of trial attempts and evaluation points.

Layout::

    ROOT/trials/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/evals/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/<table>/.compaction-epoch       token a compactor renews before it deletes a file
    ROOT/.compaction.lock                 one compactor at a time (flock)
    ROOT/_quarantine/...                  corrupt files moved aside by ``compact(drop_corrupt)``

The columns, their types, keys and units are declared once, in :data:`SCHEMA`;
``docs/store-schema.md`` is generated from it (``ctrain store schema``).

Invariants the rest of the package relies on:

* **Writers only add files, one per flush.** Any number of writers (sweep drivers, ``ctrain
  train``, SLURM array tasks) may share one store without locks. Each file is written under a
  dot-prefixed temporary name in its final directory, fsynced, then ``os.replace``-d: a reader
  sees a whole file or none (pyarrow skips dot-prefixed names, and the ``part-*`` glob never
  matches them). A writer killed mid-write leaves only a temporary file, which no reader reads.
* **The sweep id lives only in the path.** The directory is named ``sweep_id=<id>`` so hive
  partitioning restores a ``sweep_id`` column in every reader, and file content never carries a
  second copy that could disagree with it. Sweep ids are therefore restricted to characters
  that need no escaping in a path (see ``SWEEP_ID_PATTERN``).
* **Stable column types.** Columns of the schema are cast to their declared type (all metrics
  and numeric hyperparameters as float64), so files written by different trials, even ones
  whose metrics are all null, have compatible schemas for strict readers such as polars.
* **Attempts, not trials, are rows.** A retry, requeue or resume adds a row with a new
  ``attempt_id``; readers keep one attempt per trial (``keep_latest_attempts``) unless asked
  for all, so a preempted or failed attempt never hides or duplicates a result.
* **Compaction never changes what a reader sees.** Only :func:`compact` deletes files. It
  writes the merged file first, with the names of the files it replaces in its metadata
  (``ctrain.replaces``); a reader drops every file that another file it sees replaces, so the
  inputs and the merged file may coexist. Before deleting anything the compactor renews the
  table's epoch token; a reader takes the token before listing and after reading, and reads
  again if it changed or a listed file vanished. Directory listings are not atomic (a file
  renamed in while another is deleted may be missed by both halves of a listing), and this is
  what makes a read exact anyway: if no deletion happened between the two tokens, every file
  that existed when the listing began is in it.
* **Corrupt files are reported, never fatal and never deleted.** A file that cannot be read
  (disk or copy damage; writers cannot produce one) is skipped with a :class:`StoreWarning`
  and left in place until ``compact(drop_corrupt=True)`` moves it into ``_quarantine``.

Reading with other tools: schemas differ between files (hyperparameter columns), so ask for
the union of columns, and glob ``part-*`` so temporary files never match::

    duckdb: SELECT * FROM read_parquet('ROOT/trials/*/part-*.parquet', hive_partitioning=true,
                                       union_by_name=true, hive_types={'sweep_id': VARCHAR})
    polars: pl.concat([pl.scan_parquet(f, hive_partitioning=True) for f in files],
                      how="diagonal_relaxed")
    pandas: pd.read_parquet('ROOT/trials')  # only the columns of the first file

These see every attempt, fail on a corrupt file, and see rows twice for the moment a
compaction takes between writing its merged file and deleting its inputs; ``open(root)`` keeps
each trial's chosen attempt, unifies schemas, skips a corrupt file with a warning and is exact
during compaction.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ctrain_dist.files import exclusive_lock

SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = b"ctrain.schema_version"
TABLE_KEY = b"ctrain.table"
REPLACES_KEY = b"ctrain.replaces"
TABLES: tuple[str, ...] = ("trials", "evals")
TERMINAL_STATUSES: frozenset[str] = frozenset({"finished", "diverged"})
SWEEP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PARTITION_KEY = "sweep_id"
EPOCH_FILE = ".compaction-epoch"
LOCK_FILE = ".compaction.lock"
QUARANTINE = "_quarantine"
READ_ATTEMPTS = 50
"""Reads retried this often while compactions keep deleting files, then ``StoreBusyError``."""
STALE_TEMPORARY_SECONDS = 3600.0
"""A temporary file this old belongs to a dead writer (a flush takes seconds, not an hour)."""
ROW_GROUP_ROWS = 262_144
"""Rows per row group of a compacted file: large enough for fast scans, small enough to stream."""

_STRING, _BOOL, _INT, _FLOAT = pa.string(), pa.bool_(), pa.int64(), pa.float64()
_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One column of a table, or a family of columns when ``name`` holds a ``<placeholder>``.

    ``type`` None means the type follows the values (only for ``hp_<name>``: float64 when every
    value is numeric, else what pyarrow infers).
    """

    name: str
    type: pa.DataType | None
    unit: str
    description: str

    @property
    def is_family(self) -> bool:
        return "<" in self.name

    @property
    def prefix(self) -> str:
        return self.name.split("<", 1)[0]

    def matches(self, name: str) -> bool:
        if self.is_family:
            return name.startswith(self.prefix) and len(name) > len(self.prefix)
        return name == self.name


@dataclass(frozen=True)
class TableSchema:
    """A table's meaning, its key (unique across the store) and its columns."""

    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        """The declaration ``name`` falls under (exact names before families), or None."""
        exact = [c for c in self.columns if not c.is_family and c.matches(name)]
        families = [c for c in self.columns if c.is_family and c.matches(name)]
        found = exact or sorted(families, key=lambda c: -len(c.prefix))
        return found[0] if found else None


def _identity_columns(row: str) -> tuple[Column, ...]:
    return (
        Column(
            PARTITION_KEY,
            _STRING,
            "",
            "The sweep (the spec's `name`). Held by the directory `sweep_id=<id>`, not stored "
            "in files; every hive-partitioning reader restores it.",
        ),
        Column(
            "trial_id",
            _STRING,
            "",
            "`<algorithm>-s<seed>-<12 hex>`: a hash of the trial's whole configuration without "
            "the sweep id, stable across runs and machines; what resume matches on.",
        ),
        Column(
            "attempt_id",
            _STRING,
            "",
            f"32 hex digits (uuid4), new for every attempt of the trial: {row}.",
        ),
        Column("algorithm", _STRING, "", "Algorithm name (`ctrain algorithms`)."),
        Column(
            "config_label",
            _STRING,
            "",
            "The configuration without the seed, e.g. `ssl_alm(lr=0.05, rho=1)`: what results "
            "are grouped by across seeds.",
        ),
        Column("seed", _INT, "", "Seed of the trial: model initialisation and minibatch order."),
    )


_FLOAT_METRICS = ("objective", "accuracy", "auc", "max_violation", "dp_gap")

TRIALS = TableSchema(
    name="trials",
    description=(
        "One row per attempt of a trial: a Ray retry, a SLURM requeue or a resume from a "
        "checkpoint is a new attempt with a new `attempt_id`. Readers keep one attempt per "
        "trial by default: a terminal one (`finished`, `diverged`) over an `error`, then the "
        "latest `ended_at`, then the larger `attempt_id`."
    ),
    key=(PARTITION_KEY, "trial_id", "attempt_id"),
    columns=(
        *_identity_columns("a retry, requeue or resume is a new attempt"),
        Column("constrained", _BOOL, "", "Whether the algorithm enforces the constraints."),
        Column(
            "status",
            _STRING,
            "",
            "`finished` (budget spent), `diverged` (non-finite loss at an evaluation point) or "
            "`error` (the attempt raised; see `error`).",
        ),
        Column(
            "error",
            _STRING,
            "",
            "Traceback tail (at most 4,000 characters); null unless `status` is `error`.",
        ),
        Column("config_json", _STRING, "JSON", "The whole trial configuration (sorted keys)."),
        Column(
            "hp_<name>",
            None,
            "",
            "One column per hyperparameter of the algorithm; float64 when numeric.",
        ),
        Column("started_at", _TIMESTAMP, "UTC", "When the attempt started."),
        Column("ended_at", _TIMESTAMP, "UTC", "When the attempt ended (or was recorded)."),
        Column(
            "wall_time_s",
            _FLOAT,
            "s",
            "`ended_at − started_at`: data loading and evaluation included.",
        ),
        Column("steps", _INT, "steps", "Algorithm steps taken."),
        Column("samples", _INT, "examples", "Training examples drawn (every oracle call)."),
        Column("epochs", _FLOAT, "epochs", "`samples` / rows of the train split."),
        Column("train_time_s", _FLOAT, "s", "Training time, evaluation excluded."),
        Column("workers", _INT, "processes", "Data-parallel ranks that trained the attempt."),
        Column(
            "packed_with",
            _STRING,
            "JSON",
            "Trial ids of the pack this seed trained in, itself included; null for a seed "
            "that trained alone.",
        ),
        Column(
            "dataset",
            _STRING,
            "",
            "The data the attempt trained on: `adult`, `<task> <states> <year> <horizon>` for "
            "Folktables (marked when synthetic), `table:<file>` for a user table.",
        ),
        Column(
            "packed_with",
            _STRING,
            "JSON",
            "List of the `trial_id`s of the seeds trained together with this one as one batched "
            "computation (`seeds_per_trial`), itself included; null when it trained alone.",
        ),
        Column(
            "constraint_names",
            _STRING,
            "JSON",
            "List of constraint names, in the order of `constraint_<i>`.",
        ),
        Column("group_names", _STRING, "JSON", "List of group names, in the order of `<g>`."),
        Column(
            "final_<split>_<metric>",
            _FLOAT,
            "as in evals",
            "The last evaluation of the attempt: every metric column of `evals` (`objective`, "
            "`accuracy`, `constraint_0`, …) for each split (`train`, `val`, `test`).",
        ),
        Column(
            "device",
            _STRING,
            "",
            "Torch device of rank 0, e.g. `cpu`, `cuda:0`; empty on "
            "an error row written by the driver.",
        ),
        Column("host", _STRING, "", "Host name of the process that built the row."),
        Column("git_commit", _STRING, "", "Commit of the ctrain-dist checkout, or `unknown`."),
        Column("ctrain_version", _STRING, "", "ctrain-dist version."),
        Column("python_version", _STRING, "", "Python version."),
        *(
            Column(
                f"{package}_version", _STRING, "", f"{package} version (`absent` if not installed)."
            )
            for package in ("torch", "ray", "pyarrow", "pandas", "numpy")
        ),
    ),
)

EVALS = TableSchema(
    name="evals",
    description=(
        "One row per evaluation point and split of an attempt: its whole curve. Points are "
        "taken at step 0, every `eval_every` steps and at the end; a resumed attempt re-emits "
        "the points before its checkpoint under its own `attempt_id`. Readers return the rows "
        "of the attempts that `trials` keeps unless asked for all."
    ),
    key=(PARTITION_KEY, "attempt_id", "split", "step"),
    columns=(
        *_identity_columns("the attempt whose curve this row is a point of"),
        Column("split", _STRING, "", "`train`, `val` or `test`."),
        Column("step", _INT, "steps", "Algorithm steps taken so far."),
        Column("samples", _INT, "examples", "Training examples drawn so far."),
        Column("epoch", _FLOAT, "epochs", "`samples` / rows of the train split."),
        Column("time_s", _FLOAT, "s", "Training time so far, evaluation excluded."),
        Column("objective", _FLOAT, "nats", "Mean binary cross-entropy on the split."),
        Column("accuracy", _FLOAT, "fraction", "Share of rows classified right (logit > 0)."),
        Column("auc", _FLOAT, "fraction", "ROC AUC; NaN when the split holds one class."),
        Column(
            "max_violation",
            _FLOAT,
            "as constraints",
            "`max(0, max_i constraint_i)`: 0 exactly when the split is feasible.",
        ),
        Column("dp_gap", _FLOAT, "fraction", "Largest minus smallest group positive rate."),
        Column("auc_m", _FLOAT, "fraction", "Mean over groups of the per-group ROC AUC."),
        Column(
            "ind",
            _FLOAT,
            "fraction",
            "Independence: `|PR_a − PR_b|` of the worst pair of "
            "groups (PR: positive prediction rate).",
        ),
        Column(
            "sp",
            _FLOAT,
            "fraction",
            "Separation: `|TPR_a − TPR_b| + |FPR_a − FPR_b|`, worst pair of groups.",
        ),
        Column("ina", _FLOAT, "fraction", "Inaccuracy: `1 − accuracy`."),
        Column(
            "sf",
            _FLOAT,
            "fraction",
            "Sufficiency: `|PPV_a − PPV_b| + |NPV_a − NPV_b|`, worst pair of groups.",
        ),
        Column(
            "wd",
            _FLOAT,
            "probability",
            "Wasserstein-1 distance between two groups' "
            "distributions of predicted probability, worst pair.",
        ),
        Column(
            "loss_gap",
            _FLOAT,
            "nats",
            "`|L_a − L_b|`, L a group's mean binary cross-entropy, worst pair.",
        ),
        Column(
            "constraint_<i>",
            _FLOAT,
            "as the constraint",
            "Strict value of constraint i with its bound folded in (feasible when ≤ 0); names "
            "in `trials.constraint_names`.",
        ),
        Column("group_loss_<g>", _FLOAT, "nats", "Mean binary cross-entropy of group g."),
        Column(
            "group_positive_rate_<g>",
            _FLOAT,
            "fraction",
            "Share of group g predicted positive; NaN if the split has no member of g.",
        ),
        *(
            Column(
                f"group_{rate}_<g>",
                _FLOAT,
                "fraction",
                f"{text} of group g; NaN where undefined (no member, no positive, …).",
            )
            for rate, text in (
                ("tpr", "True positive rate"),
                ("fpr", "False positive rate"),
                ("ppv", "Positive predictive value"),
                ("npv", "Negative predictive value"),
                ("auc", "ROC AUC"),
            )
        ),
        Column(
            "multiplier_<i>",
            _FLOAT,
            "",
            "Dual variable of constraint i (absent for algorithms without duals).",
        ),
    ),
)

SCHEMA: dict[str, TableSchema] = {TRIALS.name: TRIALS, EVALS.name: EVALS}
"""The single definition of the store's columns; writers cast to it, the docs render it."""

_ATTEMPT_COLUMNS = [PARTITION_KEY, "trial_id", "attempt_id", "status", "ended_at"]


class StoreWarning(UserWarning):
    """A store file could not be read and was skipped (it is left in place for inspection)."""


class StoreBusyError(RuntimeError):
    """Compactions deleted files under every one of ``READ_ATTEMPTS`` reads."""


def undeclared_columns(table: str, names: list[str]) -> list[str]:
    """The names among ``names`` that :data:`SCHEMA` does not declare for ``table``."""
    return [name for name in names if SCHEMA[table].column(name) is None]


def _type_text(column: Column) -> str:
    if column.type is None:
        return "double if numeric, else inferred"
    return str(column.type)


def schema_markdown() -> str:
    """``docs/store-schema.md``: the tables of :data:`SCHEMA` and the file conventions."""
    lines = [
        "# Store schema",
        "",
        "Generated from `ctrain_dist.store.SCHEMA` by `ctrain store schema`; a test fails when",
        "the two differ. Schema version "
        f"{SCHEMA_VERSION} (`{SCHEMA_VERSION_KEY.decode()}` in every file's metadata).",
        "",
        "## Files",
        "",
        "- `ROOT/<table>/sweep_id=<id>/part-<uuid>.parquet`: one file per writer flush, written",
        "  under a dot-prefixed temporary name and renamed, so a reader sees a whole file or none.",
        "- File metadata: `ctrain.schema_version`, `ctrain.table`, and in a file written by",
        "  `ctrain store compact` also `ctrain.replaces` (JSON list of the file names it merged;",
        "  readers drop those files while they still exist).",
        "- `<placeholder>` in a column name stands for a family of columns; a family's members",
        "  depend on the sweep (hyperparameters, number of constraints and groups), so files may",
        "  hold different sets of them: read with the union of columns.",
        "- Timestamps are UTC with microsecond precision; floats are IEEE double; NaN is a",
        "  value (e.g. AUC of a one-class split), null means absent.",
    ]
    for table in SCHEMA.values():
        lines += [
            "",
            f"## `{table.name}`",
            "",
            table.description,
            "",
            "Key (unique): " + ", ".join(f"`{name}`" for name in table.key) + ".",
            "",
            "| column | type | unit | meaning |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{c.name}` | {_type_text(c)} | {c.unit or '-'} | {c.description} |"
            for c in table.columns
        ]
    return "\n".join(lines) + "\n"


def _check_sweep_id(sweep_id: str) -> str:
    """Reject ids that would need escaping in a hive path, which readers decode differently."""
    if not SWEEP_ID_PATTERN.fullmatch(sweep_id):
        raise ValueError(
            f"sweep_id {sweep_id!r} must match {SWEEP_ID_PATTERN.pattern} "
            "(it names a directory that every Parquet reader must parse the same way)"
        )
    return sweep_id


def _column_type(table: str, name: str, values: list) -> pa.DataType | None:
    """The declared type of a schema column, or None to let pyarrow infer an unknown one.

    Numeric hyperparameters are float64 because YAML turns ``1`` and ``1.0`` into different
    types, and files of the same sweep must agree on a column's type.
    """
    column = SCHEMA[table].column(name)
    if column is not None and column.type is not None:
        return column.type
    present = [v for v in values if v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if column is not None and present and numeric:
        return _FLOAT
    return None


def _file_metadata(table: str, replaces: list[str] | None = None) -> dict[bytes, bytes]:
    metadata = {SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode(), TABLE_KEY: table.encode()}
    if replaces:
        metadata[REPLACES_KEY] = json.dumps(sorted(replaces)).encode()
    return metadata


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
    return pa.table(columns).replace_schema_metadata(_file_metadata(table))


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


def _publish(directory: Path, write: Callable[[BinaryIO], None]) -> Path:
    """A new uniquely named part file holding what ``write`` wrote: whole, or not visible."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    final, temporary = directory / name, directory / f".{name}.tmp"
    try:
        with builtins.open(temporary, "wb") as sink:
            write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return final


def _partition_directory(root: Path, table: str, sweep_id: str) -> Path:
    return root / table / f"{PARTITION_KEY}={sweep_id}"


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
        data = _rows_to_table(table, rows, self.sweep_id)
        directory = _partition_directory(self.root, table, self.sweep_id)
        return _publish(directory, lambda sink: pq.write_table(data, sink))


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


@dataclass(frozen=True)
class Part:
    """A visible part file and what its footer says (read without touching its data)."""

    path: Path
    sweep_id: str
    rows: int
    bytes: int
    schema: pa.Schema
    metadata: dict[bytes, bytes]

    @property
    def replaces(self) -> frozenset[str]:
        """Names of files (in the same directory) whose rows this compacted file holds."""
        return frozenset(json.loads(self.metadata.get(REPLACES_KEY, b"[]")))

    @property
    def schema_version(self) -> str:
        return self.metadata.get(SCHEMA_VERSION_KEY, b"").decode()


class _Vanished(Exception):
    """A listed file disappeared: a compaction deleted it, so the read starts over."""


def _open_part(path: Path, sweep_id: str) -> Part:
    """The footer of ``path``; raises ``_Vanished`` if gone, OSError/ArrowException if corrupt."""
    try:
        footer = pq.read_metadata(path)
        size = path.stat().st_size
    except (OSError, pa.ArrowException):
        if not path.exists():
            raise _Vanished(path) from None
        raise
    return Part(
        path=path,
        sweep_id=sweep_id,
        rows=footer.num_rows,
        bytes=size,
        schema=footer.schema.to_arrow_schema().remove_metadata(),
        metadata=dict(footer.metadata or {}),
    )


@dataclass
class Snapshot:
    """The part files of one table as a reader must see them at one moment.

    ``parts`` are the files whose rows count; ``replaced`` are files a compacted file in
    ``parts`` already holds (left over until the compactor deletes them); ``corrupt`` are files
    whose footer cannot be read, with the reason.
    """

    parts: list[Part] = field(default_factory=list)
    replaced: list[Part] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)


def _snapshot(files: list[tuple[Path, str]]) -> Snapshot:
    snapshot, opened = Snapshot(), []
    for path, sweep_id in files:
        try:
            opened.append(_open_part(path, sweep_id))
        except (OSError, pa.ArrowException) as error:
            snapshot.corrupt.append((path, str(error)))
    replaced = {(p.path.parent, name) for p in opened for name in p.replaces}
    for part in opened:
        gone = (part.path.parent, part.path.name) in replaced
        (snapshot.replaced if gone else snapshot.parts).append(part)
    return snapshot


def _table_files(root: Path, table: str, sweep_id: str | None) -> list[tuple[Path, str]]:
    """(file, sweep id) of every visible part file; temporary dot-files never match."""
    pattern = f"{PARTITION_KEY}={_check_sweep_id(sweep_id) if sweep_id else '*'}"
    return [
        (path, path.parent.name.split("=", 1)[1])
        for path in sorted((root / table).glob(f"{pattern}/part-*.parquet"))
    ]


def _read_epoch(root: Path, table: str) -> str:
    try:
        return (root / table / EPOCH_FILE).read_text()
    except FileNotFoundError:
        return ""


def _consistent(root: Path, table: str, read: Callable[[], object]) -> object:
    """``read()`` retried until no compaction deleted a file while it ran (see module doc)."""
    for attempt in range(READ_ATTEMPTS):
        before = _read_epoch(root, table)
        try:
            result = read()
        except _Vanished:
            time.sleep(0.01 * attempt)
            continue
        if _read_epoch(root, table) == before:
            return result
    raise StoreBusyError(
        f"{root / table}: compactions kept deleting files during {READ_ATTEMPTS} reads"
    )


def _dataset(parts: list[Part]) -> ds.FileSystemDataset | None:
    """A dataset over ``parts`` with the union of their schemas, or None if there are none.

    The sweep id of each file is given as its partition expression, so filters on
    ``sweep_id`` prune whole files and the column is filled in from the path.
    """
    if not parts:
        return None
    parquet, filesystem = ds.ParquetFileFormat(), pafs.LocalFileSystem()
    fragments = [
        parquet.make_fragment(
            str(part.path),
            filesystem,
            partition_expression=pc.field(PARTITION_KEY) == part.sweep_id,
        )
        for part in parts
    ]
    schema = pa.unify_schemas([p.schema for p in parts], promote_options="permissive")
    schema = schema.append(pa.field(PARTITION_KEY, pa.string()))
    return ds.FileSystemDataset(fragments, schema, parquet, filesystem)


def _scan(
    dataset: ds.FileSystemDataset, columns: list[str] | None, filters: pc.Expression | None
) -> tuple[pa.Table, list[tuple[Path, str]]]:
    """All matching rows, and the files whose data turned out unreadable (skipped).

    One multi-threaded scan of the whole dataset is the fast path; only when it fails is each
    file read alone, to tell a vanished file (read again) from a corrupt one (skipped).
    """
    # Building a scanner validates columns and filters against the unified schema, so a
    # typo raises here instead of being mistaken below for a corrupt file.
    scanner = dataset.scanner(columns=columns, filter=filters)
    try:
        return scanner.to_table(), []
    except (OSError, pa.ArrowException):
        pass
    pieces, corrupt = [], []
    for fragment in dataset.get_fragments(filter=filters):
        path = Path(fragment.path)
        one = ds.Scanner.from_fragment(
            fragment, schema=dataset.schema, columns=columns, filter=filters
        )
        try:
            pieces.append(one.to_table())
        except (OSError, pa.ArrowException) as error:
            if not path.exists():
                raise _Vanished(path) from None
            corrupt.append((path, str(error)))
    empty = scanner.projected_schema.empty_table()
    return pa.concat_tables([empty, *pieces]), corrupt


def _warn_skipped(corrupt: list[tuple[Path, str]]) -> None:
    for path, reason in corrupt:
        warnings.warn(
            f"skipping unreadable store file {path}: {reason}", StoreWarning, stacklevel=4
        )


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

    def trials(
        self,
        sweep_id: str | None = None,
        columns: list[str] | None = None,
        filters: pc.Expression | list | None = None,
        all_attempts: bool = False,
    ) -> pd.DataFrame:
        """Trial rows of one sweep (or all); by default only each trial's kept attempt.

        See ``keep_latest_attempts`` for which attempt is kept; ``filters`` apply after that
        choice (a filter on ``status`` does not bring back a superseded attempt). Columns absent
        from a file are null in its rows. An empty or missing store gives an empty frame.
        Arguments as for :meth:`evals`; rows are sorted by sweep, trial and end time.
        """
        frame = self._read_kept("trials", sweep_id, columns, filters, all_attempts)
        order = [c for c in (PARTITION_KEY, "trial_id", "ended_at") if c in frame.columns]
        if order and len(frame):
            frame = frame.sort_values(order, na_position="first", kind="stable")
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
        return self._read_kept("evals", sweep_id, columns, filters, all_attempts)

    def attempts(self, sweep_id: str | None = None) -> pd.DataFrame:
        """Every attempt, with just the columns attempt selection needs (cheap to read)."""
        return self._read("trials", sweep_id, _ATTEMPT_COLUMNS, None)

    def finished_trial_ids(self, sweep_id: str) -> set[str]:
        """Ids of trials whose kept attempt is terminal: these must never be run again."""
        kept = keep_latest_attempts(self.attempts(sweep_id))
        if kept.empty:
            return set()
        return set(kept.loc[kept["status"].isin(TERMINAL_STATUSES), "trial_id"])

    def snapshot(self, table: str, sweep_id: str | None = None) -> Snapshot:
        """The files of ``table`` that count right now (for listings and checks)."""
        return _consistent(self.root, table, lambda: _snapshot(self._files(table, sweep_id)))

    def _files(self, table: str, sweep_id: str | None) -> list[tuple[Path, str]]:
        return _table_files(self.root, table, sweep_id)

    def _read_kept(
        self,
        table: str,
        sweep_id: str | None,
        columns: list[str] | None,
        filters: pc.Expression | list | None,
        all_attempts: bool,
    ) -> pd.DataFrame:
        expression = _as_expression(filters)
        if not all_attempts:
            kept = keep_latest_attempts(self.attempts(sweep_id))
            if kept.empty:
                return _empty(table, columns)
            expression = _and(expression, pc.field("attempt_id").isin(kept["attempt_id"].tolist()))
        return self._read(table, sweep_id, columns, expression)

    def _read(
        self,
        table: str,
        sweep_id: str | None,
        columns: list[str] | None,
        filters: pc.Expression | None,
    ) -> pd.DataFrame:
        def read() -> tuple[pa.Table | None, list[tuple[Path, str]]]:
            snapshot = _snapshot(self._files(table, sweep_id))
            dataset = _dataset(snapshot.parts)
            if dataset is None:
                return None, snapshot.corrupt
            rows, unreadable = _scan(dataset, columns, filters)
            return rows, snapshot.corrupt + unreadable

        rows, corrupt = _consistent(self.root, table, read)
        _warn_skipped(corrupt)
        if rows is None:
            return _empty(table, columns)
        frame = rows.to_pandas()
        if columns is None and PARTITION_KEY in frame.columns:
            frame = frame[[PARTITION_KEY, *frame.columns.drop(PARTITION_KEY)]]
        return frame


def _empty(table: str, columns: list[str] | None) -> pd.DataFrame:
    """No rows, with the requested columns (or every plain column of the schema)."""
    names = columns or [c.name for c in SCHEMA[table].columns if not c.is_family]
    return pd.DataFrame(columns=names)


def open(root: Path | str) -> Store:
    """Open a store directory for reading; it need not exist yet (it then reads as empty)."""
    return Store(root)


# Compaction ----------------------------------------------------------------------------------


@dataclass
class Compaction:
    """What :func:`compact` did to one (table, sweep) partition."""

    table: str
    sweep_id: str
    merged: int = 0
    """Files merged into one new file (0: nothing to merge)."""
    rows: int = 0
    """Rows of the merged file."""
    leftovers: int = 0
    """Files an interrupted earlier compaction had merged but not yet deleted."""
    corrupt: list[Path] = field(default_factory=list)
    """Unreadable files, left in place (or quarantined with ``drop_corrupt``)."""
    quarantined: list[Path] = field(default_factory=list)
    """Where ``drop_corrupt`` moved corrupt and stale temporary files."""


@contextlib.contextmanager
def _compaction_lock(root: Path) -> Iterator[None]:
    """One compactor per store: two could merge overlapping inputs and duplicate their rows.

    An ``flock`` dies with its process, so a killed compactor never blocks the next one.
    """
    with exclusive_lock(root / LOCK_FILE):
        yield


def _renew_epoch(root: Path, table: str) -> None:
    """Tell readers that files are about to be deleted; must precede every deletion."""
    path = root / table / EPOCH_FILE
    temporary = path.with_name(f"{EPOCH_FILE}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(uuid.uuid4().hex)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in its order; absent columns null."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class _NothingToMerge(Exception):
    """Fewer than two inputs were readable: publishing a merged file would gain nothing."""


def _merge(table: str, parts: list[Part], directory: Path) -> tuple[list[Part], int, list[Part]]:
    """Write the rows of ``parts`` as one new part file; returns (merged, rows, unreadable).

    Streams: at most one input file and one row group are in memory. An input whose data
    cannot be read is left out (and out of ``ctrain.replaces``, so it stays as it is).
    """
    schema = pa.unify_schemas([p.schema for p in parts], promote_options="permissive")
    merged: list[Part] = []
    unreadable: list[Part] = []
    total = 0

    def write(sink: BinaryIO) -> None:
        nonlocal total
        pending: list[pa.Table] = []
        with pq.ParquetWriter(sink, schema) as writer:
            for part in parts:
                try:
                    rows = pq.read_table(part.path)
                except (OSError, pa.ArrowException):
                    unreadable.append(part)
                    continue
                pending.append(_conform(rows, schema))
                merged.append(part)
                if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    pending = []
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            if len(merged) < 2:
                raise _NothingToMerge
            total = sum(p.rows for p in merged)
            writer.add_key_value_metadata(_file_metadata(table, [p.path.name for p in merged]))

    try:
        _publish(directory, write)
    except _NothingToMerge:
        return [], 0, unreadable
    return merged, total, unreadable


def _quarantine(root: Path, path: Path) -> Path:
    """Move ``path`` under ``ROOT/_quarantine``, keeping its table and partition in the path."""
    target = root / QUARANTINE / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def _stale_temporaries(directory: Path, now: float) -> list[Path]:
    """Temporary files untouched for ``STALE_TEMPORARY_SECONDS``: their writers are dead."""
    stale = []
    for path in directory.glob(".part-*.tmp"):
        with contextlib.suppress(FileNotFoundError):  # renamed by its writer meanwhile
            if now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                stale.append(path)
    return stale


def _compact_partition(root: Path, table: str, sweep_id: str, drop_corrupt: bool) -> Compaction:
    directory = _partition_directory(root, table, sweep_id)
    result = Compaction(table, sweep_id)
    snapshot = Store(root).snapshot(table, sweep_id)
    if snapshot.replaced:
        _renew_epoch(root, table)
        for part in snapshot.replaced:
            part.path.unlink(missing_ok=True)
        result.leftovers = len(snapshot.replaced)
    corrupt = [path for path, _ in snapshot.corrupt]
    if len(snapshot.parts) > 1:
        by_age = sorted(snapshot.parts, key=lambda p: (p.path.stat().st_mtime_ns, p.path.name))
        merged, result.rows, unreadable = _merge(table, by_age, directory)
        corrupt += [p.path for p in unreadable]
        if merged:
            _renew_epoch(root, table)
            for part in merged:
                part.path.unlink()
            result.merged = len(merged)
    result.corrupt = corrupt
    if drop_corrupt:
        doomed = corrupt + _stale_temporaries(directory, time.time())
        result.quarantined = [_quarantine(root, path) for path in doomed]
    return result


def compact(
    root: Path | str, sweep_id: str | None = None, *, drop_corrupt: bool = False
) -> list[Compaction]:
    """Merge the part files of each (table, sweep) partition into one, while readers read.

    Safe against concurrent writers (their new files are simply not merged this time) and
    readers (see the module docstring); a compactor killed at any point leaves a store that
    reads the same, and the next compaction finishes its work. Corrupt files are never
    merged or deleted; with ``drop_corrupt`` they, and temporary files of writers dead for
    over ``STALE_TEMPORARY_SECONDS``, are moved into ``ROOT/_quarantine``.
    """
    root = Path(root)
    store = Store(root)
    sweeps = [_check_sweep_id(sweep_id)] if sweep_id else store.sweeps()
    results = []
    with _compaction_lock(root):
        for table in TABLES:
            for sweep in sweeps:
                if _partition_directory(root, table, sweep).is_dir():
                    results.append(_compact_partition(root, table, sweep, drop_corrupt))
    return results
