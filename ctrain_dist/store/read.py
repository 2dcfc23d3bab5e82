"""Reading the store: each trial's chosen attempt, unified schemas, exact during compaction.

Invariants the rest of the package relies on:

* **Attempts, not trials, are rows.** A retry, requeue or resume adds a row with a new
  ``attempt_id``; readers keep one attempt per trial (:func:`keep_latest_attempts`) unless
  asked for all, so a preempted or failed attempt never hides or duplicates a result.
* **Compaction never changes what a reader sees.** A compacted file names the files whose rows
  it holds in its metadata (``ctrain.replaces``); a reader drops every file that another file
  it sees replaces, so the inputs and the merged file may coexist. Before deleting anything the
  compactor renews the table's epoch token; a reader takes the token before listing and after
  reading, and reads again if it changed or a listed file vanished. Directory listings are not
  atomic (a file renamed in while another is deleted may be missed by both halves of a
  listing), and this is what makes a read exact anyway: if no deletion happened between the
  two tokens, every file that existed when the listing began is in it.
* **Corrupt files are reported, never fatal and never deleted.** A file that cannot be read
  (disk or copy damage; writers cannot produce one; page checksums are verified, so a flipped
  bit is one) is skipped with a :class:`StoreWarning` and left in place until
  ``compact(drop_corrupt=True)`` moves it into ``_quarantine``.
* **A damaged file is never mistaken for trials not run.** :meth:`Store.losses` lists every
  unreadable or quarantined file with the attempts its manifest says it held; planners refuse
  to run while a file is unreadable, and count the finished trials of a quarantined file as
  finished (:meth:`Store.finished_trial_ids`), so they are neither re-run nor forgotten.

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

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ctrain_dist.store.layout import (
    EPOCH_FILE,
    RECORD_SUFFIX,
    manifest_path,
    quarantine_records,
    table_files,
)
from ctrain_dist.store.schema import (
    ATTEMPT_ID,
    ENDED_AT,
    EVALS,
    REPLACES_KEY,
    SCHEMA,
    SCHEMA_VERSION_KEY,
    STATUS,
    SWEEP_ID,
    TABLES,
    TERMINAL_STATUSES,
    TRIAL_ID,
    TRIALS,
)

READ_ATTEMPTS = 50
"""Reads retried this often while compactions keep deleting files, then ``StoreBusyError``."""
ATTEMPT_COLUMNS: list[str] = [SWEEP_ID, TRIAL_ID, ATTEMPT_ID, STATUS, ENDED_AT]
"""What choosing each trial's attempt needs: a cheap read of ``trials``."""

Result = TypeVar("Result")
_VERIFIED = ds.ParquetFragmentScanOptions(page_checksum_verification=True)


class StoreWarning(UserWarning):
    """A store file could not be read and was skipped (it is left in place for inspection)."""


class StoreBusyError(RuntimeError):
    """Compactions deleted files under every one of ``READ_ATTEMPTS`` reads."""


def keep_latest_attempts(attempts: pd.DataFrame) -> pd.DataFrame:
    """One row per (sweep_id, trial_id): the attempt a result should be read from.

    A terminal attempt (finished or diverged) beats an errored one, because an error is a
    failure of the infrastructure, not an outcome of the algorithm; among equals the latest
    ``ended_at`` wins (a missing end time counts as oldest), then the larger attempt id, so
    the choice is deterministic.
    """
    if attempts.empty:
        return attempts
    ranked = attempts.assign(_terminal=attempts[STATUS].isin(TERMINAL_STATUSES))
    ranked = ranked.sort_values(
        ["_terminal", ENDED_AT, ATTEMPT_ID], ascending=False, na_position="last"
    )
    kept = ranked.drop_duplicates([SWEEP_ID, TRIAL_ID], keep="first")
    return kept.drop(columns="_terminal").sort_values([SWEEP_ID, TRIAL_ID])


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


