"""Where the store's files are, and which names a reader may see.

Layout::

    ROOT/trials/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/evals/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/<table>/sweep_id=<sweep_id>/.part-<uuid>.parquet.<uuid>.tmp   a file being written
    ROOT/<table>/.compaction-epoch       token a compactor renews before it deletes a file
    ROOT/.compaction.lock                 one compactor at a time (flock)
    ROOT/<table>/sweep_id=<sweep_id>/_part-<uuid>.attempts.json  the attempts a part holds
    ROOT/_quarantine/...                  corrupt files moved aside by ``compact(drop_corrupt)``,
                                          each with ``<name>.json``: what it held, and why
    ROOT/_locks/<sweep_id>.driver.lock    one sweep driver per sweep at a time (flock)
    ROOT/_checkpoints/<sweep_id>/<pack>.pt  mid-trial checkpoints (removed once a pack ends)

**Every part file has an attempts manifest**, written before it: the (trial, attempt, status)
triples its rows hold. It is read only when its part turns unreadable, so that the store still
knows which trials the damaged file held (a truncated Parquet file has lost its footer, and
with it every row). Names starting with ``_`` are skipped by pyarrow's listings and never
match ``part-*``.

**The sweep id lives only in the path.** The directory is named ``sweep_id=<id>`` so hive
partitioning restores a ``sweep_id`` column in every reader, and file content never carries a
second copy that could disagree with it. Sweep ids are therefore restricted to characters that
need no escaping in a path (``SWEEP_ID_PATTERN``).

Readers list ``part-*.parquet`` only: a temporary file is dot-prefixed, so neither that glob nor
pyarrow's own listing (which skips dot-files) ever sees a half-written file.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path

from ctrain_dist.errors import SpecError
from ctrain_dist.store.schema import SWEEP_ID

SWEEP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
EPOCH_FILE = ".compaction-epoch"
LOCK_FILE = ".compaction.lock"
QUARANTINE = "_quarantine"
PART_GLOB = "part-*.parquet"
RECORD_SUFFIX = ".json"
"""What ``_quarantine/<table>/sweep_id=<id>/<part>.parquet`` + this names: its record."""
LOCKS = "_locks"
CHECKPOINTS = "_checkpoints"
"""``ROOT/_checkpoints/<sweep_id>/<pack>.pt``: mid-trial checkpoints of running packs."""
TEMPORARY_GLOB = ".part-*.tmp"
"""Temporary names of part files being written (``files.write_atomically``'s, dot-prefixed)."""


def check_sweep_id(sweep_id: str, field: str = "sweep_id") -> str:
    """Reject ids that would need escaping in a hive path, which readers decode differently
    (``../x`` among them: it would name a folder outside the store). A ``SpecError`` naming
    ``field``, so the CLI exits 2 on it (it is a ``ValueError`` too)."""
    if not SWEEP_ID_PATTERN.fullmatch(sweep_id):
        raise SpecError(
            field,
            f"{sweep_id!r} must match {SWEEP_ID_PATTERN.pattern} "
            "(it names a directory that every Parquet reader must parse the same way)",
        )
    return sweep_id


def writable_root_problem(root: Path) -> str | None:
    """Why a store could not be created or written at ``root``, or None; changes nothing.

    Found by trying: the nearest existing folder must take a new (then removed) folder, which
    permission bits alone cannot tell for root or for file systems such as ``/proc``.
    """
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        inside = "" if existing == root else f" (inside {existing}, which is not a folder)"
        return f"{root} is not a folder{inside}; give the folder of a store"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ctrain-probe-", dir=existing))
    except OSError as error:
        return f"a store cannot be written at {root}: {error.strerror or error}"
    return None


def require_writable_root(root: Path, field: str) -> None:
    """``SpecError`` naming ``field`` unless a store can be written at ``root``."""
    problem = writable_root_problem(root)
    if problem:
        raise SpecError(field, problem)


def partition_directory(root: Path, table: str, sweep_id: str) -> Path:
    """The directory of one sweep's files of ``table``."""
    return root / table / f"{SWEEP_ID}={sweep_id}"


def new_part_path(directory: Path) -> Path:
    """A part file name no other writer will ever choose (uuid4)."""
    return directory / f"part-{uuid.uuid4().hex}.parquet"


def manifest_path(part: Path) -> Path:
    """The attempts manifest of a part file (see the module docstring)."""
    return part.with_name(f"_{part.stem}.attempts.json")


def driver_lock_path(root: Path, sweep_id: str) -> Path:
    """The lock a sweep driver holds while it plans and runs ``sweep_id`` in ``root``."""
    return root / LOCKS / f"{check_sweep_id(sweep_id)}.driver.lock"


def quarantine_records(root: Path, table: str, sweep_id: str | None) -> list[Path]:
    """The records of the files ``compact(drop_corrupt)`` moved out of one sweep (or all)."""
    folder = root / QUARANTINE / table
    sweep = check_sweep_id(sweep_id) if sweep_id else "*"
    return sorted(folder.glob(f"{SWEEP_ID}={sweep}/{PART_GLOB}{RECORD_SUFFIX}"))


def table_files(root: Path, table: str, sweep_id: str | None) -> list[tuple[Path, str]]:
    """(file, sweep id) of every visible part file of one sweep (or all), sorted."""
    pattern = partition_directory(root, table, check_sweep_id(sweep_id) if sweep_id else "*")
    return [
        (path, path.parent.name.split("=", 1)[1])
        for path in sorted(pattern.parent.glob(f"{pattern.name}/{PART_GLOB}"))
    ]


def temporary_files(directory: Path) -> list[Path]:
    """Files being written in a partition directory, or left by writers killed mid-write."""
    return sorted(directory.glob(TEMPORARY_GLOB))
