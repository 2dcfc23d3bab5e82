"""``ctrain data …``: prepare a spec's dataset into the cache, list the cache, write synthetic ACS.

Every command reads ``--cache DIR`` (default ``$CTRAIN_CACHE``, else ``~/.cache/ctrain-dist``).
Heavy imports happen inside the handlers so that ``ctrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ctrain_dist.cli.arguments import add_spec_arguments
from ctrain_dist.errors import SpecError


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    """The ``data`` command and its subcommands, added to the ``ctrain`` parser."""
    data = commands.add_parser("data", help="prepare, list and synthesise datasets")
    subcommands = data.add_subparsers(dest="data_command", required=True)

    prepare = subcommands.add_parser("prepare", help="build a spec's dataset into the cache")
    add_spec_arguments(prepare, "data.root=/data/pums")
    prepare.add_argument("--cache", type=Path, help="cache folder")
    prepare.set_defaults(handler=_prepare)

    listing = subcommands.add_parser("ls", help="list the cache's datasets")
    listing.add_argument("--cache", type=Path, help="cache folder")
    listing.set_defaults(handler=_list)

    synth = subcommands.add_parser("synth", help="write synthetic ACS PUMS person files")
    synth.add_argument("--root", type=Path, required=True, help="PUMS root to write into")
    synth.add_argument("--states", nargs="+", required=True, metavar="ST", help="e.g. OK CA")
    synth.add_argument("--rows", type=int, required=True, help="people per state")
    synth.add_argument("--year", type=int, default=2018)
    synth.add_argument("--horizon", choices=("1-Year", "5-Year"), default="1-Year")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth)


def _prepare(args: argparse.Namespace) -> int:
    from ctrain_dist.data.load import prepare_data
    from ctrain_dist.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    entry = prepare_data(spec.data, spec.split, args.cache)
    manifest = entry.manifest
    groups = ", ".join(
        f"{name} {rows:,}"
        for name, rows in zip(manifest["group_names"], manifest["group_rows"], strict=True)
    )
    action = "built" if entry.built else "already cached"
    print(
        f"{entry.key}: {manifest['name']}, {manifest['rows']:,} rows, "
        f"{manifest['num_features']} features, groups {groups}; {action} in "
        f"{entry.seconds:.2f} s, {entry.size_bytes() / 2**20:.1f} MiB at {entry.path}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from ctrain_dist.data.cache import cache_root, list_entries

    entries = list_entries(args.cache)
    if not entries:
        print(f"no datasets cached in {cache_root(args.cache)}")
        return 0
    print(f"{len(entries)} datasets cached in {cache_root(args.cache)}")
    for entry in entries:
        manifest = entry.manifest
        print(
            f"{entry.key}  {entry.size_bytes() / 2**20:8.1f} MiB  {manifest['rows']:>10,} rows  "
            f"{manifest['num_features']:>5} features  {len(manifest['group_names'])} groups  "
            f"{manifest['created']}  {manifest['name']}"
        )
    return 0


def _synth(args: argparse.Namespace) -> int:
    from ctrain_dist.data.synth import write_synthetic

    started = time.perf_counter()
    try:
        files = write_synthetic(
            args.root, args.states, args.rows, args.year, args.horizon, args.seed
        )
    except ValueError as error:
        raise SpecError("ctrain data synth", str(error)) from None
    print(
        f"wrote {len(files)} synthetic person files ({args.rows:,} people each) under "
        f"{args.root / str(args.year) / args.horizon} in {time.perf_counter() - started:.1f} s"
    )
    return 0
