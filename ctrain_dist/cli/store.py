"""``ctrain store …``: list, check and compact a store, and print its schema.

``ls ROOT [--sweep ID] [--check]``   one line per sweep: trials by status, attempts,
                        evaluation rows, files, bytes; ``--check`` also reads every file whole
                        (page checksums verified) and reports corrupt, temporary and left-over
                        files, and quarantined files with the trials they held (exit 1 if any
                        file is corrupt).
``compact ROOT [--sweep ID] [--drop-corrupt]``   merge each partition's files into one, safe
                        while sweeps write and readers read; ``--drop-corrupt`` moves corrupt
                        files into ``ROOT/_quarantine`` (nothing else ever removes one).
``schema``              the Markdown of ``docs/store-schema.md``, from ``store.schema.SCHEMA``.

``cli.py`` builds this parser for every ``ctrain`` command, so ``store`` (pyarrow, pandas) is
imported inside the handlers, keeping ``ctrain``'s start fast for the others.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ctrain_dist.errors import SpecError

if TYPE_CHECKING:
    from ctrain_dist.store import Loss, Store

EXIT_FAILURE = 1


@dataclass
class SweepListing:
    """What ``ls`` says about one sweep."""

    sweep_id: str
    trials: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    eval_rows: int = 0
    files: int = 0
    bytes: int = 0
    unreadable: int = 0


@dataclass
class CheckReport:
    """Files that need a look; ``corrupt`` ones are skipped by every read."""

    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    temporary: list[Path] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    quarantined: list[Loss] = field(default_factory=list)


def _open_store(root: Path, sweep_id: str | None) -> tuple[Store, list[str]]:
    """The store and the sweeps to show; bad input raises ``SpecError`` (exit 2)."""
    from ctrain_dist import store

    if not root.is_dir():
        raise SpecError("ROOT", f"{root} is not a directory; give the folder of a store")
    reader = store.open(root)
    sweeps = reader.sweeps()
    if sweep_id is None:
        return reader, sweeps
    if sweep_id not in sweeps:
        held = ", ".join(sweeps) or "none"
        raise SpecError("--sweep", f"{root} holds no sweep {sweep_id!r} (it holds: {held})")
    return reader, [sweep_id]


def list_sweeps(reader: Store, sweeps: list[str]) -> list[SweepListing]:
    """Counts per sweep, from file footers and the attempt columns of ``trials`` only."""
    from ctrain_dist import store
    from ctrain_dist.store.schema import EVALS, STATUS

    listings = []
    for sweep in sweeps:
        listing = SweepListing(sweep)
        for table in store.TABLES:
            snapshot = reader.snapshot(table, sweep)
            listing.unreadable += len(snapshot.corrupt)
            for part in snapshot.parts:
                listing.files += 1
                listing.bytes += part.bytes
                listing.eval_rows += part.rows if table == EVALS.name else 0
        attempts = reader.attempts(sweep)
        kept = store.keep_latest_attempts(attempts)
        listing.attempts = len(attempts)
        listing.trials = len(kept)
        listing.statuses = kept[STATUS].value_counts().sort_index().to_dict()
        listings.append(listing)
    return listings


def check_store(reader: Store, sweeps: list[str]) -> CheckReport:
    """Read every visible file whole (not just its footer) and collect what needs a look."""
    import pyarrow as pa

    from ctrain_dist import store
    from ctrain_dist.store.layout import partition_directory, temporary_files
    from ctrain_dist.store.read import read_whole

    report = CheckReport()
    for sweep in sweeps:
        report.quarantined += [loss for loss in reader.losses(sweep) if loss.quarantined]
    for table in store.TABLES:
        for sweep in sweeps:
            snapshot = reader.snapshot(table, sweep)
            report.corrupt += snapshot.corrupt
            report.replaced += [part.path for part in snapshot.replaced]
            report.temporary += temporary_files(partition_directory(reader.root, table, sweep))
            for part in snapshot.parts:
                version = part.schema_version or "missing"
                report.versions[version] = report.versions.get(version, 0) + 1
                try:
                    read_whole(part.path)
                except FileNotFoundError:
                    continue  # compacted away since the snapshot: its rows live on
                except (OSError, pa.ArrowException) as error:
                    report.corrupt.append((part.path, str(error)))
    return report


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _print_listings(listings: list[SweepListing]) -> None:
    header = ("sweep", "trials", "by status", "attempts", "eval rows", "files", "size")
    rows = [
        (
            x.sweep_id,
            str(x.trials),
            ", ".join(f"{n} {status}" for status, n in x.statuses.items()) or "-",
            str(x.attempts),
            f"{x.eval_rows:,}",
            str(x.files),
            _size(x.bytes),
        )
        for x in listings
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _print_report(report: CheckReport) -> None:
    from ctrain_dist import store

    versions = ", ".join(f"{v} ({n} files)" for v, n in sorted(report.versions.items()))
    print(f"schema versions: {versions or 'no files'} (this ctrain: {store.SCHEMA_VERSION})")
    for path, reason in report.corrupt:
        print(f"corrupt (skipped by readers): {path}: {reason}")
    for path in report.temporary:
        print(f"temporary file (a writer writing now, or killed mid-write): {path}")
    for path in report.replaced:
        print(f"merged by an interrupted compaction, not yet deleted: {path}")
    for loss in report.quarantined:
        print(loss.describe())
    if report.corrupt:
        print(
            f"{len(report.corrupt)} corrupt files; `ctrain store compact ROOT --drop-corrupt` "
            "moves them into ROOT/_quarantine"
        )
    else:
        print("no corrupt files")


def _ls(args: argparse.Namespace) -> int:
    from ctrain_dist import store

    reader, sweeps = _open_store(args.root, args.sweep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", store.StoreWarning)  # reported below, once
        listings = list_sweeps(reader, sweeps)
        report = check_store(reader, sweeps) if args.check else None
    _print_listings(listings)
    if report is not None:
        _print_report(report)
        return EXIT_FAILURE if report.corrupt else 0
    unreadable = sum(x.unreadable for x in listings)
    if unreadable:
        print(f"{unreadable} unreadable files skipped; `ctrain store ls --check` lists them")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from ctrain_dist import store
    from ctrain_dist.store.layout import partition_directory

    _open_store(args.root, args.sweep)
    for result in store.compact(args.root, args.sweep, drop_corrupt=args.drop_corrupt):
        where = partition_directory(Path(), result.table, result.sweep_id)
        if result.leftovers:
            print(f"{where}: deleted {result.leftovers} files an interrupted compaction merged")
        if result.merged:
            print(f"{where}: merged {result.merged} files ({result.rows:,} rows) into one")
        for path in result.corrupt:
            print(f"{where}: corrupt, not merged: {path}")
        for path in result.quarantined:
            print(f"{where}: moved to {path}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from ctrain_dist import store

    print(store.schema_markdown(), end="")
    return 0


def add_store_parser(commands: argparse._SubParsersAction) -> None:
    """The ``store`` command and its subcommands, under ``ctrain``'s subparsers."""
    parser = commands.add_parser("store", help="list, check, compact a store; print its schema")
    actions = parser.add_subparsers(dest="store_command", required=True)

    ls = actions.add_parser("ls", help="sweeps with trials by status, attempts, rows, files")
    ls.add_argument("root", type=Path, metavar="ROOT", help="store directory")
    ls.add_argument("--sweep", help="only this sweep")
    ls.add_argument("--check", action="store_true", help="read every file; report problems")
    ls.set_defaults(handler=_ls)

    compact = actions.add_parser("compact", help="merge small files, safe while others read")
    compact.add_argument("root", type=Path, metavar="ROOT", help="store directory")
    compact.add_argument("--sweep", help="only this sweep")
    compact.add_argument(
        "--drop-corrupt",
        action="store_true",
        help="move corrupt files (and temporary files of long-dead writers) into ROOT/_quarantine",
    )
    compact.set_defaults(handler=_compact)

    schema = actions.add_parser("schema", help="print the store schema (docs/store-schema.md)")
    schema.set_defaults(handler=_schema)
