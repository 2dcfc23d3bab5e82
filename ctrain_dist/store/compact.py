"""Compaction: merge each partition's small files into one, while others write and read.

**Only :func:`compact` deletes files, and it never changes what a reader sees.** It writes the
merged file first, with the names of the files it replaces in its metadata
(``ctrain.replaces``), so readers drop those inputs while they still exist; then it renews the
table's epoch token and only then deletes the inputs (the reader's side of this protocol is in
:mod:`ctrain_dist.store.read`). A compactor killed at any point leaves a store that reads the
same, and the next compaction finishes its work.

**Corrupt files are never merged and never deleted.** They stay where they are, skipped by
readers with a warning, until ``compact(drop_corrupt=True)`` moves them into ``_quarantine``
(with temporary files whose writers have been dead for over ``STALE_TEMPORARY_SECONDS``).
Each quarantined part gets a record beside it (``<name>.json``: where it was, why, and the
attempts its manifest listed), which is how the store keeps knowing what the file held.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ctrain_dist.files import exclusive_lock, write_atomically
from ctrain_dist.store.layout import (
    EPOCH_FILE,
    LOCK_FILE,
    QUARANTINE,
    RECORD_SUFFIX,
    check_sweep_id,
    manifest_path,
    partition_directory,
    temporary_files,
)
from ctrain_dist.store.read import Part, Store, read_manifest, read_whole, unified_schema
from ctrain_dist.store.schema import TABLES
from ctrain_dist.store.write import (
    WRITE_OPTIONS,
    Attempt,
    attempts_of,
    file_metadata,
    publish_part,
)

STALE_TEMPORARY_SECONDS = 3600.0
"""A temporary file this old belongs to a dead writer (a flush takes seconds, not an hour)."""
ROW_GROUP_ROWS = 262_144
"""Rows per row group of a compacted file: large enough for fast scans, small enough to stream."""


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


def _renew_epoch(root: Path, table: str) -> None:
    """Tell readers that files are about to be deleted; must precede every deletion."""
    write_atomically(root / table / EPOCH_FILE, uuid.uuid4().hex)


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


def _merge(
    table: str, parts: list[Part], directory: Path
) -> tuple[list[Part], int, list[tuple[Path, str]]]:
    """Write the rows of ``parts`` as one new part file; returns (merged, rows, unreadable).

    Streams: at most one input file and one row group are in memory. An input whose data
    cannot be read is left out (and out of ``ctrain.replaces``, so it stays as it is).
    """
    schema = unified_schema(parts)
    merged: list[Part] = []
    unreadable: list[tuple[Path, str]] = []
    # The manifest is published before the merged file, so the readable inputs are read
    # twice: once for their attempts, once to stream their rows.
    attempts: set[Attempt] = set()
    for part in parts:
        with contextlib.suppress(OSError, pa.ArrowException):  # left out below, with reason
            attempts |= attempts_of(read_whole(part.path))

    def write(sink: BinaryIO) -> None:
        pending: list[pa.Table] = []
        with pq.ParquetWriter(sink, schema, **WRITE_OPTIONS) as writer:
            for part in parts:
                try:
                    rows = read_whole(part.path)
                except (OSError, pa.ArrowException) as error:
                    unreadable.append((part.path, str(error)))
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
            writer.add_key_value_metadata(file_metadata(table, [p.path.name for p in merged]))

    try:
        publish_part(directory, write, attempts)
    except _NothingToMerge:
        return [], 0, unreadable
    return merged, sum(p.rows for p in merged), unreadable


def _delete_part(path: Path) -> None:
    """A part file and then its manifest (a manifest without its part is never consulted)."""
    path.unlink(missing_ok=True)
    manifest_path(path).unlink(missing_ok=True)


def _quarantine(root: Path, path: Path, reason: str | None = None) -> Path:
    """Move ``path`` under ``ROOT/_quarantine``, keeping its table and partition in the path.

    A part (``reason`` given) first gets its record, so the attempts it held are never
    forgotten, even if this is interrupted; its manifest goes once the part has moved.
    """
    target = root / QUARANTINE / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    if reason is not None:
        record = {
            "file": str(path.relative_to(root)),
            "reason": reason,
            "quarantined_at": time.time(),
            "attempts": read_manifest(manifest_path(path)),
        }
        write_atomically(target.with_name(target.name + RECORD_SUFFIX), json.dumps(record))
    os.replace(path, target)
    manifest_path(path).unlink(missing_ok=True)
    return target


def _stale_temporaries(directory: Path, now: float) -> list[Path]:
    """Temporary files untouched for ``STALE_TEMPORARY_SECONDS``: their writers are dead."""
    stale = []
    for path in temporary_files(directory):
        with contextlib.suppress(FileNotFoundError):  # renamed by its writer meanwhile
            if now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                stale.append(path)
    return stale


def _compact_partition(root: Path, table: str, sweep_id: str, drop_corrupt: bool) -> Compaction:
    directory = partition_directory(root, table, sweep_id)
    result = Compaction(table, sweep_id)
    snapshot = Store(root).snapshot(table, sweep_id)
    if snapshot.replaced:
        _renew_epoch(root, table)
        for part in snapshot.replaced:
            _delete_part(part.path)
        result.leftovers = len(snapshot.replaced)
    corrupt = list(snapshot.corrupt)
    if len(snapshot.parts) > 1:
        by_age = sorted(snapshot.parts, key=lambda p: (p.path.stat().st_mtime_ns, p.path.name))
        merged, result.rows, unreadable = _merge(table, by_age, directory)
        corrupt += unreadable
        if merged:
            _renew_epoch(root, table)
            for part in merged:
                _delete_part(part.path)
            result.merged = len(merged)
    elif drop_corrupt:
        corrupt += _unreadable_data(snapshot.parts)
    result.corrupt = [path for path, _ in corrupt]
    if drop_corrupt:
        result.quarantined = [_quarantine(root, path, reason) for path, reason in corrupt]
        stale = _stale_temporaries(directory, time.time())
        result.quarantined += [_quarantine(root, path) for path in stale]
    return result


def _unreadable_data(parts: list[Part]) -> list[tuple[Path, str]]:
    """Parts whose footer reads but whose data does not (``_merge`` finds these itself)."""
    unreadable = []
    for part in parts:
        try:
            read_whole(part.path)
        except (OSError, pa.ArrowException) as error:
            unreadable.append((part.path, str(error)))
    return unreadable


def compact(
    root: Path | str, sweep_id: str | None = None, *, drop_corrupt: bool = False
) -> list[Compaction]:
    """Merge the part files of each (table, sweep) partition into one, while readers read.

    Safe against concurrent writers (their new files are simply not merged this time) and
    readers (see the module docstring). Corrupt files are never merged or deleted; with
    ``drop_corrupt`` they, and temporary files of writers dead for over
    ``STALE_TEMPORARY_SECONDS``, are moved into ``ROOT/_quarantine``.
    """
    root = Path(root)
    sweeps = [check_sweep_id(sweep_id)] if sweep_id else Store(root).sweeps()
    results = []
    # One compactor per store: two could merge overlapping inputs and duplicate their rows.
    with exclusive_lock(root / LOCK_FILE):
        for table in TABLES:
            for sweep in sweeps:
                if partition_directory(root, table, sweep).is_dir():
                    results.append(_compact_partition(root, table, sweep, drop_corrupt))
    return results
