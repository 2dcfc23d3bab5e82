"""Where the store's files are, and which names a reader may see.

Layout::

    ROOT/trials/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/evals/sweep_id=<sweep_id>/part-<uuid>.parquet
    ROOT/<table>/sweep_id=<sweep_id>/.part-<uuid>.parquet.<uuid>.tmp   a file being written
    ROOT/<table>/.compaction-epoch       token a compactor renews before it deletes a file
    ROOT/.compaction.lock                 one compactor at a time (flock)
    ROOT/_quarantine/...                  corrupt files moved aside by ``compact(drop_corrupt)``

**The sweep id lives only in the path.** The directory is named ``sweep_id=<id>`` so hive
partitioning restores a ``sweep_id`` column in every reader, and file content never carries a
second copy that could disagree with it. Sweep ids are therefore restricted to characters that
need no escaping in a path (``SWEEP_ID_PATTERN``).

Readers list ``part-*.parquet`` only: a temporary file is dot-prefixed, so neither that glob nor
pyarrow's own listing (which skips dot-files) ever sees a half-written file.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from ctrain_dist.store.schema import SWEEP_ID

SWEEP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
EPOCH_FILE = ".compaction-epoch"
LOCK_FILE = ".compaction.lock"
QUARANTINE = "_quarantine"
PART_GLOB = "part-*.parquet"
TEMPORARY_GLOB = ".part-*.tmp"
"""Temporary names of part files being written (``files.write_atomically``'s, dot-prefixed)."""


def check_sweep_id(sweep_id: str) -> str:
    """Reject ids that would need escaping in a hive path, which readers decode differently."""
    if not SWEEP_ID_PATTERN.fullmatch(sweep_id):
        raise ValueError(
            f"sweep_id {sweep_id!r} must match {SWEEP_ID_PATTERN.pattern} "
            "(it names a directory that every Parquet reader must parse the same way)"
        )
    return sweep_id


def partition_directory(root: Path, table: str, sweep_id: str) -> Path:
    """The directory of one sweep's files of ``table``."""
    return root / table / f"{SWEEP_ID}={sweep_id}"


def new_part_path(directory: Path) -> Path:
    """A part file name no other writer will ever choose (uuid4)."""
    return directory / f"part-{uuid.uuid4().hex}.parquet"


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