def read_whole(path: Path) -> pa.Table:
    """Every row of one part file, page checksums verified (raises if it is damaged)."""
    return pq.read_table(path, page_checksum_verification=True)


@dataclass(frozen=True)
class Loss:
    """A part file whose rows no reader counts: unreadable where it is, or quarantined.

    ``attempts``: the (trial id, attempt id, status) its manifest lists, None where no manifest
    was found (a file written before manifests existed).
    """

    table: str
    sweep_id: str
    path: Path
    reason: str
    quarantined: bool
    attempts: tuple[tuple[str, str, str | None], ...] | None

    @property
    def trial_ids(self) -> list[str] | None:
        return None if self.attempts is None else sorted({a[0] for a in self.attempts})

    def describe(self) -> str:
        """One line: the file, why it does not count, and the trials it held."""
        where = "quarantined as" if self.quarantined else "unreadable:"
        ids = self.trial_ids
        held = "which trials it held is unknown" if ids is None else f"lacks {', '.join(ids)}"
        return f"{self.table} file {where} {self.path} ({self.reason}); {held}"


def read_manifest(path: Path) -> tuple[tuple[str, str, str | None], ...] | None:
    """The attempts a manifest lists, or None if it is missing or unreadable."""
    try:
        return tuple(tuple(item) for item in json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _quarantined(root: Path, table: str, sweep_id: str | None) -> list[Loss]:
    losses = []
    for record_path in quarantine_records(root, table, sweep_id):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        attempts = record.get("attempts")
        losses.append(
            Loss(
                table=table,
                sweep_id=record_path.parent.name.split("=", 1)[1],
                path=record_path.with_name(record_path.name.removesuffix(RECORD_SUFFIX)),
                reason=record.get("reason", f"record {record_path} unreadable"),
                quarantined=True,
                attempts=None if attempts is None else tuple(tuple(a) for a in attempts),
            )
        )
    return losses


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


def _read_epoch(root: Path, table: str) -> str:
    try:
        return (root / table / EPOCH_FILE).read_text()
    except FileNotFoundError:
        return ""


def _consistent(root: Path, table: str, read: Callable[[], Result]) -> Result:
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


def unified_schema(parts: list[Part]) -> pa.Schema:
    """The union of the parts' columns, each with a type every part's values fit."""
    return pa.unify_schemas([p.schema for p in parts], promote_options="permissive")


def _dataset(parts: list[Part]) -> ds.FileSystemDataset | None:
    """A dataset over ``parts`` with the union of their schemas, or None if there are none.

    The sweep id of each file is given as its partition expression, so filters on
    ``sweep_id`` prune whole files and the column is filled in from the path.
    """
    if not parts:
        return None
    parquet = ds.ParquetFileFormat(default_fragment_scan_options=_VERIFIED)
    filesystem = pafs.LocalFileSystem()
    fragments = [
        parquet.make_fragment(
            str(part.path),
            filesystem,
            partition_expression=pc.field(SWEEP_ID) == part.sweep_id,
        )
        for part in parts
    ]
    schema = unified_schema(parts).append(pa.field(SWEEP_ID, pa.string()))
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


def _as_expression(filters: pc.Expression | list | None) -> pc.Expression | None:
    """Accept a pyarrow expression or pandas-style DNF tuples, as ``pd.read_parquet`` does."""
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    return pq.filters_to_expression(filters)


def _and(left: pc.Expression | None, right: pc.Expression | None) -> pc.Expression | None:
    if left is None:
        return right
    return left if right is None else left & right


def _empty(table: str, columns: list[str] | None) -> pd.DataFrame:
    """No rows, with the requested columns (or every plain column of the schema)."""
    names = columns or [c.name for c in SCHEMA[table].columns if not c.is_family]
    return pd.DataFrame(columns=names)


class Store:
    """Read access to a store directory; every call rescans it, so it sees files being added."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def sweeps(self) -> list[str]:
        """Ids of the sweeps with at least one trials or evals directory, sorted."""
        prefix = f"{SWEEP_ID}="
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
        frame = self._read_kept(TRIALS.name, sweep_id, columns, filters, all_attempts)
        order = [c for c in (SWEEP_ID, TRIAL_ID, ENDED_AT) if c in frame.columns]
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
        return self._read_kept(EVALS.name, sweep_id, columns, filters, all_attempts)

    def attempts(self, sweep_id: str | None = None) -> pd.DataFrame:
        """Every attempt, with just the columns attempt selection needs (cheap to read)."""
        return self._read(TRIALS.name, sweep_id, ATTEMPT_COLUMNS, None)

    def finished_trial_ids(self, sweep_id: str) -> set[str]:
        """Ids of trials whose kept attempt is terminal: these must never be run again.

        Trials that a quarantined ``trials`` file recorded as terminal count too: their rows
        are lost, not unrun (see :meth:`losses`).
        """
        kept = keep_latest_attempts(self.attempts(sweep_id))
        lost = {
            attempt[0]
            for loss in _quarantined(self.root, TRIALS.name, sweep_id)
            for attempt in loss.attempts or ()
            if attempt[2] in TERMINAL_STATUSES
        }
        if kept.empty:
            return lost
        return lost | set(kept.loc[kept[STATUS].isin(TERMINAL_STATUSES), TRIAL_ID])

    def losses(self, sweep_id: str | None = None) -> list[Loss]:
        """Every part file whose rows no read counts, with the attempts it held.

        Unreadable files are those whose footer, or (``trials``) whose attempt columns, cannot
        be read, so that every file planning relies on is checked; ``ls --check`` reads the
        rest whole. Quarantined files come from their records in ``ROOT/_quarantine``.
        """
        losses = []
        for table in TABLES:
            if table == TRIALS.name:
                _, unreadable = self._read_checked(table, sweep_id, ATTEMPT_COLUMNS, None)
            else:
                unreadable = self.snapshot(table, sweep_id).corrupt
            for path, reason in unreadable:
                sweep = path.parent.name.split("=", 1)[1]
                attempts = read_manifest(manifest_path(path))
                losses.append(Loss(table, sweep, path, reason, False, attempts))
            losses += _quarantined(self.root, table, sweep_id)
        return losses

    def snapshot(self, table: str, sweep_id: str | None = None) -> Snapshot:
        """The files of ``table`` that count right now (for listings, checks and compaction)."""
        return _consistent(
            self.root, table, lambda: _snapshot(table_files(self.root, table, sweep_id))
        )

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
            expression = _and(expression, pc.field(ATTEMPT_ID).isin(kept[ATTEMPT_ID].tolist()))
        return self._read(table, sweep_id, columns, expression)

    def _read(
        self,
        table: str,
        sweep_id: str | None,
        columns: list[str] | None,
        filters: pc.Expression | None,
    ) -> pd.DataFrame:
        frame, corrupt = self._read_checked(table, sweep_id, columns, filters)
        _warn_skipped(corrupt)
        return frame

    def _read_checked(
        self,
        table: str,
        sweep_id: str | None,
        columns: list[str] | None,
        filters: pc.Expression | None,
    ) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
        """The rows, and the files skipped as unreadable (with the reason)."""

        def read() -> tuple[pa.Table | None, list[tuple[Path, str]]]:
            snapshot = _snapshot(table_files(self.root, table, sweep_id))
            dataset = _dataset(snapshot.parts)
            if dataset is None:
                return None, snapshot.corrupt
            rows, unreadable = _scan(dataset, columns, filters)
            return rows, snapshot.corrupt + unreadable

        rows, corrupt = _consistent(self.root, table, read)
        if rows is None:
            return _empty(table, columns), corrupt
        frame = rows.to_pandas()
        if columns is None and SWEEP_ID in frame.columns:
            frame = frame[[SWEEP_ID, *frame.columns.drop(SWEEP_ID)]]
        return frame, corrupt


def open(root: Path | str) -> Store:
    """Open a store directory for reading; it need not exist yet (it then reads as empty)."""
    return Store(root)
