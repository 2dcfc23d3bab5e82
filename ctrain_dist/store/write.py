"""Appending rows to the store: one new Parquet file per flush.

Invariants the rest of the package relies on:

* **Writers only add files, one per flush.** Any number of writers (sweep drivers, ``ctrain
  train``, SLURM array tasks) may share one store without locks. Each file gets a name no
  other writer chooses and is published by :func:`ctrain_dist.files.write_atomically`: written
  under a dot-prefixed temporary name in its final directory, fsynced, then renamed, so a
  reader sees a whole file or none. A writer killed mid-write leaves only a temporary file,
  which no reader reads (see :mod:`ctrain_dist.store.layout`).
* **Stable column types.** Columns of the schema are cast to their declared type (all metrics
  and numeric hyperparameters as float64), so files written by different trials, even ones
  whose metrics are all null, have compatible schemas for strict readers such as polars.
* **The sweep id is the writer's, and only in the path.** A row naming another sweep is
  refused; the column is dropped from the file (hive partitioning restores it).
* **Damage is detectable and its extent known.** Every data page carries a CRC checksum
  (readers verify it, so a flipped bit is an unreadable file, never a silently changed value),
  and every part's attempts manifest is published before the part (``layout``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ctrain_dist.files import Content, write_atomically
from ctrain_dist.store.layout import (
    check_sweep_id,
    manifest_path,
    new_part_path,
    partition_directory,
)
from ctrain_dist.store.schema import (
    ATTEMPT_ID,
    EVALS,
    REPLACES_KEY,
    SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    STATUS,
    SWEEP_ID,
    TABLE_KEY,
    TRIAL_ID,
    TRIALS,
)

WRITE_OPTIONS = {"write_page_checksum": True}
"""Options of every Parquet file the store writes (``write_table`` and ``ParquetWriter``)."""
Attempt = tuple[str, str, str | None]
"""(trial id, attempt id, status): what a manifest lists; evaluation rows have no status."""


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
        return pa.float64()
    return None


def file_metadata(table: str, replaces: list[str] | None = None) -> dict[bytes, bytes]:
    """The key-value metadata of a part file; ``replaces``: the files a compacted one merges."""
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
        if name == SWEEP_ID:
            if any(v is not None and v != sweep_id for v in values):
                raise ValueError(f"rows carry a sweep_id other than the writer's {sweep_id!r}")
            continue
        columns[name] = pa.array(values, type=_column_type(table, name, values))
    return pa.table(columns).replace_schema_metadata(file_metadata(table))


def attempts_of(rows: pa.Table) -> set[Attempt]:
    """The distinct attempts whose rows ``rows`` holds (a column it lacks reads as null)."""

    def values(name: str) -> list:
        present = name in rows.column_names
        return rows.column(name).to_pylist() if present else [None] * rows.num_rows

    return set(zip(values(TRIAL_ID), values(ATTEMPT_ID), values(STATUS), strict=True))


def publish_part(directory: Path, content: Content, attempts: set[Attempt]) -> Path:
    """A new uniquely named part file in ``directory`` holding ``content``: whole, or absent;
    its manifest of ``attempts`` is published first, so no part is ever without one."""
    path = new_part_path(directory)
    write_atomically(manifest_path(path), json.dumps(sorted(attempts, key=str)))
    return write_atomically(path, content)


class StoreWriter:
    """Appends rows of one sweep to the store; safe to use from many processes at once."""

    def __init__(self, root: Path | str, sweep_id: str) -> None:
        self.root = Path(root)
        self.sweep_id = check_sweep_id(sweep_id)

    def write_trials(self, rows: list[dict]) -> Path | None:
        """Write trial-attempt rows as one file; returns its path, or None for no rows."""
        return self._write(TRIALS.name, rows)

    def write_evals(self, rows: list[dict]) -> Path | None:
        """Write evaluation rows as one file; returns its path, or None for no rows."""
        return self._write(EVALS.name, rows)

    def _write(self, table: str, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        data = _rows_to_table(table, rows, self.sweep_id)
        directory = partition_directory(self.root, table, self.sweep_id)
        return publish_part(
            directory, lambda sink: pq.write_table(data, sink, **WRITE_OPTIONS), attempts_of(data)
        )
